//! Opening an HBONE stream through the client pool, [`Pool::connect`], as
//! ztunnel does for every outbound connection, to a server on loopback:
//!
//! - `cold`: no connection to reuse (one stream per connection): TCP
//!   connect, mutual TLS handshake with ECDSA P-256 certificates, HTTP/2
//!   handshake, then the CONNECT round trip.
//! - `pooled`: a new CONNECT stream on an open connection: one round trip.
//!
//! Connection set-up latency is added to every new connection a meshed
//! application makes; the gap between the two is what pooling saves.
//!
//! [`Pool::connect`]: mesh_hbone::Pool::connect

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use mesh_hbone::H2Config;

mod support;

fn connect(c: &mut Criterion) {
    let rt = support::runtime();
    let one_stream_each = H2Config {
        max_streams_per_connection: 1,
        ..H2Config::default()
    };
    let cold = rt.block_on(support::start(one_stream_each));
    let pooled = rt.block_on(support::start(H2Config::default()));

    // Once: each kind of stream reaches the server and carries bytes.
    for client in [&cold, &pooled] {
        rt.block_on(async {
            let mut stream = client.connect().await;
            stream.write_all(Bytes::from_static(b"ping")).await.unwrap();
            let echoed = stream.read_chunk().await.unwrap();
            assert_eq!(echoed.as_deref(), Some(&b"ping"[..]));
        });
    }
    assert_eq!(
        cold.pool.pooled_connections(),
        0,
        "cold streams never share"
    );
    assert_eq!(
        pooled.pool.pooled_connections(),
        1,
        "pooled streams share one"
    );

    let mut group = c.benchmark_group("hbone_connect");
    // Each stream is dropped (reset) at the end of its iteration; a cold
    // one takes its connection with it.
    group.bench_function("cold", |b| b.to_async(&rt).iter(|| cold.connect()));
    group.bench_function("pooled", |b| b.to_async(&rt).iter(|| pooled.connect()));
    group.finish();
    assert_eq!(pooled.pool.pooled_connections(), 1, "still one connection");
}

criterion_group!(benches, connect);
criterion_main!(benches);

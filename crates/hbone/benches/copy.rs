//! The copy loop, [`copy_bidirectional`], as ztunnel's outbound side runs it:
//! between an application's TCP socket and a pooled HBONE stream (mutual
//! TLS, HTTP/2) to a server on loopback that echoes every byte back.
//!
//! Every byte of meshed traffic passes through this loop on each node, so
//! its cost per byte bounds the mesh's throughput. One iteration writes a
//! message into the application's socket and reads its echo: the loop
//! carries it once in each direction. Throughput is per direction.

use std::net::Ipv4Addr;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mesh_hbone::H2Config;
use mesh_hbone::copy::copy_bidirectional;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;

/// Writes `message` and reads as many bytes back into `echoed`, concurrently
/// (a large message would otherwise fill the socket buffers both ways).
async fn round_trip(app: &mut TcpStream, message: &[u8], echoed: &mut [u8]) {
    let (mut rx, mut tx) = app.split();
    let (sent, received) = tokio::join!(tx.write_all(message), rx.read_exact(echoed));
    sent.expect("write to the proxied socket");
    received.expect("read the echo");
}

fn copy(c: &mut Criterion) {
    let rt = support::runtime();
    let (mut app, copying) = rt.block_on(async {
        let client = support::start(H2Config::default()).await;
        let stream = client.connect().await;
        // The application's socket, and ztunnel's end of it.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let app = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (proxied, _) = listener.accept().await.unwrap();
        // The stream keeps its pooled connection open; the pool can go.
        let copying = tokio::spawn(async move { copy_bidirectional(&proxied, stream).await });
        (app, copying)
    });

    let mut group = c.benchmark_group("copy_bidirectional");
    for (label, size) in [("16KiB", 16 << 10), ("1MiB", 1 << 20)] {
        let message: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut echoed = vec![0; size];
        rt.block_on(round_trip(&mut app, &message, &mut echoed));
        assert_eq!(echoed, message, "the echo comes back intact");

        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            // `iter_custom`: each iteration borrows the one socket mutably.
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        round_trip(&mut app, &message, &mut echoed).await;
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();

    // Half-close: the loop ends both directions and counts what it moved.
    let moved = rt.block_on(async {
        app.shutdown().await.unwrap();
        let mut rest = Vec::new();
        app.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing was left unread");
        copying.await.unwrap().expect("copy loop ends cleanly")
    });
    assert!(
        moved.to_tunnel > 0 && moved.to_tunnel == moved.from_tunnel,
        "{moved:?}"
    );
}

criterion_group!(benches, copy);
criterion_main!(benches);

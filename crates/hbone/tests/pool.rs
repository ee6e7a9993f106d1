//! The client pool against a real HBONE server (TLS, HTTP/2, sockets on
//! loopback), counted from the kernel's side.

// The benches' echo server and CA, as ztunnel wires them.
#[allow(dead_code)]
#[path = "../benches/support.rs"]
mod echo;

use std::net::SocketAddr;

use mesh_hbone::H2Config;

/// Established TCP connections whose local end is `server` (the server's
/// side of each), as `ss -t state established sport = :port` counts them.
fn established_at(server: SocketAddr) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{:04X}", server.port());
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let mut fields = l.split_whitespace();
            let (local_addr, state) = (fields.nth(1), fields.nth(1));
            local_addr.is_some_and(|a| a.ends_with(&local)) && state == Some("01")
        })
        .count()
}

/// reliability.md H5, the client's side: a pool asked for more streams
/// than one connection may carry opens a second connection instead of
/// pushing past the limit, and every stream works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_past_its_stream_limit_opens_a_second_connection() {
    let config = H2Config::default();
    let per_connection = config.max_streams_per_connection;
    assert!(per_connection < config.server_max_concurrent_streams as usize);
    let client = echo::start(config).await;
    let server = client.key.dst;

    let wanted = per_connection + per_connection / 2;
    let mut streams = Vec::new();
    for _ in 0..wanted {
        streams.push(client.connect().await);
    }
    assert_eq!(
        established_at(server),
        2,
        "connections for {wanted} streams"
    );
    // Every stream is live, on either connection.
    for (i, stream) in streams.iter_mut().enumerate() {
        let line = bytes::Bytes::from(format!("stream {i}\n"));
        stream.write_all(line.clone()).await.unwrap();
        let echoed = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_chunk())
            .await
            .expect("an echo within 5 s")
            .unwrap()
            .unwrap();
        assert_eq!(echoed, line);
    }
    // The full one has left the pool (its streams carry on); the second
    // takes the next streams.
    assert_eq!(client.pool.pooled_connections(), 1);
}

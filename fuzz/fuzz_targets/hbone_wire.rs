//! Raw bytes from an HBONE client, after TLS: the HTTP/2 client preface is
//! prepended and the rest is parsed as frames by `mesh_hbone::server::serve`,
//! whose handler answers each stream as ztunnel does before policy
//! (`connect_target`: reject with its status, or accept).
//!
//! Input: one control byte, then frames. Bit 0 of the control byte starts a
//! graceful shutdown (GOAWAY) after `control >> 1` milliseconds.
//!
//! Runs on a current-thread runtime with a paused clock: timers (the
//! keepalive PING every 10 s, its 20 s timeout) fire as soon as nothing else
//! can run, so they cost no real time.
//!
//! Properties: every accepted stream targets the local IP on a non-proxy
//! port; and the connection is over well within the keepalive's bound once
//! the client has sent everything and closed its side.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::Duration;

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use mesh_hbone::H2Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use ztunnel::proxy::PROXY_PORTS;
use ztunnel::proxy::inbound::connect::connect_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
/// In paused time. Past the keepalive's interval plus its timeout, after
/// which a silent peer is dropped anyway.
const BOUND: Duration = Duration::from_secs(120);

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, frames)) = data.split_first() else {
        return;
    };
    let config = H2Config::default();
    runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let send = async move {
            // The server may end the connection first: then writes fail.
            let _ = to_server.write_all(PREFACE).await;
            let _ = to_server.write_all(frames).await;
            let _ = to_server.shutdown().await;
        };
        let drain = async move {
            let mut sink = Vec::new();
            let _ = from_server.read_to_end(&mut sink).await;
        };
        let shutdown = async move {
            if control & 1 == 1 {
                tokio::time::sleep(Duration::from_millis(u64::from(control >> 1))).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let serve = mesh_hbone::server::serve(server, &config, shutdown, |connect| {
            match connect_target(connect.method(), connect.authority(), LOCAL) {
                Ok(target) => {
                    assert_eq!(target.ip(), LOCAL);
                    assert!(!PROXY_PORTS.contains(&target.port()), "{target}");
                    // Dropping the stream resets it; the tunnel itself is
                    // the copy loop's business, not this harness's.
                    let _ = connect.accept(HeaderMap::new());
                }
                Err(refusal) => connect.reject(refusal.status()),
            }
        });
        let finished =
            tokio::time::timeout(BOUND, async { tokio::join!(serve, send, drain) }).await;
        assert!(
            finished.is_ok(),
            "the connection outlived its closed peer by {BOUND:?}"
        );
    });
});

//! The checks ztunnel applies to an inbound HBONE CONNECT before policy
//! (`ztunnel::proxy::inbound::connect::connect_target`).
//!
//! Input: up to three lines, `METHOD\nAUTHORITY\nLOCAL IP`. A missing second
//! line is a request without `:authority`. A third line that is not an IP
//! means "the IP of the authority, if it has one" (so the accepting path is
//! reached often), else 10.0.0.5.
//!
//! Property: an accepted target is exactly the `ip:port` the client asked
//! for, has the local IP and is not one of the proxy's own ports; a refusal
//! is answered 400 or 503.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use ztunnel::proxy::PROXY_PORTS;
use ztunnel::proxy::inbound::connect::connect_target;

const DEFAULT_LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(3, |b| *b == b'\n');
    let Ok(method) = Method::from_bytes(lines.next().unwrap_or_default()) else {
        return;
    };
    let authority = match lines.next().map(std::str::from_utf8) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => return,
    };
    let asked: Option<SocketAddr> = authority.and_then(|a| a.parse().ok());
    let local = lines
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.parse::<IpAddr>().ok())
        .or(asked.map(|a| a.ip()))
        .unwrap_or(DEFAULT_LOCAL);

    match connect_target(&method, authority, local) {
        Ok(target) => {
            assert_eq!(method, Method::CONNECT);
            assert_eq!(asked, Some(target), "the target is what was asked for");
            assert_eq!(target.ip(), local, "accepted a target on another IP");
            assert!(
                !PROXY_PORTS.contains(&target.port()),
                "accepted a proxy port: {target}"
            );
        }
        Err(refusal) => {
            let status = refusal.status();
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::SERVICE_UNAVAILABLE,
                "{refusal}: {status}"
            );
            assert!(!refusal.to_string().is_empty());
        }
    }
});

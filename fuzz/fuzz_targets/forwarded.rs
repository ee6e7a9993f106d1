//! `mesh_hbone::headers::forwarded_host`, the `host=` of a `forwarded`
//! header.
//!
//! Properties: the host returned is a non-empty slice of the input that
//! holds no `;` or `,` (it cannot spill into another parameter or
//! element); and any host without those separators, surrounding quotes or
//! surrounding whitespace survives `forwarded()` → `forwarded_host()`
//! unchanged.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use mesh_hbone::headers::{forwarded, forwarded_host};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(host) = forwarded_host(value) {
        let start = host.as_ptr() as usize - value.as_ptr() as usize;
        assert!(
            start + host.len() <= value.len() && &value[start..start + host.len()] == host,
            "not a slice of the input"
        );
        assert!(!host.is_empty());
        assert!(!host.contains([';', ',']), "{host:?}");
    }

    let host = value;
    let plain = !host.is_empty()
        && !host.contains([';', ','])
        && !host.starts_with(|c: char| c == '"' || c.is_whitespace())
        && !host.ends_with(|c: char| c == '"' || c.is_whitespace());
    if plain {
        let client: SocketAddr = "[fd00::1]:41000".parse().unwrap();
        let header = forwarded(client, Some(host));
        assert_eq!(forwarded_host(&header), Some(host), "{header:?}");
    }
});

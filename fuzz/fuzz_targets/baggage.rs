//! `mesh_hbone::headers::Baggage::parse`, and `encode` of what it read.
//!
//! `encode` leaves out every field that is absent or empty, and the
//! workload name with its type only when both are there (parsing sets
//! both or neither). So the property is, for `b = parse(input)`:
//!
//! `parse(b.encode()) == kept(b)`, where `kept` turns empty strings into
//! `None` and drops `workload_type` when `workload_name` is empty; and
//! encoding that again gives the same text. Moreover, when the input is a
//! valid HTTP header value, so is the encoding (we re-send what we read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_hbone::headers::Baggage;

fn non_empty(v: &Option<String>) -> Option<String> {
    v.clone().filter(|s| !s.is_empty())
}

/// What `encode` keeps of `b`.
fn kept(b: &Baggage) -> Baggage {
    let workload_name = non_empty(&b.workload_name).filter(|_| b.workload_type.is_some());
    Baggage {
        cluster_id: non_empty(&b.cluster_id),
        namespace: non_empty(&b.namespace),
        workload_type: b.workload_type.clone().filter(|_| workload_name.is_some()),
        workload_name,
        service_name: non_empty(&b.service_name),
        service_version: non_empty(&b.service_version),
        region: non_empty(&b.region),
        zone: non_empty(&b.zone),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Baggage::parse(header);
    let encoded = parsed.encode();
    let again = Baggage::parse(&encoded);
    assert_eq!(again, kept(&parsed), "encoded as {encoded:?}");
    assert_eq!(again.encode(), encoded);
    if http::HeaderValue::from_bytes(data).is_ok() {
        assert!(
            http::HeaderValue::from_bytes(encoded.as_bytes()).is_ok(),
            "a valid header re-encoded as an invalid one: {encoded:?}"
        );
    }
});

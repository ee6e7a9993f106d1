//! The waits on a peer that have a bound (docs/reliability.md, "Waits on a
//! peer"), and how often each reached its bound in this process. Every
//! component exports the counts as `mesh_wait_timeouts_total{wait}`
//! (`mesh_runtime::stats::WaitCollector`); the code that gives up also
//! logs why.
//!
//! The counters are the only process-wide state of this crate: plain
//! atomics, so that the crates that wait (TLS, HBONE, xDS, the node agent)
//! count without a metrics registry handed down to each of them.

use std::sync::atomic::{AtomicU64, Ordering};

/// A bounded wait on a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wait {
    /// A TLS handshake, either side (HBONE, istiod-lite's 15012).
    TlsHandshake,
    /// The HTTP/2 preface after TLS (HBONE server, istiod-lite).
    Http2Preface,
    /// A request's headers on an HTTP/1.1 endpoint (admin, stats, readiness).
    RequestHeaders,
    /// A TCP connect to a peer's HBONE port.
    HboneConnect,
    /// The answer to a CONNECT.
    ConnectAnswer,
    /// A keepalive PING on an HBONE connection.
    Keepalive,
    /// A connect to an application, or to a destination outside the mesh.
    AppConnect,
    /// A workload certificate a connection waits for.
    WorkloadCertificate,
    /// A certificate request to the CA.
    CaRequest,
    /// A TCP connect or TLS handshake to the control plane.
    ControlPlaneConnect,
    /// The control plane's answer when an xDS stream opens.
    XdsStreamOpen,
    /// A TokenReview (istiod-lite).
    TokenReview,
    /// A JWKS fetch (istiod-lite).
    JwksFetch,
    /// ztunnel's hello or acknowledgement over ZDS (node agent).
    ZdsAck,
    /// The CNI plugin's request (node agent).
    CniRequest,
}

impl Wait {
    pub const ALL: [Wait; 15] = [
        Wait::TlsHandshake,
        Wait::Http2Preface,
        Wait::RequestHeaders,
        Wait::HboneConnect,
        Wait::ConnectAnswer,
        Wait::Keepalive,
        Wait::AppConnect,
        Wait::WorkloadCertificate,
        Wait::CaRequest,
        Wait::ControlPlaneConnect,
        Wait::XdsStreamOpen,
        Wait::TokenReview,
        Wait::JwksFetch,
        Wait::ZdsAck,
        Wait::CniRequest,
    ];

    /// The `wait` label.
    pub fn name(self) -> &'static str {
        match self {
            Wait::TlsHandshake => "tls_handshake",
            Wait::Http2Preface => "http2_preface",
            Wait::RequestHeaders => "request_headers",
            Wait::HboneConnect => "hbone_connect",
            Wait::ConnectAnswer => "connect_answer",
            Wait::Keepalive => "keepalive",
            Wait::AppConnect => "app_connect",
            Wait::WorkloadCertificate => "workload_certificate",
            Wait::CaRequest => "ca_request",
            Wait::ControlPlaneConnect => "control_plane_connect",
            Wait::XdsStreamOpen => "xds_stream_open",
            Wait::TokenReview => "token_review",
            Wait::JwksFetch => "jwks_fetch",
            Wait::ZdsAck => "zds_ack",
            Wait::CniRequest => "cni_request",
        }
    }

    /// Counts one wait of this kind that reached its bound.
    pub fn timed_out(self) {
        TIMEOUTS[self as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many waits of this kind reached their bound in this process.
    pub fn timeouts(self) -> u64 {
        TIMEOUTS[self as usize].load(Ordering::Relaxed)
    }
}

static TIMEOUTS: [AtomicU64; Wait::ALL.len()] = [const { AtomicU64::new(0) }; Wait::ALL.len()];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wait_is_listed_once_with_its_own_name_and_counter() {
        for (i, w) in Wait::ALL.iter().enumerate() {
            assert_eq!(*w as usize, i, "{w:?} out of place in ALL");
        }
        let names: std::collections::HashSet<_> = Wait::ALL.iter().map(|w| w.name()).collect();
        assert_eq!(names.len(), Wait::ALL.len());
        let before = Wait::JwksFetch.timeouts();
        Wait::JwksFetch.timed_out();
        assert_eq!(Wait::JwksFetch.timeouts(), before + 1);
    }
}

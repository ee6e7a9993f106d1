//! ZDS: how the CNI node agent hands pods to ztunnel
//! (`../shared/spec/dataplane.md` §4).
//!
//! A unix SOCK_SEQPACKET socket carries one protobuf message per packet, no
//! length prefix, each under [`MAX_MESSAGE`] bytes. The agent listens
//! ([`ZdsListener`]); ztunnel connects and says hello; then every request
//! gets exactly one Ack before the next is sent. An `AddWorkload` carries the
//! pod's network namespace as exactly one descriptor (`SCM_RIGHTS`); no other
//! message may carry one.
//!
//! This crate is the transport and the message framing; what the messages
//! mean lives with each side.

mod socket;

pub use mesh_proto::istio::workload::zds::{
    Ack, AddWorkload, DelWorkload, KeepWorkload, SnapshotSent, Version, WorkloadInfo,
    WorkloadRequest, WorkloadResponse, ZdsHello, workload_request, workload_response,
};
pub use socket::{Packet, ZdsListener, ZdsSocket};

/// Both sides read into a buffer of this size; a longer message is an error.
pub const MAX_MESSAGE: usize = 1024;

/// Where the agent listens and ztunnel connects (ztunnel's `INPOD_UDS`).
pub const DEFAULT_SOCKET: &str = "/var/run/ztunnel/ztunnel.sock";

#[derive(Debug, thiserror::Error)]
pub enum ZdsError {
    #[error("ZDS socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("ZDS message of {0} bytes or more does not fit the {MAX_MESSAGE}-byte packet")]
    TooLarge(usize),
    #[error("ZDS packet was truncated (message or descriptors larger than the receiver allows)")]
    Truncated,
    #[error("ZDS message does not decode as {expected}: {source}")]
    Decode {
        expected: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("the peer closed the ZDS connection")]
    Closed,
    #[error("ZDS protocol error: {0}")]
    Protocol(String),
}

impl From<nix::Error> for ZdsError {
    fn from(e: nix::Error) -> Self {
        ZdsError::Io(e.into())
    }
}

/// One-line summaries for logs, without the pod's details.
pub fn describe(request: &WorkloadRequest) -> String {
    use workload_request::Payload;
    match &request.payload {
        Some(Payload::Add(a)) => format!("AddWorkload {}", a.uid),
        Some(Payload::Keep(k)) => format!("KeepWorkload {}", k.uid),
        Some(Payload::Del(d)) => format!("DelWorkload {}", d.uid),
        Some(Payload::SnapshotSent(_)) => "SnapshotSent".into(),
        None => "empty request".into(),
    }
}

/// The Ack for a result: empty error text on success.
pub fn ack(result: Result<(), String>) -> WorkloadResponse {
    WorkloadResponse {
        payload: Some(workload_response::Payload::Ack(Ack {
            error: result.err().unwrap_or_default(),
        })),
    }
}

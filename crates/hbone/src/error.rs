//! HBONE errors, classified so callers can map them to response flags.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to {addr} timed out (maybe a NetworkPolicy blocks HBONE port 15008)")]
    ConnectTimeout { addr: SocketAddr },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} timed out")]
    TlsTimeout { addr: SocketAddr },
    #[error(
        "the client sent no HTTP/2 preface within {after:?} of the TLS handshake; the connection \
         was closed"
    )]
    PrefaceTimeout { after: std::time::Duration },
    #[error("peer {addr} did not negotiate ALPN h2")]
    NoAlpn { addr: SocketAddr },
    #[error("HTTP/2 error: {0}")]
    H2(#[from] h2::Error),
    #[error("CONNECT to {authority} was answered with HTTP {status}")]
    Status {
        authority: String,
        status: http::StatusCode,
    },
    #[error("CONNECT to {authority} was not answered within {after:?}")]
    AnswerTimeout {
        authority: String,
        after: std::time::Duration,
    },
    #[error("invalid CONNECT authority {0:?}")]
    BadAuthority(String),
    #[error(transparent)]
    Certificate(#[from] mesh_tls::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the client reset streams faster than they could be answered ({unanswered} unanswered \
         with at most {limit} open); the connection was closed with ENHANCE_YOUR_CALM"
    )]
    ResetFlood { unanswered: usize, limit: u32 },
    #[error(
        "a CRL now revokes the client's certificate; the connection and its streams were closed \
         (CRL_PATH)"
    )]
    Revoked,
}

impl Error {
    /// True when the failure happened in the TLS handshake (response flag `TLS_FAILURE`).
    pub fn is_tls(&self) -> bool {
        matches!(
            self,
            Error::Tls { .. } | Error::TlsTimeout { .. } | Error::NoAlpn { .. }
        )
    }
}

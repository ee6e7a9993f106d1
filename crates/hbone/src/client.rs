//! Dialling one HBONE connection and opening CONNECT streams on it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, StatusCode};
use mesh_core::Identity;
use mesh_core::wait::Wait;
use mesh_tls::WorkloadCertificate;
use mesh_tls::revocation::Side;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{debug, warn};

use crate::config::H2Config;
use crate::error::Error;

/// What to ask the peer for: the `:authority` and the extra headers.
/// How long a CONNECT may wait for a stream slot and the peer's answer.
pub const CONNECT_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Clone, Debug)]
pub struct ConnectRequest {
    pub authority: String,
    pub headers: HeaderMap,
}

/// An established HTTP/2 client connection; its I/O is driven by a task that
/// also sends keepalive PINGs, and `closed` turns true when that task ends.
pub struct Connection {
    pub(crate) sender: SendRequest<Bytes>,
    pub(crate) closed: Arc<AtomicBool>,
    /// When the first of the certificates this connection was made with
    /// (the peer's, and ours once the pool adds it) ends: no new stream
    /// may rely on the handshake after that.
    pub(crate) valid_until: Option<SystemTime>,
}

/// TLS presenting `cert` (no SNI, ALPN h2, the server's SPIFFE identity one
/// of `expected`), then the HTTP/2 handshake with Istio's window and frame
/// sizes. The connection ends when a CRL revokes the server's certificate,
/// and takes no new stream once `cert` or the server's certificate ends.
pub async fn handshake(
    tcp: TcpStream,
    addr: SocketAddr,
    cert: &WorkloadCertificate,
    expected: Vec<Identity>,
    config: &H2Config,
) -> Result<Connection, Error> {
    let tls = Arc::new(cert.client_config(expected)?);
    let check = cert.peer_check(Side::Client);
    let tls_stream = tls_handshake(tcp, addr, tls, config).await?;
    let peers = tls_stream.get_ref().1.peer_certificates();
    let until = cert.valid_with(peers);
    let revoked = check.revoked(peers);
    let mut conn = h2_handshake_until(tls_stream, addr, config, revoked).await?;
    conn.valid_until_at_most(until);
    Ok(conn)
}

/// The TLS client handshake of HBONE with `tls`.
pub async fn tls_handshake(
    tcp: TcpStream,
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    config: &H2Config,
) -> Result<TlsStream<TcpStream>, Error> {
    tcp.set_nodelay(true)?;
    // SNI is disabled in the config; the name here is never sent.
    let name = ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into());
    let tls_stream = tokio::time::timeout(
        config.handshake_timeout,
        TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| {
        Wait::TlsHandshake.timed_out();
        Error::TlsTimeout { addr }
    })?
    .map_err(|source| Error::Tls { addr, source })?;
    if tls_stream.get_ref().1.alpn_protocol() != Some(mesh_tls::ALPN_H2) {
        return Err(Error::NoAlpn { addr });
    }
    Ok(tls_stream)
}

/// The HTTP/2 client handshake over an established byte stream.
pub async fn h2_handshake<T>(
    io: T,
    addr: SocketAddr,
    config: &H2Config,
) -> Result<Connection, Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    h2_handshake_until(io, addr, config, std::future::pending()).await
}

/// As [`h2_handshake`]; the connection is dropped, with every stream on
/// it, when `revoked` resolves.
pub async fn h2_handshake_until<T>(
    io: T,
    addr: SocketAddr,
    config: &H2Config,
    revoked: impl Future<Output = ()> + Send + 'static,
) -> Result<Connection, Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut conn) = h2::client::Builder::new()
        .initial_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .max_frame_size(config.max_frame_size)
        .max_header_list_size(config.client_max_header_list_size)
        .max_send_buffer_size(config.stream_window as usize)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let ping = conn.ping_pong();
    let keepalive = (config.keepalive_interval, config.keepalive_timeout);
    let done = closed.clone();
    tokio::spawn(async move {
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r {
                    debug!(%addr, error = %e, "HBONE connection ended");
                }
            }
            reason = keepalive_loop(ping, keepalive.0, keepalive.1) => {
                warn!(%addr, %reason, "HBONE connection dropped");
            }
            () = revoked => {
                warn!(%addr, "HBONE connection closed: a CRL revokes the server's certificate");
            }
        }
        done.store(true, Ordering::Release);
    });
    Ok(Connection {
        sender,
        closed,
        valid_until: None,
    })
}

/// Sends PINGs every `interval`; returns why the peer stopped answering.
pub(crate) async fn keepalive_loop(
    ping: Option<h2::PingPong>,
    interval: std::time::Duration,
    timeout: std::time::Duration,
) -> String {
    let Some(mut ping) = ping else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("keepalive PING failed: {e}"),
            Err(_) => {
                Wait::Keepalive.timed_out();
                return format!("keepalive PING unanswered for {timeout:?}");
            }
        }
    }
}

impl Connection {
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Open, and made with certificates that have not ended: a new stream
    /// may go on it.
    pub fn is_usable(&self, now: SystemTime) -> bool {
        !self.is_closed() && self.valid_until.is_none_or(|t| now < t)
    }

    /// Ends the connection's usefulness at `t` too (our own certificate).
    pub(crate) fn valid_until_at_most(&mut self, t: SystemTime) {
        self.valid_until = Some(self.valid_until.map_or(t, |v| v.min(t)));
    }

    /// Opens a CONNECT stream and waits for the response; anything but 200
    /// is an error naming the status.
    pub async fn connect(
        &self,
        request: &ConnectRequest,
    ) -> Result<(h2::SendStream<Bytes>, h2::RecvStream), Error> {
        let uri: http::Uri = request
            .authority
            .parse()
            .map_err(|_| Error::BadAuthority(request.authority.clone()))?;
        if uri.authority().is_none() || uri.scheme().is_some() {
            return Err(Error::BadAuthority(request.authority.clone()));
        }
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri(uri)
            .body(())
            .map_err(|_| Error::BadAuthority(request.authority.clone()))?;
        *req.headers_mut() = request.headers.clone();
        // A live peer that never answers is given up on: a ztunnel answers
        // once it has connected to the application (bounded to 10 s), a
        // waypoint at once.
        let answered = async {
            let mut sender = self.sender.clone().ready().await?;
            let (response, send) = sender.send_request(req, false)?;
            Ok::<_, Error>((response.await?, send))
        };
        let (response, send) = tokio::time::timeout(CONNECT_ANSWER_WAIT, answered)
            .await
            .map_err(|_| {
                Wait::ConnectAnswer.timed_out();
                Error::AnswerTimeout {
                    authority: request.authority.clone(),
                    after: CONNECT_ANSWER_WAIT,
                }
            })??;
        if response.status() != StatusCode::OK {
            return Err(Error::Status {
                authority: request.authority.clone(),
                status: response.status(),
            });
        }
        Ok((send, response.into_body()))
    }
}

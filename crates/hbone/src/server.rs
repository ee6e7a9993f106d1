//! The HBONE server side: TLS accept, HTTP/2, and one [`InboundConnect`] per
//! CONNECT stream for the caller to accept or refuse.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderMap, Method, Response, StatusCode};
use mesh_core::Identity;
use mesh_core::wait::Wait;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::client::keepalive_loop;
use crate::config::H2Config;
use crate::error::Error;
use crate::stream::H2Stream;

/// Completes the TLS handshake of an inbound HBONE connection and returns the
/// stream with the client's identity (first SPIFFE SAN of its certificate).
/// Clients that did not negotiate `h2` are refused here.
pub async fn accept_tls(
    tcp: TcpStream,
    tls: Arc<ServerConfig>,
    config: &H2Config,
) -> Result<(TlsStream<TcpStream>, Identity), Error> {
    #[allow(clippy::disallowed_methods)] // mesh-hbone sits below mesh-runtime
    let addr = mesh_core::address::canonical(tcp.peer_addr()?);
    tcp.set_nodelay(true)?;
    let stream = tokio::time::timeout(config.handshake_timeout, TlsAcceptor::from(tls).accept(tcp))
        .await
        .map_err(|_| {
            Wait::TlsHandshake.timed_out();
            Error::TlsTimeout { addr }
        })?
        .map_err(|source| Error::Tls { addr, source })?;
    let session = stream.get_ref().1;
    if session.alpn_protocol() != Some(mesh_tls::ALPN_H2) {
        return Err(Error::NoAlpn { addr });
    }
    let identity =
        mesh_tls::verifier::peer_identity(session.peer_certificates()).ok_or_else(|| {
            Error::Tls {
                addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "client certificate carries no SPIFFE identity",
                ),
            }
        })?;
    Ok((stream, identity))
}

/// One CONNECT request, waiting for an answer.
pub struct InboundConnect {
    pub request: http::request::Parts,
    recv: RecvStream,
    respond: SendResponse<Bytes>,
    _unanswered: Unanswered,
}

/// Counts a stream as handed to the handler and not answered yet, until
/// the [`InboundConnect`] holding it is answered or dropped.
///
/// A client has at most `max_concurrent_streams` streams open, but one it
/// resets no longer counts for HTTP/2 while the handler still works on it
/// (connecting to the application). Resetting each stream just after it is
/// handed over, a client could set any amount of work going (Rapid Reset).
/// h2 itself cuts off a client whose streams are reset before they are
/// handed over; this covers those reset just after. With every stream
/// open, the count can exceed the limit only through resets.
struct Unanswered(Arc<AtomicUsize>);

impl Unanswered {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InboundConnect {
    pub fn method(&self) -> &Method {
        &self.request.method
    }

    /// The `:authority`, i.e. the target `ip:port` (or `host:port`).
    pub fn authority(&self) -> Option<&str> {
        self.request.uri.authority().map(|a| a.as_str())
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.request.headers
    }

    /// Answers with an error status and ends the stream.
    pub fn reject(mut self, status: StatusCode) {
        let mut response = Response::new(());
        *response.status_mut() = status;
        let _ = self.respond.send_response(response, true);
    }

    /// Answers a request that is not a CONNECT as an HTTP/2 server answers
    /// any request it does not serve: once the request has ended (read and
    /// discarded, at most 64 KiB within 10 s), with `status` and `why` as a
    /// one-line body. Answering at once would close the stream while the
    /// client may still be sending on it, so a protocol error it then made
    /// would meet a closed stream instead of being refused as one (h2spec,
    /// docs/reliability.md H1).
    pub async fn reject_request(mut self, status: StatusCode, why: &str) {
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut read = 0;
            while let Some(chunk) = self.recv.data().await {
                let Ok(chunk) = chunk else { return false };
                read += chunk.len();
                let _ = self.recv.flow_control().release_capacity(chunk.len());
                if read > 64 * 1024 {
                    return false;
                }
            }
            self.recv.trailers().await.is_ok()
        })
        .await
        .unwrap_or(false);
        if !ended {
            // Reset by the client or by h2 for its error, too long, or too
            // big: a bodiless answer, if the stream still takes one.
            return self.reject(status);
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        if let Ok(mut send) = self.respond.send_response(response, false) {
            let _ = send.send_data(Bytes::from(format!("{why}\n")), true);
        }
    }

    /// Answers 200 with `headers`; the tunnel is live afterwards.
    pub fn accept(mut self, headers: HeaderMap) -> Result<H2Stream, Error> {
        let mut response = Response::new(());
        *response.headers_mut() = headers;
        let send = self.respond.send_response(response, false)?;
        Ok(H2Stream::new(send, self.recv, None))
    }
}

/// Serves HTTP/2 on an accepted connection, calling `handler` for each stream
/// (the handler should spawn; the connection is only driven while this runs).
/// When `shutdown` resolves, a graceful GOAWAY is sent and this returns once
/// the open streams end; a peer that stops answering PINGs is dropped.
pub async fn serve<T, F>(
    io: T,
    config: &H2Config,
    shutdown: impl Future<Output = ()>,
    handler: F,
) -> Result<(), Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(InboundConnect),
{
    serve_until(io, config, shutdown, std::future::pending(), handler).await
}

/// As [`serve`]; when `revoked` resolves (a CRL now revokes the client's
/// certificate), the connection ends at once with an abrupt
/// GOAWAY(NO_ERROR), taking its open streams with it.
pub async fn serve_until<T, F>(
    io: T,
    config: &H2Config,
    shutdown: impl Future<Output = ()>,
    revoked: impl Future<Output = ()>,
    mut handler: F,
) -> Result<(), Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(InboundConnect),
{
    // The handshake waits for the client's preface: a client that finished
    // TLS and then says nothing is closed after `handshake_timeout`, as one
    // that stalls inside TLS is (the keep-alive only starts after this).
    let handshake = h2::server::Builder::new()
        .initial_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .max_frame_size(config.max_frame_size)
        .max_concurrent_streams(config.server_max_concurrent_streams)
        .max_header_list_size(config.server_max_header_list_size)
        .max_send_buffer_size(config.server_max_send_buffer)
        .handshake::<_, Bytes>(io);
    let mut conn = tokio::time::timeout(config.handshake_timeout, handshake)
        .await
        .map_err(|_| {
            Wait::Http2Preface.timed_out();
            Error::PrefaceTimeout {
                after: config.handshake_timeout,
            }
        })??;
    let keepalive = keepalive_loop(
        conn.ping_pong(),
        config.keepalive_interval,
        config.keepalive_timeout,
    );
    tokio::pin!(shutdown, keepalive, revoked);
    let mut draining = false;
    let unanswered = Arc::new(AtomicUsize::new(0));
    let limit = config.server_max_concurrent_streams;
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok((request, respond))) => {
                    let open = unanswered.load(Ordering::Acquire);
                    if open >= limit as usize {
                        // This stream is dropped with the connection.
                        go_away_now(&mut conn, Reason::ENHANCE_YOUR_CALM).await;
                        return Err(Error::ResetFlood { unanswered: open, limit });
                    }
                    let (request, recv) = request.into_parts();
                    let _unanswered = Unanswered::new(&unanswered);
                    handler(InboundConnect { request, recv, respond, _unanswered });
                }
            },
            _ = &mut shutdown, if !draining => {
                conn.graceful_shutdown();
                draining = true;
            }
            reason = &mut keepalive => {
                conn.abrupt_shutdown(Reason::NO_ERROR);
                tracing::warn!(%reason, "dropping HBONE connection");
                return Ok(());
            }
            () = &mut revoked => {
                go_away_now(&mut conn, Reason::NO_ERROR).await;
                return Err(Error::Revoked);
            }
        }
    }
}

/// Ends `conn` at once with a GOAWAY carrying `reason`, driving it up to a
/// second longer so that the GOAWAY goes out; open streams end with it.
async fn go_away_now<T>(conn: &mut h2::server::Connection<T, Bytes>, reason: Reason)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    conn.abrupt_shutdown(reason);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        while let Some(Ok(_)) = conn.accept().await {}
    })
    .await;
}

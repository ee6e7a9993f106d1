//! The control plane's gRPC listener on 15012: TLS with istiod's serving
//! certificate, then tonic. Handshakes run off the accept loop so one slow
//! client cannot stall the others, and each is bounded: a client has
//! [`HANDSHAKE_WAIT`] to complete TLS, and as long again to send the
//! HTTP/2 preface, or it is closed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, Router};
use tracing::{debug, warn};

/// How long a client has for the TLS handshake, and then for the HTTP/2
/// connection preface.
pub const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// A PING every this long on every connection...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ...and the connection is closed when one is unanswered this long.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An accepted TLS connection, as tonic wants it: the preface, already
/// read to bound the wait for it, is given back first.
pub struct TlsConn(TlsStream<TcpStream>, &'static [u8]);

#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: Option<SocketAddr>,
}

impl Connected for TlsConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            peer: mesh_runtime::socket::peer(self.0.get_ref().0).ok(),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.1.is_empty() {
            let n = this.1.len().min(buf.remaining());
            buf.put_slice(&this.1[..n]);
            this.1 = &this.1[n..];
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// A TLS 1.3, h2-only server config from a PEM chain and key.
pub fn server_config(chain: &[String], key_pem: &str) -> anyhow::Result<Arc<ServerConfig>> {
    let mut certs = Vec::new();
    for pem in chain {
        certs.extend(mesh_tls::certificate::parse_certs(pem, "serving chain")?);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let mut config = ServerConfig::builder_with_provider(mesh_tls::provider::provider())
        .with_protocol_versions(mesh_tls::provider::TLS_VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![mesh_tls::ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// How long, once a drain starts, open calls and streams are given to end
/// before the server stops without them.
pub const STREAMS_GRACE: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` over TLS until `shutdown` resolves; then
/// stops accepting and lets in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsConn>>(64);
    let acceptor = TlsAcceptor::from(tls);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let accept_loop = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut stop_rx => return,
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let peer = mesh_core::address::canonical(peer);
                let mut tls = match tokio::time::timeout(HANDSHAKE_WAIT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => {
                        mesh_core::wait::Wait::TlsHandshake.timed_out();
                        return warn!(%peer, after = ?HANDSHAKE_WAIT, "TLS handshake not completed in time; connection closed");
                    }
                };
                let mut preface = [0u8; PREFACE.len()];
                match tokio::time::timeout(HANDSHAKE_WAIT, tls.read_exact(&mut preface)).await {
                    Ok(Ok(_)) if &preface == PREFACE => {
                        let _ = tx.send(Ok(TlsConn(tls, PREFACE))).await;
                    }
                    Ok(Ok(_)) => {
                        debug!(%peer, "not an HTTP/2 client (no connection preface); connection closed")
                    }
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "connection ended before the HTTP/2 preface")
                    }
                    Err(_) => {
                        mesh_core::wait::Wait::Http2Preface.timed_out();
                        warn!(%peer, after = ?HANDSHAKE_WAIT, "no HTTP/2 preface after TLS in time; connection closed");
                    }
                }
            });
        }
    });
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = router.serve_with_incoming_shutdown(ReceiverStream::new(rx), async move {
        shutdown.await;
        let _ = stop_tx.send(());
        let _ = draining_tx.send(());
    });
    // A graceful stop waits for every open stream to end, and a response
    // stream to a proxy that stopped reading never ends: after the grace,
    // the server stops without them.
    let grace_over = async {
        if draining_rx.await.is_ok() {
            tokio::time::sleep(STREAMS_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = serving => r,
        () = grace_over => {
            warn!(after = ?STREAMS_GRACE, "streams still open after the drain's grace; closing them");
            Ok(())
        }
    };
    accept_loop.abort();
    result
}

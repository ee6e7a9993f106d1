//! The control plane's gRPC listener on 15012: TLS with istiod's serving
//! certificate, then tonic. Handshakes run off the accept loop so one slow
//! client cannot stall the others.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, Router};
use tracing::debug;

/// An accepted TLS connection, as tonic wants it.
pub struct TlsConn(TlsStream<TcpStream>);

#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: Option<SocketAddr>,
}

impl Connected for TlsConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            peer: self.0.get_ref().0.peer_addr().ok(),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
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
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(TlsConn(tls))).await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    let result = router
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), async move {
            shutdown.await;
            let _ = stop_tx.send(());
        })
        .await;
    accept_loop.abort();
    result
}

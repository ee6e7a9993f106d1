//! The kubelet's streaming upgrade: the API server passes `kubectl exec`'s
//! and `port-forward`'s WebSocket straight to a node that declares the
//! `ExtendWebSocketsToKubelet` feature (this one does, as a 1.37 kubelet
//! does), and the streams are multiplexed over it as Kubernetes'
//! channel protocols say: each binary message starts with its channel's
//! number. `v5.channel.k8s.io` adds a close signal (`255`, channel) to
//! `v4.channel.k8s.io`.
//!
//! SPDY, the older upgrade, is refused with a message saying so: clients
//! since Kubernetes 1.30 speak WebSockets first.

use bytes::Bytes;
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::kubelet::{Body, text};

/// Channel numbers of the remote-command protocols.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
/// v5: "no more data on channel N" is `[CLOSE, N]`.
pub const CLOSE: u8 = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    V5,
    V4,
}

impl Protocol {
    /// In our order of preference.
    const ALL: [Protocol; 2] = [Protocol::V5, Protocol::V4];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
        }
    }
}

pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Answers `req` by upgrading it to a WebSocket that `serve` is given
/// (with the channel protocol agreed), or says why it cannot.
pub fn upgrade<F, Fut>(req: Request<Incoming>, serve: F) -> Response<Body>
where
    F: FnOnce(Socket, Protocol) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    match accept(req) {
        Err(refused) => refused,
        Ok((response, protocol, upgrade)) => {
            tokio::spawn(async move {
                match upgrade.await {
                    Ok(io) => {
                        let socket =
                            WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None)
                                .await;
                        serve(socket, protocol).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "the WebSocket upgrade failed"),
                }
            });
            response
        }
    }
}

/// Accepts `req`'s WebSocket upgrade with the best channel protocol both
/// sides speak, or says why not.
#[allow(clippy::result_large_err)]
fn accept(
    mut req: Request<Incoming>,
) -> Result<(Response<Body>, Protocol, OnUpgrade), Response<Body>> {
    let headers = req.headers();
    let upgrade = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if upgrade.starts_with("spdy") {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "the node simulator streams over WebSockets (v5.channel.k8s.io, v4.channel.k8s.io), \
             not SPDY; kubectl 1.30 and later use WebSockets unless \
             KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"
                .into(),
        ));
    }
    if upgrade != "websocket" {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "this endpoint needs a WebSocket upgrade (Upgrade: websocket)".into(),
        ));
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "the upgrade has no Sec-WebSocket-Key".into(),
        ));
    };
    let offered: Vec<String> = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    let Some(protocol) = Protocol::ALL
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p.name()))
    else {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!(
                "none of the offered subprotocols {offered:?} is spoken here \
                 (v5.channel.k8s.io, v4.channel.k8s.io)"
            ),
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, accept)
        .header(SEC_WEBSOCKET_PROTOCOL, protocol.name())
        .body(Empty::<Bytes>::new().boxed())
        .expect("a 101 response with valid headers");
    Ok((response, protocol, upgrade))
}

/// A message on `channel`.
pub fn on_channel(channel: u8, data: &[u8]) -> tokio_tungstenite::tungstenite::Message {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    tokio_tungstenite::tungstenite::Message::binary(message)
}

/// The last message: a normal closure (1000), which clients read as the
/// end of every stream; a close without a code reads as an error.
pub fn normal_close() -> tokio_tungstenite::tungstenite::Message {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    tokio_tungstenite::tungstenite::Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// The socket's sending half behind a channel, so that several tasks
/// send; once every sender is dropped, a normal closure is sent. Await the
/// handle to know it was.
pub fn sender(
    sink: futures::stream::SplitSink<Socket, tokio_tungstenite::tungstenite::Message>,
) -> (
    tokio::sync::mpsc::Sender<tokio_tungstenite::tungstenite::Message>,
    tokio::task::JoinHandle<()>,
) {
    use futures::SinkExt;
    let (tx, mut rx) = tokio::sync::mpsc::channel(32);
    let mut sink = sink;
    let task = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    });
    (tx, task)
}

//! Port forwarding: `/portForward/{namespace}/{pod}?port=N...`, upgraded to
//! a WebSocket, as WebSocket clients of the API server use it (kube-rs,
//! and `ambientctl ztunnel-config` through it). Port `i` has channels
//! `2i` (data, both ways) and `2i+1` (errors, from here); each channel's
//! first message carries the port number (two bytes, little-endian). The
//! node connects to the port on localhost in the pod's network namespace,
//! as a container runtime does.
//!
//! `kubectl port-forward` tunnels SPDY inside the WebSocket instead
//! (`SPDY/3.1+portforward.k8s.io`): that is refused at the upgrade.

use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use super::websocket::{self, Socket};

const CONNECT_BOUND: Duration = Duration::from_secs(5);

/// The ports asked for, from the query.
pub fn ports(query: &str) -> Result<Vec<u16>, String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "port")
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|p| {
                    p.trim()
                        .parse::<u16>()
                        .map_err(|_| format!("port {p:?} is not a port number"))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Forwards `ports` of the pod whose network namespace is `netns`.
pub async fn run(socket: Socket, netns: PathBuf, ports: Vec<u16>) {
    let (sink, mut incoming) = socket.split();
    let (tx, writer) = websocket::sender(sink);
    let mut to_pod = Vec::new();
    let mut relays = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (data, error) = (2 * i as u8, 2 * i as u8 + 1);
        for channel in [data, error] {
            let _ = tx
                .send(websocket::on_channel(channel, &port.to_le_bytes()))
                .await;
        }
        let ns = netns.clone();
        let connected = tokio::task::spawn_blocking(move || connect(&ns, port))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match connected {
            Err(e) => {
                let message = format!("error forwarding port {port} to the pod: {e}");
                let _ = tx
                    .send(websocket::on_channel(error, message.as_bytes()))
                    .await;
                to_pod.push(None);
            }
            Ok(stream) => {
                let (mut read, write) = stream.into_split();
                to_pod.push(Some(write));
                let tx = tx.clone();
                relays.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    while let Ok(n) = read.read(&mut buf).await {
                        if n == 0
                            || tx
                                .send(websocket::on_channel(data, &buf[..n]))
                                .await
                                .is_err()
                        {
                            break;
                        }
                    }
                }));
            }
        }
    }
    // Until every port's connection has ended, or the client has gone.
    let all_done = futures::future::join_all(relays);
    tokio::pin!(all_done);
    loop {
        tokio::select! {
            _ = &mut all_done => break,
            message = incoming.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    if let [channel, rest @ ..] = &data[..]
                        && channel % 2 == 0
                        && let Some(Some(write)) = to_pod.get_mut(usize::from(channel / 2))
                        && write.write_all(rest).await.is_err()
                    {
                        to_pod[usize::from(channel / 2)] = None;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn connect(netns: &std::path::Path, port: u16) -> Result<tokio::net::TcpStream, String> {
    let ns = mesh_netns::Netns::open(netns).map_err(|e| e.to_string())?;
    let stream = ns
        .run(|| TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), CONNECT_BOUND))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("connecting to localhost:{port} in {}: {e}", netns.display()))?;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_read_as_clients_send_them() {
        assert_eq!(ports("port=15000"), Ok(vec![15000]));
        assert_eq!(ports("port=80&port=443"), Ok(vec![80, 443]));
        assert_eq!(ports("port=80,443"), Ok(vec![80, 443]));
        assert!(ports("port=http").is_err());
    }
}

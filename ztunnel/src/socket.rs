//! Socket facts the kernel knows and tokio does not expose.

use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

/// The destination a connection had before nat REDIRECT sent it to us
/// (`SO_ORIGINAL_DST`, then its IPv6 form). `None` when it was not redirected.
pub fn original_dst(tcp: &TcpStream) -> Option<SocketAddr> {
    let sock = SockRef::from(tcp);
    let orig = sock
        .original_dst_v4()
        .or_else(|_| sock.original_dst_v6())
        .ok()?
        .as_socket()?;
    // Without redirection the kernel reports our own listening address.
    (Some(orig) != tcp.local_addr().ok()).then_some(orig)
}

/// A socket for connecting to a local application from `source` (the real
/// client's IP), so the application sees who is calling. Binding a foreign
/// address needs `IP_TRANSPARENT`; where that is refused the socket falls
/// back to the node's own address (best effort, as Istio's default).
pub fn upstream_from(source: IpAddr, dst: SocketAddr) -> std::io::Result<TcpSocket> {
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    if source != dst.ip() && source.is_ipv4() == dst.is_ipv4() {
        let transparent = if dst.is_ipv4() {
            socket
                .set_ip_transparent_v4(true)
                .and_then(|_| socket.set_freebind_v4(true))
        } else {
            socket
                .set_ip_transparent_v6(true)
                .and_then(|_| socket.set_freebind_v6(true))
        };
        if (transparent.is_ok() || source.is_loopback())
            && let Err(e) = socket.bind(&SocketAddr::new(source, 0).into())
        {
            tracing::debug!(%source, error = %e, "cannot bind the client's address; connecting from our own");
            return upstream_plain(dst);
        }
    }
    Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(
        socket,
    )))
}

fn upstream_plain(dst: SocketAddr) -> std::io::Result<TcpSocket> {
    if dst.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}

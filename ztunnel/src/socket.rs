//! Where ztunnel's sockets are created, and socket facts the kernel knows
//! and tokio does not expose.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_core::address::canonical;
use mesh_hbone::pool::SocketFactory;
use mesh_netns::Netns;
use mesh_runtime::socket::local;
use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Where a proxy's sockets live.
#[derive(Clone, Debug)]
pub enum Sockets {
    /// ztunnel's own network namespace (the node-level listeners).
    Host,
    /// A pod's network namespace (in-pod mode). Every socket carries `mark`,
    /// which the pod's redirection rules let pass, so ztunnel's own
    /// connections are not captured again.
    Pod { netns: Arc<Netns>, mark: u32 },
}

impl Sockets {
    /// A non-blocking TCP socket of `domain`.
    pub fn tcp(&self, domain: Domain) -> io::Result<Socket> {
        let create = || -> io::Result<Socket> {
            let s = Socket::new(domain, Type::STREAM.cloexec(), None)?;
            s.set_nonblocking(true)?;
            Ok(s)
        };
        match self {
            Sockets::Host => create(),
            Sockets::Pod { netns, mark } => {
                let s = netns.run(create).map_err(io::Error::other)??;
                s.set_mark(*mark)?;
                Ok(s)
            }
        }
    }

    /// A listener on `addr` (in the pod: `SO_REUSEPORT` when `reuse_port`,
    /// and `IP_TRANSPARENT` where allowed).
    pub fn listener(&self, addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
        let s = self.tcp(Domain::for_address(addr))?;
        s.set_reuse_address(true)?;
        if reuse_port {
            s.set_reuse_port(true)?;
        }
        let transparent = if addr.is_ipv4() {
            s.set_ip_transparent_v4(true)
        } else {
            s.set_ip_transparent_v6(true)
        };
        tracing::debug!(%addr, transparent = transparent.is_ok(), "binding");
        s.bind(&addr.into())?;
        s.listen(1024)?;
        TcpListener::from_std(s.into())
    }

    /// A socket for connecting to `dst`.
    pub fn connector(&self, dst: &SocketAddr) -> io::Result<TcpSocket> {
        Ok(TcpSocket::from_std_stream(
            self.tcp(Domain::for_address(*dst))?.into(),
        ))
    }
}

impl SocketFactory for Sockets {
    fn tcp_socket(&self, dst: &SocketAddr) -> io::Result<TcpSocket> {
        self.connector(dst)
    }
}

/// The destination a connection had before nat REDIRECT sent it to us
/// (`SO_ORIGINAL_DST`, then its IPv6 form), in canonical form (an IPv4
/// connection to a dual-stack listener has an IPv4 one). `None` when it was
/// not redirected.
pub fn original_dst(tcp: &TcpStream) -> Option<SocketAddr> {
    let sock = SockRef::from(tcp);
    let orig = sock
        .original_dst_v4()
        .or_else(|_| sock.original_dst_v6())
        .ok()?
        .as_socket()
        .map(canonical)?;
    // Without redirection the kernel reports our own listening address.
    (Some(orig) != local(tcp).ok()).then_some(orig)
}

/// A socket for connecting to a local application from `source` (the real
/// client's IP), so the application sees who is calling. Binding a foreign
/// address needs `IP_TRANSPARENT`; where that is refused the socket falls
/// back to the node's own address (best effort, as Istio's default).
pub fn upstream_from(
    sockets: &Sockets,
    source: IpAddr,
    dst: SocketAddr,
) -> std::io::Result<TcpSocket> {
    let socket = sockets.tcp(Domain::for_address(dst))?;
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
            return sockets.connector(&dst);
        }
    }
    Ok(TcpSocket::from_std_stream(socket.into()))
}

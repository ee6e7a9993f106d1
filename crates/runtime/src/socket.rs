//! A connection's addresses, read in one form (`mesh_core::address::canonical`):
//! an IPv4 peer of a dual-stack listener is `a.b.c.d`, never
//! `::ffff:a.b.c.d`. Reading them any other way is refused by clippy
//! (`clippy.toml`), so no component sees the mapped form.

use std::io;
use std::net::SocketAddr;

use mesh_core::address::canonical;
use tokio::net::TcpStream;

/// The remote end of `tcp`.
#[allow(clippy::disallowed_methods)]
pub fn peer(tcp: &TcpStream) -> io::Result<SocketAddr> {
    tcp.peer_addr().map(canonical)
}

/// Our end of `tcp`: the address the client reached (without redirection).
#[allow(clippy::disallowed_methods)]
pub fn local(tcp: &TcpStream) -> io::Result<SocketAddr> {
    tcp.local_addr().map(canonical)
}

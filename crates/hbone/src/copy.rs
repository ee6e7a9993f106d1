//! Moving bytes between a TCP socket and an HBONE stream.
//!
//! Each direction finishes on its own: end-of-file from the socket becomes
//! END_STREAM, and END_STREAM from the peer becomes a write shutdown of the
//! socket, so half-closed connections work as they do on plain TCP.
//!
//! Buffers are allocated only once the socket is readable, sized by recent
//! traffic (doubling while reads fill them, halving when reads come in small),
//! and handed to HTTP/2 without another copy. While bytes keep coming, the
//! same allocation is reused once HTTP/2 has sent what was read into it
//! (allocating and freeing 256 KiB per read cost page faults and unmaps:
//! a sixth of the CPU of a bulk transfer). A connection that goes quiet
//! drops its buffer before it waits, so an idle connection holds none.

use std::io;

use bytes::BytesMut;
use socket2::SockRef;
use tokio::net::TcpStream;

use crate::stream::{H2Stream, h2_to_io, send_all};

const MIN_BUF: usize = 4 * 1024;
const MAX_BUF: usize = 256 * 1024;

/// Bytes moved in each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transferred {
    /// From the socket into the tunnel.
    pub to_tunnel: u64,
    /// From the tunnel to the socket.
    pub from_tunnel: u64,
}

/// Copies both ways until both directions have ended. An error in either
/// direction ends both: the stream is reset and the socket closed when the
/// caller drops them.
pub async fn copy_bidirectional(tcp: &TcpStream, stream: H2Stream) -> io::Result<Transferred> {
    let H2Stream {
        mut send,
        mut recv,
        _slot,
        ..
    } = stream;

    let to_tunnel = async {
        let mut total = 0u64;
        let mut size = MIN_BUF;
        let mut buf = BytesMut::new();
        loop {
            if !read_ready_now(tcp) {
                buf = BytesMut::new();
                tcp.readable().await?;
            }
            // Reclaims the allocation when the last chunk read into it is gone.
            buf.reserve(size);
            match tcp.try_read_buf(&mut buf) {
                Ok(0) => {
                    send.send_data(bytes::Bytes::new(), true)
                        .map_err(h2_to_io)?;
                    return Ok::<_, io::Error>(total);
                }
                Ok(n) => {
                    total += n as u64;
                    size = next_size(size, n);
                    send_all(&mut send, buf.split().freeze()).await?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    };

    let from_tunnel = async {
        let mut total = 0u64;
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(h2_to_io)?;
            write_all(tcp, &chunk).await?;
            // Capacity goes back to the peer only once the bytes are written,
            // so a slow reader slows the sender rather than filling memory.
            recv.flow_control()
                .release_capacity(chunk.len())
                .map_err(h2_to_io)?;
            total += chunk.len() as u64;
        }
        end_writes(tcp)?;
        Ok::<_, io::Error>(total)
    };

    let (to_tunnel, from_tunnel) = tokio::try_join!(to_tunnel, from_tunnel)?;
    Ok(Transferred {
        to_tunnel,
        from_tunnel,
    })
}

/// Half-closes `tcp` (FIN) after the last byte. A socket the peer has
/// already closed and reset is not connected any more: nothing is left to
/// end there, so that is not an error (an application that closes as soon
/// as it has its answer does this all the time).
pub fn end_writes(tcp: &TcpStream) -> io::Result<()> {
    match SockRef::from(tcp).shutdown(std::net::Shutdown::Write) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        result => result,
    }
}

/// Whether the socket is readable right now, without waiting.
fn read_ready_now(tcp: &TcpStream) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    tcp.poll_read_ready(&mut cx).is_ready()
}

fn next_size(size: usize, read: usize) -> usize {
    if read == size {
        (size * 2).min(MAX_BUF)
    } else if read < size / 8 {
        (size / 2).max(MIN_BUF)
    } else {
        size
    }
}

async fn write_all(tcp: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_grow_with_full_reads_and_shrink_with_small_ones() {
        let mut s = MIN_BUF;
        for _ in 0..20 {
            s = next_size(s, s);
        }
        assert_eq!(s, MAX_BUF);
        for _ in 0..20 {
            s = next_size(s, 10);
        }
        assert_eq!(s, MIN_BUF);
        assert_eq!(next_size(64 * 1024, 40 * 1024), 64 * 1024);
    }
}

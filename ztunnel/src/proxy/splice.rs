//! Plain TCP to plain TCP (passthrough, inbound plaintext) without copying
//! through user space: each direction moves bytes socket → pipe → socket
//! with splice(2). The pipe is made when the first bytes arrive, so an idle
//! connection holds no buffer at all, and the kernel moves page references
//! rather than bytes.

use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one splice moves (a default pipe holds 64 KiB).
const CHUNK: usize = 64 * 1024;

/// Copies both ways until both directions have ended; returns the bytes
/// moved (a → b, b → a). End of stream on one side becomes a write
/// shutdown of the other, so half-closed connections keep working.
pub async fn splice_bidirectional(a: &TcpStream, b: &TcpStream) -> io::Result<(u64, u64)> {
    tokio::try_join!(one_way(a, b), one_way(b, a))
}

async fn one_way(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    let mut pipe: Option<(OwnedFd, OwnedFd)> = None;
    let mut total = 0u64;
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        from.readable().await?;
        let (r, w) = match &pipe {
            Some(p) => p,
            None => pipe.insert(nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?),
        };
        let read = from.try_io(Interest::READABLE, || {
            splice(from, None, w, None, CHUNK, flags).map_err(io::Error::from)
        });
        let mut in_pipe = match read {
            Ok(0) => {
                mesh_hbone::copy::end_writes(to)?;
                return Ok(total);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        total += in_pipe as u64;
        while in_pipe > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(r, None, to, None, in_pipe, flags).map_err(io::Error::from)
            }) {
                Ok(n) => in_pipe -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_half_close_is_passed_on() {
        // client <-> (a | proxy | b) <-> server
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        let proxy = tokio::spawn(async move { splice_bidirectional(&a, &b).await });

        let big = vec![7u8; 3 * CHUNK + 123];
        client.write_all(&big).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big, "client to server, then end of stream");

        // The other direction still works after the first half closed.
        server.write_all(b"reply").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply");

        let (up, down) = proxy.await.unwrap().unwrap();
        assert_eq!((up, down), (big.len() as u64, 5));
    }
}

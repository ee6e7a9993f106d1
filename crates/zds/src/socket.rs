//! The SOCK_SEQPACKET transport, with descriptor passing.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::{MAX_MESSAGE, ZdsError};

/// One received packet: the message bytes and the descriptors that came with it.
#[derive(Debug)]
pub struct Packet {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// A connected ZDS socket.
#[derive(Debug)]
pub struct ZdsSocket {
    inner: AsyncFd<Socket>,
}

impl ZdsSocket {
    /// Connects to a listening agent at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ZdsError> {
        let socket = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None)?;
        // Non-blocking from the start: a unix connect then completes at once
        // or fails, EAGAIN when the agent has stopped accepting and its
        // backlog is full (a blocking connect would hold a runtime thread
        // until the agent came back). The caller retries with back-off.
        socket.set_nonblocking(true)?;
        socket.connect(&SockAddr::unix(path)?)?;
        Self::from_socket(socket)
    }

    /// A connected pair, for tests.
    pub fn pair() -> Result<(Self, Self), ZdsError> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET.cloexec(), None)?;
        Ok((Self::from_socket(a)?, Self::from_socket(b)?))
    }

    fn from_socket(socket: Socket) -> Result<Self, ZdsError> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            inner: register(socket)?,
        })
    }

    /// Sends one message, with `fd` attached when given.
    pub async fn send(
        &self,
        message: &impl prost::Message,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ZdsError> {
        let bytes = message.encode_to_vec();
        if bytes.len() >= MAX_MESSAGE {
            return Err(ZdsError::TooLarge(bytes.len()));
        }
        let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
        self.inner
            .async_io(Interest::WRITABLE, |s| {
                let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
                    Vec::new()
                } else {
                    vec![ControlMessage::ScmRights(&fds)]
                };
                sendmsg::<()>(
                    s.as_raw_fd(),
                    &[IoSlice::new(&bytes)],
                    &cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            })
            .await?;
        Ok(())
    }

    /// Receives one packet. A packet that did not fit is an error (its
    /// descriptors are closed); the peer closing is [`ZdsError::Closed`].
    pub async fn recv(&self) -> Result<Packet, ZdsError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (len, flags, fds) = self
            .inner
            .async_io(Interest::READABLE, |s| {
                let mut space = nix::cmsg_space!([RawFd; 4]);
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg = recvmsg::<()>(
                    s.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)?;
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        fds.extend(raw.into_iter().map(own));
                    }
                }
                Ok((msg.bytes, msg.flags, fds))
            })
            .await?;
        if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
            return Err(ZdsError::Truncated);
        }
        if len == 0 && fds.is_empty() {
            return Err(ZdsError::Closed);
        }
        buf.truncate(len);
        Ok(Packet { bytes: buf, fds })
    }

    /// Receives and decodes one message of type `M`.
    pub async fn recv_message<M: prost::Message + Default>(
        &self,
    ) -> Result<(M, Vec<OwnedFd>), ZdsError> {
        let packet = self.recv().await?;
        let message = M::decode(packet.bytes.as_slice()).map_err(|source| ZdsError::Decode {
            expected: std::any::type_name::<M>()
                .rsplit("::")
                .next()
                .unwrap_or("message"),
            source,
        })?;
        Ok((message, packet.fds))
    }
}

impl AsFd for ZdsSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.get_ref().as_fd()
    }
}

/// Takes ownership of a descriptor the kernel just installed in our table.
#[allow(unsafe_code)]
fn own(raw: RawFd) -> OwnedFd {
    // SAFETY: SCM_RIGHTS delivery created `raw` in this process for us
    // alone; nothing else refers to it, so this is its only owner.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Registers a socket with the runtime's reactor.
#[allow(unsafe_code)]
fn register(socket: Socket) -> std::io::Result<AsyncFd<Socket>> {
    // SAFETY: a `Socket` owns its descriptor for its whole life and always
    // reports the same one, and the AsyncFd owns the Socket.
    unsafe { AsyncFd::register(socket) }.map_err(std::io::Error::from)
}

/// The agent's listening socket.
#[derive(Debug)]
pub struct ZdsListener {
    inner: AsyncFd<Socket>,
}

impl ZdsListener {
    /// Listens at `path`, replacing a stale socket file left by an earlier run.
    pub fn bind(path: &Path) -> Result<Self, ZdsError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let socket = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None)?;
        socket.bind(&SockAddr::unix(path)?)?;
        socket.listen(16)?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            inner: register(socket)?,
        })
    }

    pub async fn accept(&self) -> Result<ZdsSocket, ZdsError> {
        let (socket, _) = self
            .inner
            .async_io(Interest::READABLE, |s| s.accept())
            .await?;
        ZdsSocket::from_socket(socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AddWorkload, WorkloadRequest, ZdsHello, workload_request};

    /// An agent that has stopped accepting: once its backlog is full, a
    /// connect fails at once instead of holding the caller's thread. (The
    /// connects run on a thread of their own, so that a blocking one fails
    /// this test instead of hanging it.)
    #[test]
    fn connecting_to_an_agent_that_does_not_accept_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        listener.bind(&SockAddr::unix(&path).unwrap()).unwrap();
        listener.listen(1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let outcome = runtime.block_on(async {
                let mut held = Vec::new();
                for _ in 0..64 {
                    match ZdsSocket::connect(&path).await {
                        Ok(s) => held.push(s),
                        Err(e) => return Some((held.len(), e)),
                    }
                }
                None
            });
            let _ = tx.send(outcome);
        });
        let outcome = rx
            .recv_timeout(std::time::Duration::from_secs(2))
            .expect("connect must not wait for the agent to accept");
        let (accepted, error) = outcome.expect("64 connections to a listener that never accepts");
        assert!(accepted >= 1, "the backlog takes one at least");
        assert!(
            matches!(&error, ZdsError::Io(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{error}"
        );
    }

    #[tokio::test]
    async fn message_with_descriptor_round_trips() {
        let (a, b) = ZdsSocket::pair().unwrap();
        let file = std::fs::File::open("/proc/self/ns/net").unwrap();
        let req = WorkloadRequest {
            payload: Some(workload_request::Payload::Add(AddWorkload {
                uid: "u1".into(),
                workload_info: None,
            })),
        };
        a.send(&req, Some(file.as_fd())).await.unwrap();
        let (got, fds): (WorkloadRequest, _) = b.recv_message().await.unwrap();
        assert_eq!(got, req);
        assert_eq!(fds.len(), 1);
        let sent = std::fs::metadata("/proc/self/ns/net").unwrap();
        let received = std::fs::File::from(fds.into_iter().next().unwrap())
            .metadata()
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(sent.ino(), received.ino());
    }

    #[tokio::test]
    async fn oversized_and_closed() {
        let (a, b) = ZdsSocket::pair().unwrap();
        let big = AddWorkload {
            uid: "x".repeat(MAX_MESSAGE),
            workload_info: None,
        };
        assert!(matches!(
            a.send(&big, None).await,
            Err(ZdsError::TooLarge(_))
        ));
        a.send(&ZdsHello { version: 1 }, None).await.unwrap();
        let (hello, fds): (ZdsHello, _) = b.recv_message().await.unwrap();
        assert_eq!(hello.version, 1);
        assert!(fds.is_empty());
        drop(a);
        assert!(matches!(b.recv().await, Err(ZdsError::Closed)));
    }

    #[tokio::test]
    async fn a_packet_longer_than_the_buffer_is_refused() {
        let (a, b) = ZdsSocket::pair().unwrap();
        // Bypass `send`'s size check to act as a hostile peer.
        let raw = vec![0x0a; MAX_MESSAGE + 10];
        nix::sys::socket::send(a.as_fd().as_raw_fd(), &raw, MsgFlags::empty()).unwrap();
        assert!(matches!(b.recv().await, Err(ZdsError::Truncated)));
    }

    #[tokio::test]
    async fn listener_replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zds.sock");
        std::fs::write(&path, b"stale").unwrap();
        let listener = ZdsListener::bind(&path).unwrap();
        let (client, server) = tokio::join!(ZdsSocket::connect(&path), listener.accept());
        let (client, server) = (client.unwrap(), server.unwrap());
        client.send(&ZdsHello { version: 1 }, None).await.unwrap();
        let (hello, _): (ZdsHello, _) = server.recv_message().await.unwrap();
        assert_eq!(hello.version, 1);
    }
}

//! One tunnelled user connection: an HTTP/2 stream in both directions.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Held by a stream for as long as it occupies a slot on a pooled connection.
pub(crate) type StreamSlot = Arc<dyn Send + Sync>;

/// The two halves of a CONNECT stream after the 200.
///
/// Dropping it without finishing resets the stream (RST_STREAM CANCEL).
pub struct H2Stream {
    pub(crate) send: SendStream<Bytes>,
    pub(crate) recv: RecvStream,
    /// Releases the stream's slot in the pool when dropped.
    pub(crate) _slot: Option<StreamSlot>,
    /// Received but not yet read through [`AsyncRead`].
    pending: Bytes,
    /// END_STREAM sent through [`AsyncWrite::poll_shutdown`].
    finished: bool,
}

impl H2Stream {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream, slot: Option<StreamSlot>) -> Self {
        Self {
            send,
            recv,
            _slot: slot,
            pending: Bytes::new(),
            finished: false,
        }
    }

    /// Sends all of `data`, waiting for flow-control capacity as needed.
    pub async fn write_all(&mut self, data: Bytes) -> std::io::Result<()> {
        send_all(&mut self.send, data).await
    }

    /// Ends the sending direction (DATA with END_STREAM).
    pub fn finish(&mut self) -> std::io::Result<()> {
        self.send.send_data(Bytes::new(), true).map_err(h2_to_io)
    }

    /// The next chunk from the peer, or `None` at END_STREAM. The chunk's
    /// flow-control capacity is released at once.
    pub async fn read_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        match self.recv.data().await {
            None => Ok(None),
            Some(Err(e)) => Err(h2_to_io(e)),
            Some(Ok(b)) => {
                let _ = self.recv.flow_control().release_capacity(b.len());
                Ok(Some(b))
            }
        }
    }
}

/// Byte-stream access, for running a protocol (HTTP) inside the tunnel.
/// Received chunks release their flow-control capacity once read.
impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // An empty chunk is not the end of the stream, though reading zero
        // bytes would say it was (h2 drops empty DATA frames today).
        while this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                Some(Ok(chunk)) => {
                    let _ = this.recv.flow_control().release_capacity(chunk.len());
                    this.pending = chunk;
                }
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.send.reserve_capacity(buf.len());
        loop {
            let cap = this.send.capacity();
            if cap > 0 {
                let n = cap.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(h2_to_io)?;
                return Poll::Ready(Ok(n));
            }
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "HBONE stream closed by peer",
                    )));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 frames go out as the connection task writes; nothing is held here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.finished {
            this.finished = true;
            this.send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}

/// How long a [`Lingering`] stream dropped after its END_STREAM waits for
/// the peer's before resetting.
pub const LINGER: Duration = Duration::from_secs(5);

/// An [`H2Stream`] used as a byte stream (a protocol client inside the
/// tunnel) that closes as a TCP socket does after `shutdown`: dropped once
/// its sending side has ended, it reads the peer's side to its end in the
/// background, at most [`LINGER`], instead of resetting the stream. A
/// client that closes a finished exchange then looks, to the other end, like
/// one that closed, not one that cancelled it (which the other end counts as
/// an error). Dropped before its END_STREAM, it resets as an [`H2Stream`]
/// does.
pub struct Lingering(Option<H2Stream>);

impl From<H2Stream> for Lingering {
    fn from(stream: H2Stream) -> Self {
        Self(Some(stream))
    }
}

impl Lingering {
    fn stream(&mut self) -> &mut H2Stream {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut stream) = self.0.take() else {
            return;
        };
        if !stream.finished || stream.recv.is_end_stream() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let drained = tokio::time::timeout(LINGER, async {
                    while let Ok(Some(_)) = stream.read_chunk().await {}
                });
                let _ = drained.await;
            });
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()).poll_shutdown(cx)
    }
}

/// Sends `data` on `send`, respecting the peer's flow-control window.
pub(crate) async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes) -> std::io::Result<()> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let mut cap = send.capacity();
        if cap == 0 {
            cap = match poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(c)) => c,
                Some(Err(e)) => return Err(h2_to_io(e)),
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "HBONE stream closed by peer",
                    ));
                }
            };
            if cap == 0 {
                continue;
            }
        }
        let chunk = data.split_to(cap.min(data.len()));
        send.send_data(chunk, false).map_err(h2_to_io)?;
    }
    Ok(())
}

/// Maps an h2 error to I/O terms: a peer reset is a connection reset.
pub(crate) fn h2_to_io(e: h2::Error) -> std::io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| std::io::Error::other("h2 I/O error"));
    }
    let kind = if e.is_reset() || e.is_go_away() {
        std::io::ErrorKind::ConnectionReset
    } else {
        std::io::ErrorKind::Other
    };
    std::io::Error::new(kind, e)
}

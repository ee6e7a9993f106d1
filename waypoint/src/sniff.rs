//! Which protocol a tunnelled connection speaks, from its declared port
//! protocol or, when undeclared, its first bytes; and an I/O wrapper that
//! replays the bytes read while deciding.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use mesh_model::waypoint::AppProtocol;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a downstream connection may say nothing: Envoy's default idle
/// timeout for an HTTP connection (Istio keeps it). It bounds a declared
/// HTTP port's first bytes and, on HTTP/1.1, the wait for each request's
/// headers, the time between requests included.
pub const DOWNSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Tcp,
}

/// What `prefix` can still become.
fn classify(prefix: &[u8]) -> Option<Protocol> {
    let could_be = |pattern: &[u8]| {
        let n = prefix.len().min(pattern.len());
        prefix[..n] == pattern[..n]
    };
    if could_be(H2_PREFACE) {
        return (prefix.len() >= H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    let mut undecided = false;
    for m in METHODS {
        if could_be(m) {
            if prefix.len() >= m.len() {
                return Some(Protocol::Http1);
            }
            undecided = true;
        }
    }
    (!undecided).then_some(Protocol::Tcp)
}

/// Decides the protocol, reading at most a preface's worth of bytes. A
/// declared TCP port is never read; an undeclared one that stays silent
/// for `timeout` (a server-first protocol) is TCP.
pub async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    declared: AppProtocol,
    timeout: Duration,
) -> io::Result<(Protocol, Bytes)> {
    if declared == AppProtocol::Tcp {
        return Ok((Protocol::Tcp, Bytes::new()));
    }
    let mut buf = BytesMut::with_capacity(H2_PREFACE.len());
    let read = async {
        loop {
            if let Some(p) = classify(&buf) {
                return Ok::<_, io::Error>(p);
            }
            let mut chunk = [0u8; 24];
            let want = H2_PREFACE.len() - buf.len().min(H2_PREFACE.len());
            let n = io.read(&mut chunk[..want.max(1)]).await?;
            if n == 0 {
                return Ok(Protocol::Tcp);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let protocol = if declared.is_http() {
        tokio::time::timeout(DOWNSTREAM_IDLE_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no request within {DOWNSTREAM_IDLE_TIMEOUT:?}"),
                ))
            })?
    } else {
        match tokio::time::timeout(timeout, read).await {
            Ok(r) => r?,
            Err(_) => Protocol::Tcp,
        }
    };
    Ok((protocol, buf.freeze()))
}

/// An I/O object that first yields `prefix`, then reads from `inner`.
pub struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_bytes_decide_and_are_replayed() {
        let cases: [(&[u8], AppProtocol, Protocol); 6] = [
            (
                b"GET / HTTP/1.1\r\n\r\n",
                AppProtocol::Unspecified,
                Protocol::Http1,
            ),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nxyz",
                AppProtocol::Unspecified,
                Protocol::Http2,
            ),
            (b"MARKER hello", AppProtocol::Unspecified, Protocol::Tcp),
            (b"GEX", AppProtocol::Unspecified, Protocol::Tcp),
            (b"GET / HTTP/1.1\r\n\r\n", AppProtocol::Tcp, Protocol::Tcp),
            (b"", AppProtocol::Unspecified, Protocol::Tcp),
        ];
        for (input, declared, want) in cases {
            let mut io = input;
            let (got, prefix) = detect(&mut io, declared, Duration::from_secs(1))
                .await
                .unwrap();
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
            let mut replay = Vec::new();
            Prefixed::new(prefix, io)
                .read_to_end(&mut replay)
                .await
                .unwrap();
            assert_eq!(replay, input, "every byte is replayed");
        }
    }

    #[tokio::test]
    async fn a_silent_undeclared_port_is_tcp_after_the_timeout() {
        let (mut client, _server) = tokio::io::duplex(64);
        let (p, prefix) = detect(
            &mut client,
            AppProtocol::Unspecified,
            Duration::from_millis(20),
        )
        .await
        .unwrap();
        assert_eq!((p, prefix.len()), (Protocol::Tcp, 0));
    }
}

//! A hand-made HTTP/2 client for attack tests: frames are written byte by
//! byte (RFC 9113 §4.1), header blocks with HPACK literals (RFC 7541 §6),
//! so a test can send what no well-behaved library would.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_HEADERS: u8 = 0x4;

pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: 9-byte header, then the payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    assert!(len < 1 << 24, "frame payload too long");
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn ping(data: u64) -> Vec<u8> {
    frame(PING, 0, 0, &data.to_be_bytes())
}

pub fn settings() -> Vec<u8> {
    frame(SETTINGS, 0, 0, &[])
}

/// An HPACK integer with an `n`-bit prefix, the high bits of the first
/// byte set to `flags` (§5.1).
fn integer(out: &mut Vec<u8>, flags: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 0, 7, s.len()); // not Huffman-coded
    out.extend_from_slice(s);
}

/// A literal header field, not added to the table (§6.2.2).
pub fn literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x00);
    string(out, name.as_bytes());
    string(out, value);
}

/// A literal header field added to the dynamic table (§6.2.1).
pub fn literal_indexed(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x40);
    string(out, name.as_bytes());
    string(out, value);
}

/// A reference to table entry `index` (§6.1); 62 is the newest dynamic one.
pub fn indexed(out: &mut Vec<u8>, index: usize) {
    integer(out, 0x80, 7, index);
}

/// The header block of `CONNECT authority`.
pub fn connect_block(authority: &str) -> Vec<u8> {
    let mut b = Vec::new();
    literal(&mut b, ":method", b"CONNECT");
    literal(&mut b, ":authority", authority.as_bytes());
    b
}

/// A frame as read back.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(b.try_into().ok()?))
    }
}

/// What the server sent, read until it closed (or the reader was dropped).
#[derive(Debug, Default)]
pub struct Seen {
    pub frames: Vec<Frame>,
    /// The connection ended (EOF or reset) while reading.
    pub closed: bool,
}

impl Seen {
    pub fn goaway(&self) -> Option<u32> {
        self.frames
            .iter()
            .filter(|f| f.kind == GOAWAY)
            .filter_map(Frame::error_code)
            .find(|c| *c != 0)
            .or_else(|| {
                self.frames
                    .iter()
                    .find(|f| f.kind == GOAWAY)
                    .and_then(Frame::error_code)
            })
    }

    /// Streams the server answered with HEADERS (any status).
    pub fn answered(&self) -> usize {
        self.frames.iter().filter(|f| f.kind == HEADERS).count()
    }
}

/// A raw connection: the preface and an empty SETTINGS are sent at once.
pub struct Attacker {
    pub write: OwnedWriteHalf,
    read: Option<OwnedReadHalf>,
}

impl Attacker {
    pub async fn connect(server: SocketAddr) -> Self {
        let tcp = TcpStream::connect(server).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (read, mut write) = tcp.into_split();
        write.write_all(PREFACE).await.unwrap();
        write.write_all(&settings()).await.unwrap();
        Self {
            write,
            read: Some(read),
        }
    }

    /// Reads frames in the background until the server closes, answering
    /// nothing (SETTINGS are acknowledged by [`Self::ack_settings`] only).
    pub fn read_in_background(&mut self) -> tokio::task::JoinHandle<Seen> {
        let mut read = self.read.take().expect("read once");
        tokio::spawn(async move {
            let mut seen = Seen::default();
            loop {
                let mut head = [0u8; 9];
                if read.read_exact(&mut head).await.is_err() {
                    seen.closed = true;
                    return seen;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0; len];
                if read.read_exact(&mut payload).await.is_err() {
                    seen.closed = true;
                    return seen;
                }
                seen.frames.push(Frame {
                    kind: head[3],
                    stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                    payload,
                });
            }
        })
    }

    /// Keeps the read half without ever reading: the peer's writes back up.
    pub fn never_read(&mut self) -> OwnedReadHalf {
        self.read.take().expect("read once")
    }

    /// Writes `bytes`; `false` once the server has closed or stopped
    /// reading for `patience`.
    pub async fn send(&mut self, bytes: &[u8], patience: Duration) -> bool {
        matches!(
            tokio::time::timeout(patience, self.write.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }
}

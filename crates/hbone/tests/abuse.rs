//! The HBONE server against hostile HTTP/2 peers (reliability.md §5.6,
//! H2–H4): Rapid Reset, header bombs and flow-control abuse, written frame
//! by frame. Each attack must end in a bounded amount of work and memory,
//! reach no handler it should not, and leave the server serving others.
//!
//! The attacks run over plain TCP: TLS sits below HTTP/2 and changes
//! nothing here. Tests run one at a time, since each measures the peak
//! memory of this process.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use mesh_hbone::H2Config;
use mesh_hbone::client::ConnectRequest;
use mesh_hbone::server::InboundConnect;
use support::wire::{self, Attacker};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const MIB: u64 = 1024 * 1024;
/// reliability.md: an attack may grow memory by less than this.
const MEMORY_BOUND: u64 = 32 * MIB;

/// What the server's handler does with a CONNECT.
#[derive(Clone, Copy)]
enum Answer {
    /// As ztunnel does: connect to the application, then answer 200 and
    /// carry bytes both ways.
    ViaApp(SocketAddr),
    /// Answer 200 and write 64 MiB toward the client.
    Firehose,
    /// Take two seconds to answer, as a slow application would.
    Slow,
}

struct Server {
    addr: SocketAddr,
    /// CONNECTs that reached the handler.
    handled: Arc<AtomicUsize>,
    /// How each connection's `serve` ended, and when.
    ended: mpsc::UnboundedReceiver<(Instant, Result<(), String>)>,
}

async fn server(config: H2Config, answer: Answer) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let (tx, ended) = mpsc::unbounded_channel();
    let counter = handled.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (config, counter, tx) = (config.clone(), counter.clone(), tx.clone());
            tokio::spawn(async move {
                let result = mesh_hbone::server::serve(
                    tcp,
                    &config,
                    std::future::pending(),
                    |connect: InboundConnect| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(handle(connect, answer));
                    },
                )
                .await;
                let _ = tx.send((Instant::now(), result.map_err(|e| e.to_string())));
            });
        }
    });
    Server {
        addr,
        handled,
        ended,
    }
}

async fn handle(connect: InboundConnect, answer: Answer) {
    match answer {
        Answer::ViaApp(app) => {
            let Ok(mut app) = TcpStream::connect(app).await else {
                return connect.reject(http::StatusCode::SERVICE_UNAVAILABLE);
            };
            if let Ok(mut stream) = connect.accept(HeaderMap::new()) {
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut app).await;
            }
        }
        Answer::Slow => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            connect.reject(http::StatusCode::SERVICE_UNAVAILABLE);
        }
        Answer::Firehose => {
            if let Ok(mut stream) = connect.accept(HeaderMap::new()) {
                let chunk = vec![0u8; 64 * 1024];
                for _ in 0..1024 {
                    if AsyncWriteExt::write_all(&mut stream, &chunk).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// An application that counts connections and echoes.
async fn app() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, accepted)
}

/// A well-behaved client: one CONNECT, one echoed line.
async fn good_client(server: SocketAddr, app: SocketAddr) -> anyhow::Result<()> {
    let attempt = async {
        let tcp = TcpStream::connect(server).await?;
        let conn = mesh_hbone::client::h2_handshake(tcp, server, &H2Config::default()).await?;
        let (mut send, mut recv) = conn
            .connect(&ConnectRequest {
                authority: app.to_string(),
                headers: Default::default(),
            })
            .await?;
        send.send_data(bytes::Bytes::from_static(b"hello\n"), false)?;
        let got = recv.data().await.transpose()?.unwrap_or_default();
        anyhow::ensure!(&got[..] == b"hello\n", "echoed {got:?}");
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt).await?
}

/// This process's memory, and the most it reached since [`reset_peak`].
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// Resets the peak (VmHWM) to the current RSS and returns it, in bytes.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    status_kib("VmRSS") * 1024
}

fn peak_growth(base: u64) -> u64 {
    (status_kib("VmHWM") * 1024).saturating_sub(base)
}

/// The frames of a header block too long for one frame: HEADERS, then
/// CONTINUATIONs of at most 16 KiB (the default frame size); the last one
/// ends the headers unless `end` is false.
fn header_block(stream: u32, block: &[u8], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let flags = if last && end { wire::END_HEADERS } else { 0 };
        let kind = if i == 0 {
            wire::HEADERS
        } else {
            wire::CONTINUATION
        };
        out.extend(wire::frame(kind, flags, stream, chunk));
    }
    out
}

/// H2: HEADERS then RST_STREAM, ten thousand times on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off_with_enhance_your_calm_after_bounded_work() {
    let _serial = SERIAL.lock().await;
    let (app, app_hits) = app().await;
    let s = server(H2Config::default(), Answer::ViaApp(app)).await;
    let base = reset_peak();

    let mut attacker = Attacker::connect(s.addr).await;
    let seen = attacker.read_in_background();
    let block = wire::connect_block(&app.to_string());
    let mut sent = 0;
    'attack: for batch in 0..100u32 {
        let mut bytes = Vec::new();
        for i in 0..100u32 {
            let id = 2 * (batch * 100 + i) + 1;
            bytes.extend(wire::frame(wire::HEADERS, wire::END_HEADERS, id, &block));
            bytes.extend(wire::rst_stream(id, wire::CANCEL));
        }
        if !attacker.send(&bytes, Duration::from_secs(5)).await {
            break 'attack;
        }
        sent += 100;
    }
    // Others are still served while the attacker's connection is cut.
    good_client(s.addr, app)
        .await
        .expect("a good client after the attack");
    drop(attacker);
    let seen = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .expect("the server did not close the attacker's connection")
        .unwrap();

    assert_eq!(
        seen.goaway(),
        Some(wire::ENHANCE_YOUR_CALM),
        "GOAWAY after {sent} reset streams: {:?}",
        seen.frames.iter().map(|f| f.kind).collect::<Vec<_>>()
    );
    let (handled, hits) = (
        s.handled.load(Ordering::SeqCst),
        app_hits.load(Ordering::SeqCst),
    );
    // Bounded work: a few hundred streams at most reached the handler and
    // the application, not the ten thousand sent.
    assert!(
        handled <= 400 && hits <= 400,
        "{handled} streams reached the handler and {hits} the application ({sent} sent)"
    );
    let grown = peak_growth(base);
    eprintln!(
        "rapid reset: {sent} streams sent, {handled} handled, {hits} reached the app, \
         peak memory +{} KiB",
        grown / 1024
    );
    assert!(grown < MEMORY_BOUND, "memory grew by {} MiB", grown / MIB);
}

/// H2, the slower form: each stream is reset only once the handler has it,
/// too late for h2 to count it, while the handler still works on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_after_reaching_the_handler_are_cut_off_too() {
    let _serial = SERIAL.lock().await;
    let config = H2Config::default();
    let s = server(config.clone(), Answer::Slow).await;
    let mut attacker = Attacker::connect(s.addr).await;
    let seen = attacker.read_in_background();
    let block = wire::connect_block("10.0.0.1:80");
    let mut id = 1;
    for _ in 0..30 {
        let (mut heads, mut resets) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            heads.extend(wire::frame(wire::HEADERS, wire::END_HEADERS, id, &block));
            resets.extend(wire::rst_stream(id, wire::CANCEL));
            id += 2;
        }
        if !attacker.send(&heads, Duration::from_secs(5)).await {
            break;
        }
        // Long enough for the server to hand every stream over.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !attacker.send(&resets, Duration::from_secs(5)).await {
            break;
        }
    }
    drop(attacker);
    let seen = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .expect("the server did not close the attacker's connection")
        .unwrap();
    let handled = s.handled.load(Ordering::SeqCst);
    eprintln!(
        "resets after hand-over: {} streams sent, {handled} handled",
        id / 2
    );
    assert_eq!(seen.goaway(), Some(wire::ENHANCE_YOUR_CALM));
    assert!(
        handled <= config.server_max_concurrent_streams as usize,
        "{handled} streams reached the handler"
    );
}

/// H3: header blocks that decode to far more than the 64 KiB allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_bombs_reach_no_handler_and_memory_stays_bounded() {
    let _serial = SERIAL.lock().await;
    let (app, _) = app().await;
    let s = server(H2Config::default(), Answer::ViaApp(app)).await;
    let authority = app.to_string();

    let mut bombs: Vec<(&str, Vec<u8>)> = Vec::new();
    // A CONTINUATION flood: 32 MiB of headers that never end.
    let mut flood = wire::connect_block(&authority);
    while flood.len() < 32 * MIB as usize {
        wire::literal(&mut flood, "x-pad", &[b'a'; 100]);
    }
    bombs.push(("a CONTINUATION flood", header_block(1, &flood, false)));
    // HPACK amplification: a 4,000-byte entry named 20,000 times, one byte
    // each: 20 KB on the wire, 80 MB decoded.
    let mut amplified = wire::connect_block(&authority);
    wire::literal_indexed(&mut amplified, "x-big", &[b'b'; 4000]);
    for _ in 0..20_000 {
        wire::indexed(&mut amplified, 62);
    }
    bombs.push(("HPACK amplification", header_block(1, &amplified, true)));
    // 1 MB of cookie crumbs.
    let mut crumbs = wire::connect_block(&authority);
    for i in 0..100_000 {
        wire::literal(&mut crumbs, "cookie", format!("c{i}=1").as_bytes());
    }
    bombs.push(("cookie crumbs", header_block(1, &crumbs, true)));
    // One header over the limit.
    let mut big = wire::connect_block(&authority);
    wire::literal(&mut big, "x-big", &[b'c'; 70 * 1024]);
    bombs.push(("a 70 KiB header", header_block(1, &big, true)));

    for (what, bytes) in bombs {
        let base = reset_peak();
        let mut attacker = Attacker::connect(s.addr).await;
        let seen = attacker.read_in_background();
        let complete = attacker.send(&bytes, Duration::from_secs(5)).await;
        // Whatever the server answers comes within a second; then let go.
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(attacker);
        let seen = tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection was not closed"))
            .unwrap();
        let refused = seen.goaway().is_some()
            || seen.frames.iter().any(|f| f.kind == wire::RST_STREAM)
            || seen.answered() > 0;
        assert!(
            refused || !complete,
            "{what}: neither refused nor cut short: {:?}",
            seen.frames.iter().map(|f| f.kind).collect::<Vec<_>>()
        );
        assert_eq!(
            s.handled.load(Ordering::SeqCst),
            0,
            "{what} reached the handler"
        );
        let grown = peak_growth(base);
        eprintln!(
            "{what}: sent in full {complete}, GOAWAY {:?}, RST_STREAM {:?}, answers {}, \
             peak memory +{} KiB",
            seen.goaway(),
            seen.frames
                .iter()
                .find(|f| f.kind == wire::RST_STREAM)
                .and_then(wire::Frame::error_code),
            seen.answered(),
            grown / 1024
        );
        assert!(
            grown < MEMORY_BOUND,
            "{what}: memory grew by {} MiB",
            grown / MIB
        );
    }
    good_client(s.addr, app)
        .await
        .expect("a good client after the bombs");
}

/// H4: empty DATA frames by the hundred thousand, a peer that never reads
/// what it asked for, a PING and SETTINGS flood, and invalid frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_abuse_is_bounded_and_stuck_peers_are_dropped() {
    let _serial = SERIAL.lock().await;
    let (app, _) = app().await;
    // Short keepalive so that a peer that stops reading is found quickly.
    let config = H2Config {
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(2),
        ..H2Config::default()
    };
    let mut s = server(config.clone(), Answer::ViaApp(app)).await;
    let authority = app.to_string();

    // Empty DATA frames on an open stream: each costs the server a little
    // work and no memory.
    let base = reset_peak();
    let mut attacker = Attacker::connect(s.addr).await;
    let seen = attacker.read_in_background();
    let open = wire::frame(
        wire::HEADERS,
        wire::END_HEADERS,
        1,
        &wire::connect_block(&authority),
    );
    assert!(attacker.send(&open, Duration::from_secs(5)).await);
    let empty: Vec<u8> = (0..10_000)
        .flat_map(|_| wire::frame(wire::DATA, 0, 1, &[]))
        .collect();
    for _ in 0..20 {
        if !attacker.send(&empty, Duration::from_secs(5)).await {
            break;
        }
    }
    bounded("200,000 empty DATA frames", base);
    drop(attacker);
    let _ = tokio::time::timeout(Duration::from_secs(10), seen).await;

    // Invalid frames: a zero WINDOW_UPDATE and DATA on stream 0 are
    // connection errors, answered by GOAWAY.
    for (what, bad) in [
        (
            "a zero WINDOW_UPDATE",
            wire::frame(wire::WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()),
        ),
        ("DATA on stream 0", wire::frame(wire::DATA, 0, 0, b"x")),
    ] {
        let mut attacker = Attacker::connect(s.addr).await;
        let seen = attacker.read_in_background();
        attacker.send(&bad, Duration::from_secs(5)).await;
        let seen = tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection was not closed"))
            .unwrap();
        assert!(
            seen.goaway().is_some_and(|c| c != 0),
            "{what}: no GOAWAY with an error"
        );
    }
    // Stuck peers, dropped by the unanswered keepalive PING; memory stays
    // bounded by flow control and the send buffer.
    let limit = config.keepalive_interval + config.keepalive_timeout + Duration::from_secs(5);
    // One asked for 64 MiB and never reads.
    let mut firehose = server(config.clone(), Answer::Firehose).await;
    let base = reset_peak();
    let mut attacker = Attacker::connect(firehose.addr).await;
    let _unread = attacker.never_read();
    assert!(attacker.send(&open, Duration::from_secs(5)).await);
    dropped_within("a peer that never reads", &mut firehose, limit).await;
    bounded("a peer that never reads", base);
    drop(attacker);
    // One floods PING and SETTINGS and never reads the answers.
    while s.ended.try_recv().is_ok() {}
    let base = reset_peak();
    let mut attacker = Attacker::connect(s.addr).await;
    let _unread = attacker.never_read();
    let flood: Vec<u8> = (0..10_000u64)
        .flat_map(|i| [wire::ping(i), wire::settings()].concat())
        .collect();
    for _ in 0..20 {
        if !attacker.send(&flood, Duration::from_secs(2)).await {
            break;
        }
    }
    dropped_within("a PING and SETTINGS flood", &mut s, limit).await;
    bounded("a PING and SETTINGS flood", base);
    drop(attacker);

    good_client(s.addr, app)
        .await
        .expect("a good client after the abuse");
}

/// Waits until one of `server`'s connections has ended.
async fn dropped_within(what: &str, server: &mut Server, limit: Duration) {
    let ended = tokio::time::timeout(limit, server.ended.recv()).await;
    assert!(
        matches!(ended, Ok(Some(_))),
        "{what}: the server kept the connection for {limit:?}"
    );
}

fn bounded(what: &str, base: u64) {
    let grown = peak_growth(base);
    eprintln!("{what}: peak memory +{} KiB", grown / 1024);
    assert!(
        grown < MEMORY_BOUND,
        "{what}: memory grew by {} MiB",
        grown / MIB
    );
}

/// An empty DATA frame is legal mid-stream; it must not read as the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_data_frame_is_not_the_end_of_the_stream() {
    let _serial = SERIAL.lock().await;
    let (app, _) = app().await;
    let s = server(H2Config::default(), Answer::ViaApp(app)).await;
    let mut attacker = Attacker::connect(s.addr).await;
    let seen = attacker.read_in_background();
    let mut bytes = wire::frame(
        wire::HEADERS,
        wire::END_HEADERS,
        1,
        &wire::connect_block(&app.to_string()),
    );
    bytes.extend(wire::frame(wire::DATA, 0, 1, &[]));
    bytes.extend(wire::frame(wire::DATA, 0, 1, b"after the empty frame\n"));
    assert!(attacker.send(&bytes, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(attacker);
    let seen = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .unwrap()
        .unwrap();
    let echoed: Vec<u8> = seen
        .frames
        .iter()
        .filter(|f| f.kind == wire::DATA && f.stream == 1)
        .flat_map(|f| f.payload.clone())
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&echoed),
        "after the empty frame\n",
        "the application's echo"
    );
}

/// Clients that connect and never send the HTTP/2 preface (as after a TLS
/// handshake, which sits below and changes nothing here) are all closed
/// within the handshake bound, while a good client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_send_the_preface_are_closed_within_the_handshake_bound() {
    let _serial = SERIAL.lock().await;
    let (app, _) = app().await;
    let config = H2Config {
        handshake_timeout: Duration::from_secs(1),
        ..H2Config::default()
    };
    let mut s = server(config.clone(), Answer::ViaApp(app)).await;
    const STALLED: usize = 300;
    let began = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(TcpStream::connect(s.addr).await.unwrap());
    }
    good_client(s.addr, app)
        .await
        .expect("a good client beside the stalled ones");
    // The good client's own connection ends when it is dropped: count the
    // stalled ones by their error.
    let bound = config.handshake_timeout + Duration::from_secs(3);
    let mut closed = 0;
    while closed < STALLED {
        let left = bound.saturating_sub(began.elapsed());
        match tokio::time::timeout(left, s.ended.recv()).await {
            Ok(Some((_, Err(e)))) if e.contains("no HTTP/2 preface") => closed += 1,
            Ok(Some(_)) => {}
            _ => panic!("{closed} of {STALLED} stalled clients closed within {bound:?}"),
        }
    }
    // The server closed them: a stalled socket reads the server's SETTINGS,
    // then its end.
    let mut seen = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::AsyncReadExt::read_to_end(&mut stalled[0], &mut seen),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the stalled socket is still open after {} bytes",
        seen.len()
    );
}

/// H5: a client that opens more streams than `max_concurrent_streams`
/// gets REFUSED_STREAM for each one over the limit, and nothing else
/// happens to it or to anyone: its streams within the limit are served,
/// the connection stays up, other clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_concurrency_limit_are_refused_one_by_one() {
    let _serial = SERIAL.lock().await;
    let (app, app_hits) = app().await;
    let config = H2Config::default();
    let limit = config.server_max_concurrent_streams as usize;
    const EXCESS: usize = 20;
    let s = server(config, Answer::ViaApp(app)).await;

    let mut client = Attacker::connect(s.addr).await;
    let seen = client.read_in_background();
    let block = wire::connect_block(&app.to_string());
    let mut bytes = Vec::new();
    for i in 0..(limit + EXCESS) as u32 {
        // Each stream stays open: the client never ends its side.
        bytes.extend(wire::frame(
            wire::HEADERS,
            wire::END_HEADERS,
            2 * i + 1,
            &block,
        ));
    }
    assert!(client.send(&bytes, Duration::from_secs(5)).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app_hits.load(Ordering::SeqCst) < limit && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    good_client(s.addr, app)
        .await
        .expect("a good client beside the one over the limit");
    // Still up: the last stream within the limit carries bytes.
    let last = 2 * (limit as u32 - 1) + 1;
    assert!(
        client
            .send(
                &wire::frame(wire::DATA, 0, last, b"still here\n"),
                Duration::from_secs(5)
            )
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);
    let seen = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .expect("the connection ends once the client closes")
        .unwrap();

    let refused: Vec<u32> = seen
        .frames
        .iter()
        .filter(|f| f.kind == wire::RST_STREAM && f.error_code() == Some(wire::REFUSED_STREAM))
        .map(|f| f.stream)
        .collect();
    let first_over = 2 * limit as u32 + 1;
    assert_eq!(refused.len(), EXCESS, "refused streams: {refused:?}");
    assert!(refused.iter().all(|id| *id >= first_over), "{refused:?}");
    assert_eq!(seen.answered(), limit, "streams answered");
    assert_eq!(
        s.handled.load(Ordering::SeqCst),
        limit + 1,
        "handled (with the good client)"
    );
    assert!(
        matches!(seen.goaway(), None | Some(0)),
        "no error GOAWAY: {:?}",
        seen.goaway()
    );
    let echoed: Vec<u8> = seen
        .frames
        .iter()
        .filter(|f| f.kind == wire::DATA && f.stream == last)
        .flat_map(|f| f.payload.clone())
        .collect();
    assert_eq!(echoed, b"still here\n");
}

//! reliability.md H8: HTTP/1.1 request smuggling at the waypoint. Each
//! request is written byte by byte into a CONNECT stream to `web` through
//! a waypoint in process; `web` counts what reaches it. An ambiguous or
//! malformed request gets a 400 and the connection closes, so what
//! follows it on the connection is never read as a second request.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use integration::Mesh;
use shop::Shop;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod shop;

/// `web`: records each request's method and path, answers 200.
async fn serve_web(listener: TcpListener, seen: Arc<Mutex<Vec<String>>>) {
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let seen = seen.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let seen = seen.clone();
                async move {
                    let mut line = format!("{} {}", req.method(), req.uri().path());
                    if req.headers().contains_key(http::header::CONTENT_LENGTH) {
                        line.push_str(" with content-length");
                    }
                    // The body is read to its end (or its error).
                    let _ = req.into_body().collect().await;
                    seen.lock().unwrap().push(line);
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"web"))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// What came back on one connection: the bytes, and whether the waypoint
/// closed it (the client never closes its side).
struct Answer {
    text: String,
    closed: bool,
}

impl Answer {
    fn status(&self) -> Option<u16> {
        self.text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }
}

async fn send_raw(shop: &Shop, raw: &[u8]) -> Answer {
    let mut stream = shop.stream_to_web().await;
    AsyncWriteExt::write_all(&mut stream, raw).await.unwrap();
    stream.flush().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    Answer {
        text: String::from_utf8_lossy(&got).into_owned(),
        closed,
    }
}

/// A waypoint in front of a counting `web`.
struct Bench {
    _mesh: Mesh,
    shop: Shop,
    /// What reached `web`, since the last case.
    seen: Arc<Mutex<Vec<String>>>,
}

impl Bench {
    async fn start() -> Self {
        integration::init_logging();
        let mesh = Mesh::start().await;
        let web = TcpListener::bind(shop::web_addr(&mesh)).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(serve_web(web, seen.clone()));
        let shop = Shop::start(&mesh).await;
        Self {
            _mesh: mesh,
            shop,
            seen,
        }
    }

    /// Sends each case on its own connection; returns the cases whose
    /// answer and upstream view `ok` refuses, described.
    async fn failures(
        &self,
        cases: Vec<(&str, String)>,
        ok: impl Fn(&Answer, &[String]) -> bool,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        for (case, raw) in cases {
            self.seen.lock().unwrap().clear();
            let answer = send_raw(&self.shop, raw.as_bytes()).await;
            let upstream = self.seen.lock().unwrap().clone();
            let described = format!(
                "{case}: status {:?}, closed {}, upstream saw {upstream:?}",
                answer.status(),
                answer.closed
            );
            eprintln!("{described}");
            if !ok(&answer, &upstream) {
                failures.push(described);
            }
        }
        failures
    }
}

const HOST: &str = "Host: web.shop.svc.cluster.local\r\n";
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: web.shop.svc.cluster.local\r\n\r\n";

/// Content-Length and Transfer-Encoding together.
fn both_framings() -> Vec<(&'static str, String)> {
    let chunked_then_smuggled = format!("0\r\n\r\n{SMUGGLED}");
    vec![
        (
            "Content-Length and Transfer-Encoding",
            format!(
                "POST /cl-te HTTP/1.1\r\n{HOST}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "Transfer-Encoding and Content-Length",
            format!(
                "POST /te-cl HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
    ]
}

/// Requests whose head is ambiguous or malformed: refused before anything
/// is forwarded.
fn head_cases() -> Vec<(&'static str, String)> {
    let chunked_then_smuggled = format!("0\r\n\r\n{SMUGGLED}");
    vec![
        (
            "Transfer-Encoding not ending in chunked",
            format!(
                "POST /te-identity HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked, identity\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "Transfer-Encoding xchunked",
            format!(
                "POST /xchunked HTTP/1.1\r\n{HOST}Transfer-Encoding: xchunked\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "Transfer-Encoding twice, the second not chunked",
            format!(
                "POST /te-twice HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "Transfer-Encoding with a space before the colon",
            format!(
                "POST /te-space HTTP/1.1\r\n{HOST}Transfer-Encoding : chunked\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "Transfer-Encoding with a vertical tab",
            format!(
                "POST /te-vtab HTTP/1.1\r\n{HOST}Transfer-Encoding:\x0bchunked\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!(
                "POST /te-http10 HTTP/1.0\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST /cl-cl HTTP/1.1\r\n{HOST}Content-Length: 0\r\nContent-Length: 61\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "a Content-Length list",
            format!("POST /cl-list HTTP/1.1\r\n{HOST}Content-Length: 0, 61\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a signed Content-Length",
            format!("POST /cl-plus HTTP/1.1\r\n{HOST}Content-Length: +61\r\n\r\n{SMUGGLED}"),
        ),
        (
            "an obs-fold line",
            format!("GET /obs-fold HTTP/1.1\r\n{HOST}X-Folded: one\r\n two\r\n\r\n{SMUGGLED}"),
        ),
        (
            "two Host headers",
            format!("GET /two-hosts HTTP/1.1\r\n{HOST}Host: other\r\n\r\n{SMUGGLED}"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_requests_get_400_and_a_close_and_nothing_behind_them_is_read() {
    let bench = Bench::start().await;

    // The connection works, and stays open, for a request that is clean.
    let clean = send_raw(
        &bench.shop,
        format!("GET /clean HTTP/1.1\r\n{HOST}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(clean.status(), Some(200), "{}", clean.text);
    assert!(!clean.closed, "a clean request keeps the connection");
    assert_eq!(*bench.seen.lock().unwrap(), ["GET /clean"]);

    let mut failures = bench
        .failures(head_cases(), |answer, upstream| {
            answer.status() == Some(400) && answer.closed && upstream.is_empty()
        })
        .await;
    // Both framings: hyper reads the body as chunked (Transfer-Encoding
    // wins, RFC 9112 §6.3), forwards the request without the
    // Content-Length, and closes the connection after answering, so what
    // follows is never read. Envoy answers these with 400 instead.
    failures.extend(
        bench
            .failures(both_framings(), |answer, upstream| {
                answer.closed && upstream.len() == 1 && !upstream[0].contains("content-length")
            })
            .await,
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A malformed chunked body (bare LFs, a size past 64 bits, more data than
/// the size): the head was fine and went upstream, the body is not. At
/// most that one request reaches `web`, cut short, and what follows it on
/// the connection never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_ends_the_connection_and_nothing_behind_it_is_read() {
    let bench = Bench::start().await;
    let cases = vec![
        (
            "bare-LF chunk lines",
            format!(
                "POST /bare-lf HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n{SMUGGLED}"
            ),
        ),
        (
            "a chunk size past 64 bits",
            format!(
                "POST /huge-chunk HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nx\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "a chunk longer than its size",
            format!(
                "POST /long-chunk HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n1\r\nxyz\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
    ];
    // The head has gone upstream by the time the body turns out bad: the
    // answer is the waypoint's 503 (Envoy's would be 400).
    let failures = bench
        .failures(cases, |answer, upstream| {
            answer.status() == Some(503)
                && answer.closed
                && upstream.len() <= 1
                && !upstream.iter().any(|l| l.contains("smuggled"))
        })
        .await;
    assert!(failures.is_empty(), "{failures:#?}");
}

//! The waypoint in process, fed by istiod-lite: the CONNECT streams of one
//! pooled HBONE connection are each their own task, so their requests are
//! served on every worker thread, not on the thread that drives the
//! connection.
//!
//! The proof is the waypoint's own access log: a tracing layer records the
//! thread each `request complete` line was written on. One test per file,
//! because the layer must be the process's global subscriber.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use integration::Mesh;
use mesh_hbone::H2Stream;
use shop::Shop;
use tokio::net::TcpListener;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

mod shop;

/// What the layer saw: access-log lines per thread, inbound connections.
#[derive(Default)]
struct Seen {
    requests_by_thread: HashMap<ThreadId, usize>,
    hbone_connections: usize,
}

struct Recorder(Arc<Mutex<Seen>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        let mut seen = self.0.lock().unwrap();
        match m.0.as_str() {
            "request complete" if event.metadata().target() == "access" => {
                *seen
                    .requests_by_thread
                    .entry(std::thread::current().id())
                    .or_default() += 1;
            }
            "HBONE connection established" => seen.hbone_connections += 1,
            _ => {}
        }
    }
}

const CONCURRENT: usize = 48;
const ROUNDS: usize = 5;

#[test]
fn streams_of_one_hbone_connection_are_served_on_every_worker_thread() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(Recorder(seen.clone())),
    )
    .expect("the only subscriber in this test binary");
    let workers = 2;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(seen, workers));
}

async fn run(seen: Arc<Mutex<Seen>>, workers: usize) {
    let mesh = Mesh::start().await;
    let web = TcpListener::bind(shop::web_addr(&mesh)).await.unwrap();
    tokio::spawn(serve_web(web));
    let shop = Shop::start(&mesh).await;
    for _ in 0..ROUNDS {
        let requests = (0..CONCURRENT).map(|_| {
            let (pool, key) = (shop.pool.clone(), shop.key.clone());
            async move { get_through(shop::stream_to_web(&pool, &key).await).await }
        });
        for r in futures::future::join_all(requests.map(tokio::spawn)).await {
            assert_eq!(r.unwrap(), "web");
        }
    }

    shop.waypoint.shutdown().await;
    let seen = seen.lock().unwrap();
    let total: usize = seen.requests_by_thread.values().sum();
    assert_eq!(
        total,
        CONCURRENT * ROUNDS,
        "every request is in the access log"
    );
    assert_eq!(
        seen.hbone_connections, 1,
        "all streams shared one pooled HBONE connection"
    );
    assert_eq!(
        seen.requests_by_thread.len(),
        workers,
        "requests were served on {} of {workers} worker threads: {:?}",
        seen.requests_by_thread.len(),
        seen.requests_by_thread
    );
}

/// One HTTP/1.1 request on its own CONNECT stream to `web`'s VIP.
async fn get_through(stream: H2Stream) -> String {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header(http::header::HOST, "web.shop.svc.cluster.local")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn serve_web(listener: TcpListener) {
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let svc = service_fn(|_req| async {
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"web"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

//! The plain HTTP/1.1 endpoints a process serves to operators and probes:
//! admin (15000), stats (15020), readiness (15021). Each request is answered
//! synchronously from in-memory state; the listener stops at the drain.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::drain::DrainWatcher;

pub type Body = Full<Bytes>;

/// How long a client of an endpoint has to send a request's headers,
/// including the first request after it connects.
pub const REQUEST_HEADERS_WAIT: Duration = Duration::from_secs(10);

/// A response with a text body.
pub fn text(code: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `code` with its reason phrase as the body (`404 Not Found`).
pub fn status(code: StatusCode) -> Response<Body> {
    text(code, format!("{code}\n"))
}

/// A response whose body is already-encoded JSON.
pub fn json(body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The value of query parameter `name` (percent-decoding `%XX` and `+`).
pub fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    query_value(req.uri().query()?, name)
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An endpoint's address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "binding the {what} endpoint on {addr} (set {setting} to another address, or to none): {source}"
)]
pub struct BindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    pub setting: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr`; `[::]` falls back to `0.0.0.0` where IPv6 is off.
pub async fn bind(
    what: &'static str,
    addr: SocketAddr,
    setting: &'static str,
) -> Result<TcpListener, BindError> {
    let error = |source| BindError {
        what,
        addr,
        setting,
        source,
    };
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
            TcpListener::bind(v4).await.map_err(|_| error(e))
        }
        Err(e) => Err(error(e)),
    }
}

/// Serves `handler` on `listener` until the drain starts. A request still
/// being answered then finishes on its own (answers are immediate).
pub async fn serve<H>(name: &'static str, listener: TcpListener, drain: DrainWatcher, handler: H)
where
    H: Fn(&Request<Incoming>) -> Response<Body> + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = drain.signaled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(endpoint = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = handler(&req);
                async move { Ok::<_, Infallible>(response) }
            });
            // A client that connects and says nothing, or dribbles its
            // headers, is closed after REQUEST_HEADERS_WAIT.
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_HEADERS_WAIT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                if e.is_timeout() {
                    mesh_core::wait::Wait::RequestHeaders.timed_out();
                    tracing::warn!(endpoint = name, after = ?REQUEST_HEADERS_WAIT, "no request headers in time; connection closed");
                } else {
                    tracing::debug!(endpoint = name, error = %e, "connection ended");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_value("level=access%3Adebug&x", "level").as_deref(),
            Some("access:debug")
        );
        assert_eq!(query_value("reset", "reset").as_deref(), Some(""));
        assert_eq!(query_value("a=1", "b"), None);
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}

//! Fetching the key sets named by `jwksUri`, as istiod does by default.
//!
//! A RequestAuthentication rule may give its keys inline (`jwks`) or by URL
//! (`jwksUri`). Waypoints only ever see inline keys: the control plane
//! fetches each URL, keeps the result, refreshes it every
//! `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`, and the translation copies the
//! latest good key set into the rule ([`inline`]). Until a URL has been
//! fetched once, the rule reaches the waypoint without keys, and tokens of
//! that issuer fail verification (401): fail closed. A failed refresh keeps
//! the last good keys.
//!
//! Only `http` and `https` URLs are fetched; `https` is verified against the
//! Mozilla root set. Responses over [`MAX_JWKS_BYTES`], redirects, non-2xx
//! answers and bodies that are not a JSON Web Key Set are errors.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use mesh_runtime::drain::DrainWatcher;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::translate::Translation;

/// The largest key set accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long one fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon a URL that failed is tried again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0:?} is not an http or https URL")]
    Url(String),
    #[error("cannot resolve or connect to {host}: {source}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {host} failed: {source}")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("answered {0} (redirects are not followed)")]
    Status(http::StatusCode),
    #[error("the key set is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JSON Web Key Set: {0}")]
    NotJwks(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The key sets fetched so far: URL → the latest good body.
pub type Snapshot = HashMap<String, String>;

/// Copies the fetched key set into every rule that names only a
/// `jwksUri`, and returns every URL the translation refers to (fetched or
/// not), so the resolver knows what to fetch.
pub fn inline(t: &mut Translation, keys: &Snapshot) -> BTreeSet<String> {
    let mut wanted = BTreeSet::new();
    for config in t.waypoints.values_mut() {
        let services = config.services.iter_mut();
        let lists = std::iter::once(&mut config.request_authentications)
            .chain(services.map(|s| &mut s.request_authentications));
        for list in lists {
            for ra in list.iter_mut() {
                for rule in ra.spec.jwt_rules.iter_mut() {
                    if rule.jwks.is_some() {
                        continue;
                    }
                    let Some(uri) = &rule.jwks_uri else { continue };
                    wanted.insert(uri.clone());
                    rule.jwks = keys.get(uri).cloned();
                }
            }
        }
    }
    wanted
}

struct Entry {
    /// The latest good body, kept across failed refreshes.
    good: Option<String>,
    /// When to fetch next.
    due: Instant,
}

/// Fetches and refreshes the URLs the translation wants. Cheap to clone.
#[derive(Clone)]
pub struct JwksResolver {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    wanted: watch::Sender<BTreeSet<String>>,
    /// Bumped whenever a key set changes; the generator re-translates.
    changed: watch::Sender<u64>,
    refresh: Duration,
}

impl JwksResolver {
    pub fn new(refresh: Duration) -> Self {
        Self {
            entries: Default::default(),
            wanted: watch::Sender::new(BTreeSet::new()),
            changed: watch::Sender::new(0),
            refresh,
        }
    }

    /// The good key sets, by URL.
    pub fn snapshot(&self) -> Snapshot {
        self.lock()
            .iter()
            .filter_map(|(uri, e)| Some((uri.clone(), e.good.clone()?)))
            .collect()
    }

    /// Sets the URLs to keep fetched; others are forgotten.
    pub fn want(&self, uris: BTreeSet<String>) {
        self.wanted.send_if_modified(|w| {
            let differs = *w != uris;
            *w = uris;
            differs
        });
    }

    /// Changes whenever a fetched key set differs from the one before.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Fetches what is wanted and due, until drained.
    pub async fn run(self, drain: DrainWatcher) {
        let mut wanted = self.wanted.subscribe();
        loop {
            let now = Instant::now();
            let uris = wanted.borrow_and_update().clone();
            let due: Vec<String> = {
                let mut entries = self.lock();
                entries.retain(|uri, _| uris.contains(uri));
                uris.iter()
                    .filter(|u| entries.get(*u).is_none_or(|e| e.due <= now))
                    .cloned()
                    .collect()
            };
            let results =
                futures::future::join_all(due.iter().map(|uri| fetch(uri, FETCH_TIMEOUT))).await;
            let mut bumped = false;
            {
                let mut entries = self.lock();
                for (uri, result) in due.into_iter().zip(results) {
                    let entry = entries.entry(uri.clone()).or_insert(Entry {
                        good: None,
                        due: now,
                    });
                    match result {
                        Ok(body) => {
                            if entry.good.as_deref() != Some(&body) {
                                info!(jwks_uri = %uri, "fetched a new JSON Web Key Set");
                                entry.good = Some(body);
                                bumped = true;
                            }
                            entry.due = Instant::now() + self.refresh;
                        }
                        Err(e) => {
                            let keeping = if entry.good.is_some() {
                                "keeping the previous keys"
                            } else {
                                "tokens of this issuer fail verification until it succeeds"
                            };
                            warn!(jwks_uri = %uri, error = %e, "cannot fetch the key set; {keeping}");
                            entry.due = Instant::now() + RETRY_AFTER_FAILURE.min(self.refresh);
                        }
                    }
                }
            }
            if bumped {
                self.changed.send_modify(|n| *n += 1);
            }
            let next = self.lock().values().map(|e| e.due).min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                r = wanted.changed() => if r.is_err() { return },
                _ = drain.signaled() => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Every critical section leaves the map whole.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Fetches one key set and checks that it is one.
pub async fn fetch(uri: &str, timeout: Duration) -> Result<String, FetchError> {
    let body = tokio::time::timeout(timeout, get(uri))
        .await
        .map_err(|_| {
            mesh_core::wait::Wait::JwksFetch.timed_out();
            FetchError::Timeout(timeout)
        })??;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| FetchError::NotJwks("the body is not UTF-8".into()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| FetchError::NotJwks(e.to_string()))?;
    match value.get("keys") {
        Some(serde_json::Value::Array(_)) => Ok(text),
        _ => Err(FetchError::NotJwks("no \"keys\" array".into())),
    }
}

async fn get(uri: &str) -> Result<Bytes, FetchError> {
    let parsed: http::Uri = uri.parse().map_err(|_| FetchError::Url(uri.into()))?;
    let tls = match parsed.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(FetchError::Url(uri.into())),
    };
    let authority = parsed
        .authority()
        .ok_or_else(|| FetchError::Url(uri.into()))?
        .clone();
    let host = authority.host().trim_matches(['[', ']']).to_string();
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| FetchError::Connect {
            host: host.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let request = http::Request::get(parsed.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "istiod-lite")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    if tls {
        let name = ServerName::try_from(host.clone()).map_err(|_| FetchError::Url(uri.into()))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(client_tls()))
            .connect(name, tcp)
            .await
            .map_err(|source| FetchError::Tls { host, source })?;
        exchange(stream, request).await
    } else {
        exchange(tcp, request).await
    }
}

async fn exchange<T>(io: T, request: http::Request<Empty<Bytes>>) -> Result<Bytes, FetchError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |e: hyper::Error| FetchError::Http(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http_err)?;
    tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(http_err)?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status()));
    }
    match Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(FetchError::TooLarge),
        Err(e) => Err(FetchError::Http(e.to_string())),
    }
}

fn client_tls() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[cfg(test)]
mod tests;

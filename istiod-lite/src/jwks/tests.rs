use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mesh_model::waypoint::{BoundService, Named, WaypointConfig};
use mesh_model::{JwtRule, RequestAuthenticationSpec};
use tokio::net::TcpListener;

use super::*;

const KEYS: &str = r#"{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0"}]}"#;
const KEYS_2: &str = r#"{"keys":[{"kty":"oct","kid":"b","k":"c2VjcmV0"}]}"#;

/// An HTTP server on loopback that answers every path with what `answer`
/// holds at the time.
struct Issuer {
    addr: SocketAddr,
    answer: Arc<Mutex<(u16, String)>>,
}

impl Issuer {
    async fn start(status: u16, body: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new((status, body.to_string())));
        let shared = answer.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let (status, body) = shared.lock().unwrap().clone();
                        async move {
                            let mut r = http::Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, answer }
    }

    fn uri(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn set(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }
}

#[tokio::test]
async fn fetches_a_key_set_and_refuses_what_is_not_one() {
    let issuer = Issuer::start(200, KEYS).await;
    let t = Duration::from_secs(2);
    assert_eq!(fetch(&issuer.uri(), t).await.unwrap(), KEYS);

    issuer.set(404, "not here");
    let e = fetch(&issuer.uri(), t).await.unwrap_err();
    assert!(matches!(e, FetchError::Status(s) if s == 404), "{e}");

    issuer.set(200, "<html>login</html>");
    let e = fetch(&issuer.uri(), t).await.unwrap_err();
    assert!(matches!(e, FetchError::NotJwks(_)), "{e}");

    issuer.set(200, r#"{"issuer":"x"}"#);
    let e = fetch(&issuer.uri(), t).await.unwrap_err();
    assert!(e.to_string().contains("no \"keys\" array"), "{e}");

    issuer.set(200, &"x".repeat(MAX_JWKS_BYTES + 1));
    let e = fetch(&issuer.uri(), t).await.unwrap_err();
    assert!(matches!(e, FetchError::TooLarge), "{e}");

    let e = fetch("ftp://issuer.example/keys", t).await.unwrap_err();
    assert!(matches!(e, FetchError::Url(_)), "{e}");
}

#[tokio::test]
async fn an_unreachable_issuer_is_an_error_naming_it() {
    // A port nothing listens on: bind, learn it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = fetch(
        &format!("http://127.0.0.1:{port}/k"),
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, FetchError::Connect { host, .. } if host == "127.0.0.1"),
        "{e}"
    );
}

fn rule(uri: Option<&str>, jwks: Option<&str>) -> JwtRule {
    JwtRule {
        issuer: "https://issuer.example".into(),
        jwks_uri: uri.map(String::from),
        jwks: jwks.map(String::from),
        ..Default::default()
    }
}

fn named(rules: Vec<JwtRule>) -> Named<RequestAuthenticationSpec> {
    Named {
        namespace: "ns".into(),
        name: "ra".into(),
        spec: RequestAuthenticationSpec {
            jwt_rules: rules,
            ..Default::default()
        },
    }
}

#[test]
fn inline_fills_uri_only_rules_from_the_snapshot_and_lists_every_uri() {
    let mut t = Translation::default();
    t.waypoints.insert(
        "ns/waypoint".into(),
        WaypointConfig {
            request_authentications: vec![named(vec![
                rule(Some("https://a/keys"), None),
                rule(None, Some(KEYS_2)),
            ])],
            services: vec![BoundService {
                request_authentications: vec![named(vec![rule(Some("https://b/keys"), None)])],
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    let keys: Snapshot = [("https://a/keys".to_string(), KEYS.to_string())].into();
    let wanted = inline(&mut t, &keys);
    assert_eq!(
        wanted.into_iter().collect::<Vec<_>>(),
        ["https://a/keys", "https://b/keys"]
    );
    let wp = &t.waypoints["ns/waypoint"];
    let top = &wp.request_authentications[0].spec.jwt_rules;
    assert_eq!(top[0].jwks.as_deref(), Some(KEYS));
    assert_eq!(top[1].jwks.as_deref(), Some(KEYS_2), "inline keys stay");
    let svc = &wp.services[0].request_authentications[0].spec.jwt_rules;
    assert_eq!(
        svc[0].jwks, None,
        "not fetched yet: no keys, so tokens fail"
    );
}

#[tokio::test]
async fn the_resolver_fetches_refreshes_and_keeps_good_keys_through_failures() {
    let issuer = Issuer::start(200, KEYS).await;
    let resolver = JwksResolver::new(Duration::from_millis(100));
    let mut changes = resolver.changes();
    let (_trigger, watcher) = mesh_runtime::drain::new();
    tokio::spawn(resolver.clone().run(watcher));
    resolver.want([issuer.uri()].into());

    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("a change after the first fetch")
        .unwrap();
    assert_eq!(resolver.snapshot()[&issuer.uri()], KEYS);

    // The issuer rotates its keys: the next refresh picks them up.
    issuer.set(200, KEYS_2);
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("a change after the rotation")
        .unwrap();
    assert_eq!(resolver.snapshot()[&issuer.uri()], KEYS_2);

    // The issuer breaks: the good keys stay, and nothing changes.
    issuer.set(500, "oops");
    let quiet = tokio::time::timeout(Duration::from_millis(500), changes.changed()).await;
    assert!(quiet.is_err(), "a failed refresh must not change the keys");
    assert_eq!(resolver.snapshot()[&issuer.uri()], KEYS_2);

    // No longer referred to: forgotten.
    resolver.want(Default::default());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(resolver.snapshot().is_empty());
}

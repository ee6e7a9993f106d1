//! HTTP/2 conformance of the HBONE server (reliability.md §5 H1): h2spec,
//! built from its Go module (`cargo xtask cluster build`), against
//! ztunnel's inbound 15008. h2spec cannot present a client certificate, so
//! it speaks h2c to a relay here that opens mutual TLS (a mesh client
//! certificate, ALPN h2) to ztunnel and passes the bytes both ways. Every
//! failing case must be in `h2spec-allowed.txt`, with why (an allowed case
//! may also pass).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use integration::Mesh;
use integration::tls_client::{client_cert, id, mesh_client_config, mesh_roots};
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};

/// Where `cargo xtask cluster build` puts h2spec.
fn h2spec() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/cluster/bin/h2spec");
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask cluster build` builds it from its Go module",
        path.display()
    );
    path
}

/// The cases allowed to fail: `<section id> <why>` per line.
fn allowed() -> BTreeSet<String> {
    include_str!("h2spec-allowed.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// Failing cases in h2spec's JUnit report, as `<package>/<n>` (h2spec's
/// own numbering, e.g. `http2/6.5.3/2`).
fn failures(junit: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut package = String::new();
    let mut n = 0;
    for tag in junit.split('<').skip(1) {
        if let Some(rest) = tag.strip_prefix("testsuite ") {
            package = attribute(rest, "package").unwrap_or_default();
            n = 0;
        } else if tag.starts_with("testcase ") {
            n += 1;
        } else if tag.starts_with("failure") || tag.starts_with("error") {
            out.insert(format!("{package}/{n}"));
        }
    }
    out
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs h2spec from `cargo xtask cluster build`; `cargo xtask cluster test` runs it"]
async fn h2spec_against_the_hbone_server_fails_only_allowed_cases() {
    let h2spec = h2spec();
    let mesh = Mesh::start().await;
    let server = mesh.workload("echo", "echo", 3, "node-b");
    let _z = mesh
        .ztunnel_for("node-b", std::slice::from_ref(&server))
        .await;
    let hbone = SocketAddr::new(server.addresses[0], mesh_hbone::HBONE_PORT);
    let tls = tokio_rustls::TlsConnector::from(Arc::new(mesh_client_config(
        mesh_roots(&mesh.istiod().ca),
        Some(client_cert(&mesh.istiod().ca, "sleep", None)),
        id("echo"),
    )));
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut plain, _)) = relay.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let tcp = TcpStream::connect(hbone).await.expect("ztunnel's 15008");
                let name = ServerName::IpAddress(hbone.ip().into());
                let mut secure = tls.connect(name, tcp).await.expect("mutual TLS");
                let _ = tokio::io::copy_bidirectional(&mut plain, &mut secure).await;
            });
        }
    });

    // Kept for reading after the run.
    let junit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/h2spec.xml");
    let out = {
        let (h2spec, junit) = (h2spec.clone(), junit.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(&h2spec)
                .args(["-h", "127.0.0.1", "-p", &relay_addr.port().to_string()])
                .args(["-o", "2", "-j"])
                .arg(&junit)
                .output()
                .expect("running h2spec")
        })
        .await
        .unwrap()
    };
    let report = std::fs::read_to_string(&junit).unwrap_or_else(|e| {
        panic!(
            "h2spec wrote no report ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let failed = failures(&report);
    let cases = report.matches("<testcase ").count();
    let allowed = allowed();
    let unexpected: Vec<_> = failed.difference(&allowed).collect();
    let now_passing: Vec<_> = allowed.difference(&failed).collect();
    let summary = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "h2spec: {cases} cases, {} failed ({} allowed); {}",
        failed.len(),
        allowed.len(),
        summary.lines().last().unwrap_or_default()
    );
    assert!(cases > 100, "h2spec ran only {cases} cases:\n{summary}");
    assert!(
        unexpected.is_empty(),
        "failing and not allowed: {unexpected:?}\n{summary}"
    );
    // Allowed cases may pass (the relay's one does, most runs): said, not
    // failed on.
    if !now_passing.is_empty() {
        eprintln!("allowed, and passing this run: {now_passing:?}");
    }
}

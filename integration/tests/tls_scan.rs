//! reliability.md H1, the TLS half: sslyze (from PyPI, the version
//! `.ci/run` installs) probes the mesh's TLS endpoints from outside our TLS
//! stack, presenting a mesh client certificate where one is required:
//! ztunnel's 15008, a waypoint's 15008 and istiod-lite's 15012. Each must
//! accept TLS 1.3 only, with the AES-GCM suites only (`mesh_tls::provider`),
//! and no older protocol, compression, Heartbleed, CCS injection or RSA
//! oracle (ROBOT). (sslyze's early-data probe speaks HTTP/1.1 after the
//! handshake, which none of these endpoints does, so it cannot run here.)
//! Needs `sslyze` on the PATH; fails loudly without it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use integration::Mesh;
use integration::tls_client::id;
use serde_json::Value;
use shop::Shop;

mod shop;

/// The version `.ci/run` installs.
const SSLYZE: &str = "sslyze==6.3.1";

const OLD_PROTOCOLS: [&str; 5] = [
    "ssl_2_0_cipher_suites",
    "ssl_3_0_cipher_suites",
    "tls_1_0_cipher_suites",
    "tls_1_1_cipher_suites",
    "tls_1_2_cipher_suites",
];

/// A mesh client certificate (leaf and intermediates) and its key, as PEM
/// files in `dir`.
fn client_files(mesh: &Mesh, dir: &Path) -> (PathBuf, PathBuf) {
    let identity = id("sleep");
    let csr = mesh_tls::csr::generate(&identity).unwrap();
    let chain = mesh
        .istiod()
        .ca
        .sign(
            &csr.csr_pem,
            &identity,
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let (cert, key) = (dir.join("client.pem"), dir.join("client-key.pem"));
    std::fs::write(&cert, chain[..chain.len() - 1].concat()).unwrap();
    std::fs::write(&key, &csr.key_pem).unwrap();
    (cert, key)
}

/// sslyze's JSON for one target, after checking that it connected.
async fn scan(target: SocketAddr, client: Option<&(PathBuf, PathBuf)>, dir: &Path) -> Value {
    let out = dir.join(format!("sslyze-{}.json", target.port()));
    let mut cmd = std::process::Command::new("python3");
    cmd.args([
        "-m",
        "sslyze",
        "--quiet",
        "--sslv2",
        "--sslv3",
        "--tlsv1",
        "--tlsv1_1",
    ])
    .args(["--tlsv1_2", "--tlsv1_3", "--compression", "--heartbleed"])
    .args(["--openssl_ccs", "--robot", "--elliptic_curves"])
    .arg("--json_out")
    .arg(&out);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.arg(target.to_string());
    let run = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("sslyze cannot run ({e}): pip install {SSLYZE} (.ci/run does)"));
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| {
        panic!(
            "sslyze wrote no report ({e}): {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        )
    });
    let report: Value = serde_json::from_str(&text).expect("sslyze's JSON");
    let server = &report["server_scan_results"][0];
    assert_eq!(
        server["scan_status"], "COMPLETED",
        "{target}: sslyze could not scan: {}",
        server["connectivity_error_trace"]
    );
    server["scan_result"].clone()
}

/// What a scan found wrong with an endpoint of the mesh, described.
fn findings(scan: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let result = |name: &str| {
        let r = &scan[name];
        assert_eq!(r["status"], "COMPLETED", "{name}: {}", r["error_trace"]);
        r["result"].clone()
    };
    let suites = |r: &Value| -> Vec<String> {
        r["accepted_cipher_suites"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["cipher_suite"]["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    for old in OLD_PROTOCOLS {
        let accepted = suites(&result(old));
        if !accepted.is_empty() {
            out.push(format!("{old} accepted: {accepted:?}"));
        }
    }
    let mut tls13 = suites(&result("tls_1_3_cipher_suites"));
    tls13.sort();
    if tls13 != ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"] {
        out.push(format!("TLS 1.3 suites {tls13:?}, not the AES-GCM pair"));
    }
    let checks = [
        ("tls_compression", "supports_compression"),
        ("heartbleed", "is_vulnerable_to_heartbleed"),
        ("openssl_ccs_injection", "is_vulnerable_to_ccs_injection"),
    ];
    for (name, flag) in checks {
        if result(name)[flag] != Value::Bool(false) {
            out.push(format!("{name}: {flag} is {}", result(name)[flag]));
        }
    }
    let robot = result("robot")["robot_result"].clone();
    if !robot
        .as_str()
        .is_some_and(|r| r.starts_with("NOT_VULNERABLE"))
    {
        out.push(format!("ROBOT: {robot}"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_tls_endpoints_speak_tls_1_3_with_aes_gcm_only() {
    let mesh = Mesh::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_files(&mesh, dir.path());

    let server = mesh.workload("echo", "echo", 3, "node-b");
    let _z = mesh
        .ztunnel_for("node-b", std::slice::from_ref(&server))
        .await;
    let shop = Shop::start(&mesh).await;
    let targets = [
        (
            "ztunnel 15008",
            SocketAddr::new(server.addresses[0], mesh_hbone::HBONE_PORT),
            Some(&client),
        ),
        ("waypoint 15008", shop.waypoint_addr(), Some(&client)),
        ("istiod-lite 15012", mesh.istiod().grpc_addr, None),
    ];
    let mut wrong = Vec::new();
    for (name, addr, client) in targets {
        let scan = scan(addr, client, dir.path()).await;
        let curves = &scan["elliptic_curves"]["result"]["supported_curves"];
        eprintln!("{name}: curves {curves}");
        wrong.extend(findings(&scan).into_iter().map(|f| format!("{name}: {f}")));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

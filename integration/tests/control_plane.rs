//! ztunnel and a control plane it cannot reach (reliability.md §5.3 C2):
//! started while istiod is blocked, it is not ready and serves no pod, so
//! a captured pod's connections fail closed and nothing leaves in
//! plaintext; once istiod is reachable again it takes the pods within
//! seconds, with no restart. Needs root; `cargo xtask e2e` runs it.

use std::time::{Duration, Instant};

use integration::cluster::capture::{self, Capture};
use integration::cluster::host::ns_sh;
use integration::cluster::{Cluster, HTTP_PORT, LAN_IP, curl_status};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const BLOCK: &str = "c2block";

#[test]
fn ztunnel_started_without_its_control_plane_fails_closed_and_recovers_once_it_is_reachable() {
    let mut c = Cluster::start(&["node-a", "node-b"]);
    c.namespace("apps", &[AMBIENT]);
    c.captured_pods("apps", &[("client", "node-a"), ("remote", "node-b")]);
    let (client, remote) = (c.get("apps", "client"), c.get("apps", "remote"));
    let url = format!("http://{}:{HTTP_PORT}/", remote.ip);
    c.curl_over_mtls(client, &url, remote);

    // istiod (xDS and CA, both on 15012) out of node-a's reach, then a
    // fresh ztunnel there.
    c.stop_ztunnel("node-a");
    let node = c.node("node-a").netns.clone();
    ns_sh(&node, "nft", &["add", "table", "inet", BLOCK]);
    ns_sh(
        &node,
        "nft",
        &["add chain inet c2block out { type filter hook output priority 0 ; }"],
    );
    let lan_ip = LAN_IP.to_string();
    ns_sh(
        &node,
        "nft",
        &[
            "add", "rule", "inet", BLOCK, "out", "ip", "daddr", &lan_ip, "tcp", "dport", "15012",
            "drop",
        ],
    );
    c.start_ztunnel("node-a");
    let uplink = c.node("node-a").uplink.clone();
    let cap = Capture::start(&c.lan, &uplink, c.dir.path());
    std::thread::sleep(Duration::from_secs(3));

    let (ready, _) = c.ztunnel_http("node-a", "GET", 15021, "/healthz/ready");
    assert_ne!(ready, 200, "ready without its control plane");
    let (client, remote) = (c.get("apps", "client"), c.get("apps", "remote"));
    let marker = "CANARY-c2-control-plane-blocked";
    let blocked_url = format!("http://{}:{HTTP_PORT}/{marker}", remote.ip);
    for _ in 0..3 {
        // Refused (nftables) or dropped (eBPF): not served either way.
        let reply = curl_status(client, &["--max-time", "2", &blocked_url]);
        assert_eq!(
            reply.status, 0,
            "a captured pod was served while its ztunnel knew no mesh: {reply}"
        );
    }
    let segments = cap.finish();
    assert!(
        !capture::contains(&segments, marker.as_bytes()),
        "the blocked request left node-a in plaintext"
    );
    let to_app: Vec<_> = capture::flows_to_port(&segments, HTTP_PORT)
        .into_keys()
        .filter(|(_, dst)| dst.0 == remote.ip)
        .collect();
    assert!(
        to_app.is_empty(),
        "connections went straight to the application port: {to_app:?}"
    );

    ns_sh(&node, "nft", &["delete", "table", "inet", BLOCK]);
    let unblocked = Instant::now();
    c.wait_for("node-a's ztunnel is ready", |c| {
        c.ztunnel_http("node-a", "GET", 15021, "/healthz/ready").0 == 200
    });
    let client = c.get("apps", "client");
    c.curl_over_mtls(client, &url, c.get("apps", "remote"));
    let recovered = unblocked.elapsed();
    eprintln!("served again {recovered:?} after the control plane became reachable");
    assert!(
        recovered < Duration::from_secs(10),
        "recovery took {recovered:?} after unblocking"
    );
}

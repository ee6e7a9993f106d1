//! The cluster harness explains its own failures (issue 31): a failed
//! assertion on a request shows curl's exit code and error, and a failed
//! cluster test keeps its components' logs in a folder that its panic
//! output names. Needs root; `cargo xtask e2e` runs it.

use std::panic::AssertUnwindSafe;

use integration::cluster::{Cluster, PodSpec, curl_status, logs};

#[test]
fn a_failed_request_assertion_shows_curls_error_and_the_logs_are_kept() {
    let mut kept = None;
    let failure = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut c = Cluster::start(&["node-a"]);
        kept = Some(c.kept_logs.clone());
        assert!(logs::kept_by_a_cluster(), "the panic hook names the folder");
        let client = c.pod(PodSpec::new("apps", "client", "node-a")).ip;
        // Nothing listens on port 1: the connection is refused.
        let reply = curl_status(c.get("apps", "client"), &[&format!("http://{client}:1/")]);
        reply.assert_status(200);
        unreachable!("a refused connection passed for HTTP 200");
    }))
    .expect_err("the deliberately broken assertion must fail");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("no HTTP answer (curl exit 7: curl: (7) Failed to connect"),
        "the assertion message shows curl's exit code and error: {message}"
    );
    let kept = kept.expect("the cluster started");
    assert!(
        !logs::kept_by_a_cluster(),
        "a dropped cluster is no longer named"
    );
    for log in ["istiod.log", "pods/apps-client.log"] {
        assert!(
            kept.join(log).is_file(),
            "{} kept after the failure",
            kept.join(log).display()
        );
    }
    let node_logs: Vec<String> = std::fs::read_dir(kept.join("node-a"))
        .expect("node-a's folder kept")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        node_logs.iter().any(|f| f.starts_with("ztunnel"))
            && node_logs.iter().any(|f| f.starts_with("agent")),
        "ztunnel's and the node agent's logs kept: {node_logs:?}"
    );
    std::fs::remove_dir_all(&kept).expect("remove the kept folder");

    // A cluster whose test goes on without failing keeps nothing.
    let c = Cluster::start(&["node-a"]);
    let folder = c.kept_logs.clone();
    drop(c);
    assert!(
        !folder.exists(),
        "{} kept without a failure",
        folder.display()
    );
}

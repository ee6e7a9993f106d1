//! The load side of the control-plane benchmarks: delta-xDS clients built
//! exactly as ztunnel builds its own (mesh-xds's `XdsClient`, authenticated
//! with a node bootstrap token), and the pinned runtimes everything runs on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use istiod_lite::ca::{Caller, TokenIssuer};
use mesh_runtime::drain::DrainWatcher;
use mesh_runtime::readiness::Ready;
use mesh_tls::AuthSource;
use mesh_tls::control::ControlPlaneAddress;
use nix::sched::{sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use tokio::runtime::Runtime;
use ztunnel::xds::{Handler, NodeInfo, XdsClient, XdsConfig};

use crate::method;

/// A multi-thread runtime of one worker whose threads (workers and
/// blocking pool) all run on `cpu`.
pub fn runtime(name: &str, cpu: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .on_thread_start(move || method::pin_this_thread(cpu))
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `f` on `cpu`, then gives this thread back the CPUs it had.
pub fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    // Restores the mask the thread had (which may itself be pinned), not
    // every CPU as `method::unpin_this_thread` would.
    let this = Pid::from_raw(0);
    let before = sched_getaffinity(this).expect("sched_getaffinity on this thread");
    method::pin_this_thread(cpu);
    let out = f();
    sched_setaffinity(this, &before).expect("sched_setaffinity on this thread");
    out
}

/// The bootstrap token the ztunnel of `node` carries.
pub fn ztunnel_token(tokens: &TokenIssuer, node: &str) -> String {
    tokens.issue(
        &Caller {
            namespace: "istio-system".into(),
            service_account: "ztunnel".into(),
            node: Some(node.into()),
        },
        Duration::from_secs(3600),
    )
}

/// Where and as whom the ztunnel of `node` connects.
pub fn ztunnel_config(istiod: SocketAddr, root_pem: &str, token: String, node: &str) -> XdsConfig {
    XdsConfig {
        target: ControlPlaneAddress {
            address: istiod.to_string(),
            server_name: None,
            root_pem: root_pem.to_string(),
        },
        auth: AuthSource::Static(token),
        cluster_id: "Kubernetes".into(),
        node: NodeInfo {
            proxy_type: "ztunnel".into(),
            instance_ip: "127.0.0.1".into(),
            pod_name: format!("ztunnel-{node}"),
            pod_namespace: "istio-system".into(),
            node_name: node.into(),
        },
    }
}

/// Starts a client with `handler` on `rt` until `drain` starts; the
/// returned readiness turns ready once the first response of every type
/// it subscribes to is applied.
pub fn start<H: Handler>(
    rt: &Runtime,
    config: XdsConfig,
    handler: H,
    drain: DrainWatcher,
) -> Ready {
    let ready = Ready::new();
    let client = XdsClient::new(config, handler, &ready, Arc::default());
    rt.spawn(client.run(drain));
    ready
}

/// Polls `done` every millisecond (from a thread outside the runtimes);
/// panics naming `what` after `limit`.
pub fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

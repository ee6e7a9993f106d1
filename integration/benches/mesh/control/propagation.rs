//! P11: an AuthorizationPolicy file changes in istiod-lite's manifest
//! directory while 50 ztunnel xDS clients are connected; each sample is the
//! time until the last of them has applied the new policy (each client
//! ACKs right after applying, in the same task).
//!
//! istiod-lite runs in-process with the settings `istiod-lite serve` has
//! by default (its manifest poll interval included), on a mesh of 1000
//! workloads. The clients are mesh-xds's `XdsClient` with ztunnel's own
//! `StateHandler`, wrapped to note when the changed policy lands. Each
//! change is written (atomic rename) at a random point of the poll period,
//! so the samples cover every phase of the poll.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use istiod_lite::app::Istiod;
use istiod_lite::config::{Cli, Command, Config as IstiodConfig};
use istiod_lite::xds::DEBOUNCE;
use mesh_runtime::drain::{self, DrainMode};
use ztunnel::state::ProxyState;
use ztunnel::xds::{AUTHORIZATION_TYPE, Handler, StateHandler};

use super::client;
use super::mesh::{self, Size};
use crate::method::{LOAD_CPU, Latency, PROXY_CPU, Plan, Series};
use crate::report::{Goal, Report};

const CLIENTS: usize = 50;
const MESH: Size = Size::new(1000);
/// The policy that changes: `namespace/name`, its xDS resource name.
const POLICY_NAMESPACE: &str = "ns-0";
const POLICY_NAME: &str = "p11-policy";
/// Each version of the policy allows a principal naming its change.
const MARKER: &[u8] = b"p11-change-";
const CHANGE_LIMIT: Duration = Duration::from_secs(30);

/// When each client applied each change: `[change][client]`.
type Applied = Arc<Mutex<Vec<Vec<Option<Instant>>>>>;

pub fn run(plan: &Plan, report: &mut Report) {
    let changes = plan.pick(20, 50);
    let dir = tempfile::tempdir().expect("temp dir");
    let manifests = dir.path().join("manifests");
    mesh::write(&manifests, MESH);
    write_policy(&manifests, 0);
    let config = product_config(&dir.path().join("state"), &manifests);
    let poll = config.config_poll_interval;

    let istiod_rt = client::runtime("istiod", PROXY_CPU);
    let client_rt = client::runtime("xds-clients", LOAD_CPU);
    let istiod = istiod_rt
        .block_on(Istiod::start(config))
        .expect("istiod-lite starts");
    let applied: Applied = Arc::new(Mutex::new(vec![vec![None; CLIENTS]; changes + 1]));
    let (drain, watcher) = drain::new();
    let ready: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let node = format!("node-{i}");
            let token = client::ztunnel_token(&istiod.tokens, &node);
            let config =
                client::ztunnel_config(istiod.grpc_addr, istiod.ca.root_pem(), token, &node);
            let handler = Recorder {
                inner: StateHandler::new(Arc::new(ProxyState::new()), true),
                client: i,
                applied: applied.clone(),
            };
            client::start(&client_rt, config, handler, watcher.clone())
        })
        .collect();
    drop(watcher);
    client::wait("every client has the first policy", CHANGE_LIMIT, || {
        ready.iter().all(|r| r.is_ready()) && all_applied(&applied, 0).is_some()
    });

    let (mut from_file, mut from_watch) = (Vec::new(), Vec::new());
    client::on_cpu(LOAD_CPU, || {
        for change in 1..=changes {
            let phase = rand::random_range(0..poll.as_micros() as u64);
            std::thread::sleep(Duration::from_micros(phase));
            let written = write_policy(&manifests, change);
            client::wait(
                "all clients applied the changed policy",
                CHANGE_LIMIT,
                || all_applied(&applied, change).is_some(),
            );
            let last = all_applied(&applied, change).expect("all applied");
            from_file.push(last.duration_since(written).as_nanos() as u64);
            // The set pushed is the last published: nothing else changes.
            let set = istiod.resources.borrow().clone();
            let key = format!("{POLICY_NAMESPACE}/{POLICY_NAME}");
            let body = &set
                .of_type(AUTHORIZATION_TYPE)
                .and_then(|a| a.get(&key))
                .expect("the policy is published")
                .body
                .value;
            assert_eq!(
                marker(body),
                Some(change),
                "the published set carries change {change}"
            );
            let seen = set
                .changed_at
                .expect("a translated set records when its change was seen");
            from_watch.push(last.duration_since(seen).as_nanos() as u64);
        }
    });
    client_rt.block_on(drain.drain(DrainMode::Immediate));
    istiod_rt.block_on(istiod.shutdown());

    let from_file = Latency::from_nanos(from_file);
    let from_watch = Latency::from_nanos(from_watch);
    let ms = |us: f64| us / 1000.0;
    let poll_ms = poll.as_secs_f64() * 1000.0;
    report.extra("P11.fileToLastApply.p50ms", ms(from_file.p50));
    report.extra("P11.watchToLastApply.p50ms", ms(from_watch.p50));
    report.extra("P11.configPollIntervalMs", poll_ms);
    report.extra("P11.debounceMs", DEBOUNCE.as_secs_f64() * 1000.0);
    let series = |v: f64| Series { samples: vec![v] };
    report.absolute(
        "P11",
        format!(
            "policy change → last of {CLIENTS} ztunnels applied, from the file write, p99 of {changes} changes ({:.0} ms poll)",
            poll_ms
        ),
        "ms",
        series(ms(from_file.p99)),
        Goal::AtMost(200.0),
        "p99 ≤ 200 ms",
    );
    report.absolute(
        "P11",
        format!("policy change → last of {CLIENTS} ztunnels applied, from the watch event, p99 of {changes} changes"),
        "ms",
        series(ms(from_watch.p99)),
        Goal::AtMost(200.0),
        "p99 ≤ 200 ms",
    );
    report.note(format!(
        "P11: istiod-lite in-process with `istiod-lite serve`'s defaults (manifest poll CONFIG_POLL_INTERVAL = {poll_ms:.0} ms, \
         debounce {} ms) on CPU {PROXY_CPU}, {MESH_WORKLOADS} workloads, {CLIENTS} delta-xDS clients (ztunnel's client and state) on \
         CPU {LOAD_CPU}. A sample ends when the last client has applied the new policy; it sends its ACK right after. With \
         {changes} samples the p99 is their maximum. \"From the file write\" includes waiting for the next manifest poll \
         (written at a random phase of it); \"from the watch event\" starts when istiod-lite's translation loop saw the new \
         model (`ResourceSet::changed_at`), so it is debounce + translation + push + apply.",
        DEBOUNCE.as_millis(),
        MESH_WORKLOADS = MESH.workloads,
    ));
}

/// The configuration `istiod-lite serve` runs with by default, on a
/// loopback port, serving `manifests`.
fn product_config(state: &Path, manifests: &Path) -> IstiodConfig {
    let state = state.display().to_string();
    let manifests = manifests.display().to_string();
    let cli = Cli::try_parse_from([
        "istiod-lite",
        "serve",
        "--state-dir",
        &state,
        "--config-dir",
        &manifests,
        "--grpc-addr",
        "127.0.0.1:0",
        "--monitoring-addr",
        "none",
    ])
    .expect("istiod-lite's command line parses");
    let Command::Serve(args) = cli.command else {
        panic!("parsed as `serve`");
    };
    IstiodConfig::from_args(&args).expect("valid istiod-lite configuration")
}

/// Writes version `change` of the policy (atomically) and returns when the
/// new file appeared.
fn write_policy(manifests: &Path, change: usize) -> Instant {
    let yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {POLICY_NAME}, namespace: {POLICY_NAMESPACE}}}\n\
         spec:\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/{POLICY_NAMESPACE}/sa/{}{change:06}]\n",
        std::str::from_utf8(MARKER).expect("ASCII")
    );
    let tmp = manifests.join(".policy.yaml.tmp");
    std::fs::write(&tmp, yaml).expect("write policy");
    let written = Instant::now();
    std::fs::rename(&tmp, manifests.join("policy.yaml")).expect("rename policy");
    written
}

/// The change a policy body carries, from its principal.
fn marker(body: &[u8]) -> Option<usize> {
    let at = body.windows(MARKER.len()).position(|w| w == MARKER)? + MARKER.len();
    std::str::from_utf8(body.get(at..at + 6)?)
        .ok()?
        .parse()
        .ok()
}

/// When the last client applied `change`, once all have.
fn all_applied(applied: &Applied, change: usize) -> Option<Instant> {
    let applied = applied.lock().unwrap_or_else(|e| e.into_inner());
    applied[change]
        .iter()
        .copied()
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}

/// ztunnel's handler, noting when each version of the policy is applied.
struct Recorder {
    inner: StateHandler,
    client: usize,
    applied: Applied,
}

impl Handler for Recorder {
    fn types(&self) -> Vec<&'static str> {
        self.inner.types()
    }

    fn apply(&mut self, type_url: &str, name: &str, body: &[u8]) -> Result<(), String> {
        self.inner.apply(type_url, name, body)?;
        if type_url == AUTHORIZATION_TYPE
            && let Some(change) = marker(body)
        {
            let now = Instant::now();
            let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = applied.get_mut(change).and_then(|c| c.get_mut(self.client)) {
                slot.get_or_insert(now);
            }
        }
        Ok(())
    }

    fn remove(&mut self, type_url: &str, name: &str) -> bool {
        self.inner.remove(type_url, name)
    }

    fn answered(&mut self, type_url: &str) {
        self.inner.answered(type_url);
    }
}

//! One container of a pod: a process in the pod's sandbox, restarted by
//! the pod's `restartPolicy` with the kubelet's back-off (10 s, doubling,
//! at most 5 min, reset after 10 min of running), ready as its readiness
//! probe says, and killed (then restarted) when its liveness probe fails.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::env::{self, Addresses};
use super::mounts;
use super::probe::{self, ProbeSpec};
use super::registration::now_rfc3339;
use super::running::{ContainerRef, Launch, Running};
use super::volumes::Volumes;
use crate::config::API_SERVICE_IP;

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// Where a container runs and writes.
pub struct Place<'a> {
    pub pod: &'a Pod,
    pub netns: &'a str,
    pub ip: &'a str,
    pub logs: &'a Path,
    pub node_netns: &'a str,
    pub host_ip: &'a str,
    pub client: &'a kube::Client,
    pub volumes: &'a Volumes,
    /// The `cluster` binary (`cluster enter` starts the program).
    pub program: &'a Path,
    /// The cluster's components (`target/cluster/bin`), for the image table.
    pub cluster_bin: &'a Path,
    /// Where mount points made on this machine are recorded.
    pub mount_points: &'a Path,
    /// Told of each start and stop, for `kubectl exec`.
    pub running: &'a Running,
}

impl Place<'_> {
    fn container_ref(&self, name: &str) -> ContainerRef {
        ContainerRef {
            namespace: self.pod.metadata.namespace.clone().unwrap_or_default(),
            pod: self.pod.metadata.name.clone().unwrap_or_default(),
            container: name.to_string(),
        }
    }
}

pub struct ContainerState {
    spec: Container,
    child: Option<(Child, Instant, String)>,
    restarts: i32,
    backoff: Duration,
    /// When a stopped container may start again; `None` when it is not to.
    next_start: Option<Instant>,
    /// Exit code and finish time of the last run.
    last_exit: Option<(i32, String)>,
    /// Why it is not running, as the kubelet's `waiting.reason`/`message`.
    waiting: Option<(String, String)>,
    probe: Option<ProbeSpec>,
    /// The liveness probe: failing `failureThreshold` times in a row, the
    /// container is killed and restarted by its pod's `restartPolicy`.
    liveness: Option<ProbeSpec>,
    live_failures: u32,
    next_live_probe: Instant,
    ready: bool,
    failures: u32,
    next_probe: Instant,
}

impl ContainerState {
    pub fn new(spec: Container) -> Self {
        let (probe, waiting) = match ProbeSpec::readiness(&spec) {
            Some(Ok(p)) => (Some(p), None),
            Some(Err(e)) => (None, Some(("ProbeNotSupported".to_string(), e))),
            None => (None, None),
        };
        let (liveness, waiting) = match ProbeSpec::liveness(&spec) {
            Some(Ok(p)) => (Some(p), waiting),
            Some(Err(e)) => (None, Some(("ProbeNotSupported".to_string(), e))),
            None => (None, waiting),
        };
        Self {
            spec,
            child: None,
            restarts: 0,
            backoff: BACKOFF_START,
            next_start: Some(Instant::now()),
            last_exit: None,
            waiting,
            probe,
            liveness,
            live_failures: 0,
            next_live_probe: Instant::now(),
            ready: false,
            failures: 0,
            next_probe: Instant::now(),
        }
    }

    /// Starts, reaps, restarts and probes as due; `policy` is the pod's
    /// `restartPolicy`.
    pub async fn tick(&mut self, place: &Place<'_>, policy: &str) {
        if let Some((child, since, _)) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            let code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            let ran = since.elapsed();
            self.child = None;
            place.running.stopped(&place.container_ref(&self.spec.name));
            self.ready = false;
            self.last_exit = Some((code, now_rfc3339()));
            let again = match policy {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            if ran > BACKOFF_RESET {
                self.backoff = BACKOFF_START;
            }
            self.next_start = again.then(|| Instant::now() + self.backoff);
            if again {
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off restarting the failed container {} (exit {code})",
                        self.spec.name
                    ),
                ));
            }
        }
        if self.child.is_none() && self.next_start.is_some_and(|t| Instant::now() >= t) {
            let first = self.last_exit.is_none();
            let at = Addresses {
                pod_ip: place.ip,
                host_ip: place.host_ip,
            };
            let vars = match env::resolve(place.client, place.pod, &at, &self.spec).await {
                Ok(vars) => vars,
                Err(e) => {
                    // Retried at the next tick, as the kubelet retries.
                    self.waiting = Some((env::CONFIG_ERROR.into(), e));
                    return;
                }
            };
            match start(&self.spec, place, &vars) {
                Ok(child) => {
                    if !first {
                        self.restarts += 1;
                    }
                    self.child = Some((child, Instant::now(), now_rfc3339()));
                    self.next_start = None;
                    self.waiting = None;
                    self.failures = 0;
                    self.ready = self.probe.is_none();
                    self.next_probe = Instant::now()
                        + self
                            .probe
                            .as_ref()
                            .map_or(Duration::ZERO, |p| p.initial_delay);
                    self.live_failures = 0;
                    self.next_live_probe = Instant::now()
                        + self
                            .liveness
                            .as_ref()
                            .map_or(Duration::ZERO, |p| p.initial_delay);
                }
                Err(e) => {
                    self.next_start = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    self.waiting = Some(("CreateContainerError".into(), e));
                }
            }
        }
        if self.child.is_some()
            && let Some(p) = self.probe.clone()
            && Instant::now() >= self.next_probe
        {
            self.next_probe = Instant::now() + p.period;
            let (netns, ip) = (place.node_netns.to_string(), place.ip.to_string());
            let outcome = tokio::task::spawn_blocking(move || {
                probe::attempt(&netns, &ip, &p.check, p.timeout)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match outcome {
                Ok(()) => {
                    self.ready = true;
                    self.failures = 0;
                }
                Err(_) => {
                    self.failures += 1;
                    if self.failures >= p.failure_threshold || !self.ready {
                        self.ready = false;
                    }
                }
            }
        }
        if let Some((child, _, _)) = &self.child
            && let Some(p) = self.liveness.clone()
            && Instant::now() >= self.next_live_probe
        {
            self.next_live_probe = Instant::now() + p.period;
            let (netns, ip) = (place.node_netns.to_string(), place.ip.to_string());
            let pid = child.id();
            let outcome = tokio::task::spawn_blocking(move || {
                probe::attempt(&netns, &ip, &p.check, p.timeout)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match outcome {
                Ok(()) => self.live_failures = 0,
                Err(e) => {
                    self.live_failures += 1;
                    if self.live_failures >= p.failure_threshold {
                        // Killed; the next tick reaps it and restarts it
                        // by the pod's restartPolicy, with the back-off.
                        tracing::info!(container = %self.spec.name, error = %e,
                            "liveness probe failed; the container will be restarted");
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                        self.live_failures = 0;
                    }
                }
            }
        }
    }

    /// Not started yet because of what the pod still lacks.
    pub fn waiting_for(&mut self, reason: &str, message: &str) {
        if self.child.is_none() {
            self.waiting = Some((reason.into(), message.into()));
        }
    }

    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Whether it has ended for good (stopped and not to be restarted),
    /// with its exit code.
    pub fn finished(&self) -> Option<i32> {
        match (&self.child, self.next_start, &self.last_exit) {
            (None, None, Some((code, _))) => Some(*code),
            _ => None,
        }
    }

    pub fn status(&self) -> Value {
        let state = match (&self.child, &self.waiting, &self.last_exit) {
            (Some((_, _, at)), _, _) => json!({ "running": { "startedAt": at } }),
            (None, Some((reason, message)), _) => {
                json!({ "waiting": { "reason": reason, "message": message } })
            }
            (None, None, Some((code, at))) => {
                json!({ "terminated": { "exitCode": code, "finishedAt": at,
                "reason": if *code == 0 { "Completed" } else { "Error" } } })
            }
            (None, None, None) => json!({ "waiting": { "reason": "ContainerCreating" } }),
        };
        let mut status = json!({
            "name": self.spec.name,
            "image": self.spec.image.clone().unwrap_or_default(),
            "imageID": "",
            "ready": self.ready,
            "started": self.child.is_some(),
            "restartCount": self.restarts,
            "state": state,
        });
        if let Some((code, at)) = &self.last_exit {
            status["lastState"] = json!({ "terminated": { "exitCode": code, "finishedAt": at } });
        }
        status
    }

    /// SIGTERM, up to `grace`, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration, running: &Running, pod: &Pod) {
        running.stopped(&ContainerRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            container: self.spec.name.clone(),
        });
        let Some((child, _, _)) = &mut self.child else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
        self.child = None;
        self.next_start = None;
    }
}

/// The container's program (its `command`, else its image's entrypoint
/// from the image table, then its `args`) in the pod's sandbox.
fn start(c: &Container, place: &Place<'_>, vars: &[(String, String)]) -> Result<Child, String> {
    let pod = place.pod;
    let mut argv: Vec<String> = match &c.command {
        Some(cmd) if !cmd.is_empty() => cmd.clone(),
        _ => {
            let mesh = place.program.parent().unwrap_or(Path::new("/"));
            let image = c.image.as_deref().unwrap_or_default();
            super::images::entrypoint(image, mesh, place.cluster_bin)?
        }
    };
    argv.extend(c.args.clone().unwrap_or_default());
    let path: PathBuf = place.logs.join(format!("{}.log", c.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let binds = place.volumes.binds(c)?;
    mounts::make_mount_points(&binds, place.mount_points)?;
    let netns = Path::new("/var/run/netns").join(place.netns);
    let workdir = c.working_dir.as_deref().unwrap_or("/");
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        (
            "HOSTNAME".into(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        ("KUBERNETES_SERVICE_HOST".into(), API_SERVICE_IP.to_string()),
        ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
    ];
    env.extend(vars.iter().cloned());
    let launch = Launch {
        enter: super::enter::args(&netns, &binds, workdir, &[]),
        netns,
        env,
    };
    let mut cmd = Command::new(place.program);
    cmd.args(&launch.enter)
        .args(&argv)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    let child = cmd.spawn().map_err(|e| format!("running {argv:?}: {e}"))?;
    place.running.started(place.container_ref(&c.name), launch);
    Ok(child)
}

//! The guided tour: the commands of a documentation page, in its order and
//! spelled exactly as it spells them (a test holds the two together), each
//! run through `sh -c` and judged. Steps that wait on the mesh (a policy
//! reaching a ztunnel, a waypoint coming up) are re-run until they behave,
//! for up to 30 s.
//!
//! Two tours walk the same story: [`cluster::STEPS`], on a Kubernetes
//! cluster with kubectl (`docs/getting-started.md`), and [`local::STEPS`],
//! on the local mesh of network namespaces (`docs/local-mesh.md`). Their
//! checks are shared: the mesh must behave the same way under both.

pub mod cluster;
pub mod local;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::DemoError;

/// The YAML both tours apply (a macro each, so the steps' commands stay
/// string literals).
macro_rules! db_from_web {
    () => {
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: db-from-web
  namespace: demo
spec:
  selector:
    matchLabels:
      app: db
  action: ALLOW
  rules:
  - from:
    - source:
        principals:
        - cluster.local/ns/demo/sa/web-v1
        - cluster.local/ns/demo/sa/web-v2
"
    };
}
macro_rules! web_get_only {
    () => {
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: web-get-only
  namespace: demo
spec:
  targetRefs:
  - kind: Service
    group: \"\"
    name: web
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: [GET]
"
    };
}
macro_rules! web_split {
    () => {
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: demo
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: web
    port: 80
  rules:
  - backendRefs:
    - name: web-v1
      port: 80
      weight: 90
    - name: web-v2
      port: 80
      weight: 10
"
    };
}
use {db_from_web, web_get_only, web_split};

/// The demo's namespace.
pub const NAMESPACE: &str = "demo";
const PATIENCE: Duration = Duration::from_secs(30);

/// The demo's pods' addresses, by pod name in the local mesh, by
/// Deployment name on a cluster (`waypoint` is the waypoint's).
pub trait Pods {
    fn ip(&self, name: &str) -> Option<String>;
}

/// What a command did.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

type Check = fn(&Ran, &dyn Pods) -> Result<String, String>;

pub struct Step {
    pub title: &'static str,
    /// The shell command, as the page shows it.
    pub command: &'static str,
    /// Re-run until the check passes (for up to 30 s).
    pub eventually: bool,
    /// Says what was seen, or what was wrong.
    pub check: Check,
}

fn succeeded(r: &Ran) -> Result<(), String> {
    match r.code {
        Some(0) => Ok(()),
        code => Err(format!("exit status {code:?}: {}", r.stderr.trim())),
    }
}

/// The policy, route or label was accepted.
fn stored(r: &Ran, _: &dyn Pods) -> Result<String, String> {
    succeeded(r).map(|_| "accepted".into())
}

/// The client's first call: web-v1 answers through the ztunnels.
fn web_v1_answered(r: &Ran, _: &dyn Pods) -> Result<String, String> {
    succeeded(r)?;
    r.stdout
        .starts_with("hello from web-v1")
        .then(|| "web-v1 answered".into())
        .ok_or_else(|| format!("unexpected answer {:?}", r.stdout))
}

/// `ztunnel-config workloads` lists every demo pod on HBONE (on a cluster
/// a pod's name is its Deployment's and a suffix).
fn all_on_hbone(r: &Ran, _: &dyn Pods) -> Result<String, String> {
    succeeded(r)?;
    let hbone = |app: &str| {
        r.stdout.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let pod = cols.get(1).copied().unwrap_or_default();
            (pod == app || pod.starts_with(&format!("{app}-"))) && cols.last() == Some(&"HBONE")
        })
    };
    ["client", "web-v1", "web-v2", "db"]
        .iter()
        .all(|p| hbone(p))
        .then(|| "client, web-v1, web-v2 and db are listed with protocol HBONE".into())
        .ok_or_else(|| "not every demo pod is listed with protocol HBONE".into())
}

/// `ztunnel-config certificates` shows a demo workload's leaf, Available.
fn a_leaf_is_available(r: &Ran, _: &dyn Pods) -> Result<String, String> {
    succeeded(r)?;
    r.stdout
        .lines()
        .find(|l| {
            l.starts_with("spiffe://cluster.local/ns/demo/sa/")
                && l.contains(" Leaf ")
                && l.contains("Available")
        })
        .and_then(|l| l.split_whitespace().next())
        .map(|id| format!("{id} is Available"))
        .ok_or_else(|| "no demo workload's certificate is Available".into())
}

/// curl's exit when ztunnel closes a denied connection.
fn refused(r: &Ran, _: &dyn Pods) -> Result<String, String> {
    match r.code {
        Some(code @ (52 | 56)) => Ok(format!(
            "curl exit code {code}: ztunnel closed the connection"
        )),
        code => Err(format!("curl exit status {code:?}, {:?}", r.stdout)),
    }
}

/// db answers `who` (a pod of the demo) and sees its own address.
fn db_answered(r: &Ran, pods: &dyn Pods, who: &str) -> Result<String, String> {
    succeeded(r)?;
    let expected = format!(
        "hello from db, you are {}",
        pods.ip(who).unwrap_or_default()
    );
    (r.stdout.trim() == expected)
        .then(|| format!("db answered {who}, and saw its address"))
        .ok_or_else(|| format!("unexpected answer {:?}", r.stdout))
}

fn db_answered_web_v1(r: &Ran, pods: &dyn Pods) -> Result<String, String> {
    db_answered(r, pods, "web-v1")
}

fn waypoint_ready(r: &Ran, _: &dyn Pods) -> Result<String, String> {
    succeeded(r)?;
    r.stdout
        .contains("✅ waypoint demo/waypoint is ready!")
        .then(|| "the waypoint is programmed".into())
        .ok_or_else(|| format!("no ready line in {:?}", r.stdout))
}

fn waypoint_listed(r: &Ran, _: &dyn Pods) -> Result<String, String> {
    succeeded(r)?;
    r.stdout
        .lines()
        .any(|l| l.starts_with("waypoint ") && l.contains("True"))
        .then(|| "waypoint is listed, programmed".into())
        .ok_or_else(|| "waypoint is not listed as programmed".into())
}

fn web_bound_to_waypoint(r: &Ran, _: &dyn Pods) -> Result<String, String> {
    succeeded(r)?;
    r.stdout
        .lines()
        .any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1) == Some(&"web") && cols.get(3) == Some(&"waypoint")
        })
        .then(|| "service web has WAYPOINT waypoint".into())
        .ok_or_else(|| "service web is not bound to the waypoint".into())
}

fn through_the_waypoint(r: &Ran, pods: &dyn Pods) -> Result<String, String> {
    succeeded(r)?;
    let waypoint = pods.ip("waypoint").unwrap_or_default();
    (!waypoint.is_empty()
        && r.stdout
            .trim_end()
            .ends_with(&format!("you are {waypoint}")))
    .then(|| format!("the request came through the waypoint ({waypoint})"))
    .ok_or_else(|| format!("not through the waypoint: {:?}", r.stdout))
}

fn post_denied(r: &Ran, _: &dyn Pods) -> Result<String, String> {
    succeeded(r)?;
    (r.stdout == "RBAC: access denied")
        .then(|| "RBAC: access denied (403)".into())
        .ok_or_else(|| format!("POST was answered {:?}", r.stdout))
}

/// 200 requests, counted by `uniq -c`: 90/10 within what chance allows.
fn split_90_10(r: &Ran, _: &dyn Pods) -> Result<String, String> {
    succeeded(r)?;
    let count = |who: &str| {
        r.stdout
            .lines()
            .find(|l| l.trim_end().ends_with(who))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let (v1, v2) = (count("hello from web-v1"), count("hello from web-v2"));
    (v1 + v2 == 200 && (160..=194).contains(&v1))
        .then(|| format!("web-v1 {v1}, web-v2 {v2}"))
        .ok_or_else(|| format!("the split did not show: web-v1 {v1}, web-v2 {v2}"))
}

/// Which mesh a tour's commands act on.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// The local mesh: `KUBECONFIG` is taken out of the commands'
    /// environment, or `ambientctl` would act on that cluster instead.
    Local,
    /// A cluster: `KUBECONFIG` set to this file, or left as it is.
    Cluster(Option<&'a Path>),
}

/// Runs `command` through `sh -c`, with this `ambientctl` first on PATH,
/// acting on `target`.
pub fn run_command(command: &str, target: Target<'_>) -> std::io::Result<Ran> {
    let mut path = std::env::current_exe()?
        .parent()
        .map(|d| d.as_os_str().to_owned())
        .unwrap_or_default();
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(command).env("PATH", path);
    match target {
        Target::Local => {
            sh.env_remove("KUBECONFIG");
        }
        Target::Cluster(Some(k)) => {
            sh.env("KUBECONFIG", k);
        }
        Target::Cluster(None) => {}
    }
    let out = sh.output()?;
    Ok(Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs every step, printing as it goes; `pods` is asked afresh at each
/// attempt (pods come and go).
pub fn run(
    steps: &[Step],
    pods: &dyn Fn() -> Result<Box<dyn Pods>, DemoError>,
    target: Target<'_>,
) -> Result<(), DemoError> {
    for (i, step) in steps.iter().enumerate() {
        println!("\n# {}. {}\n$ {}", i + 1, step.title, step.command);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ran = run_command(step.command, target).map_err(|source| DemoError::Exec {
                what: step.command.into(),
                source,
            })?;
            match (step.check)(&ran, &*pods()?) {
                Ok(seen) => {
                    print!("{}", ran.stdout);
                    if !ran.stdout.is_empty() && !ran.stdout.ends_with('\n') {
                        println!();
                    }
                    println!("  ✔ {seen}");
                    break;
                }
                Err(problem) if !step.eventually || Instant::now() > deadline => {
                    print!("{}{}", ran.stdout, ran.stderr);
                    return Err(DemoError::Tour {
                        step: i + 1,
                        title: step.title.into(),
                        problem,
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! The guided tour of the local mesh: the commands of
//! `docs/getting-started.md`, in its order and spelled exactly as it spells
//! them (a test holds the two together), each run through `sh -c` and
//! judged. Steps that wait on the mesh (a policy reaching a ztunnel, a
//! waypoint coming up) are re-run until they behave, for up to 30 s.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::DemoError;
use crate::local::{DEMO_DIR, LocalMesh};

/// The demo's namespace.
pub const NAMESPACE: &str = "demo";
const PATIENCE: Duration = Duration::from_secs(30);

/// What a command did.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

type Check = fn(&Ran, &LocalMesh) -> Result<String, String>;

pub struct Step {
    pub title: &'static str,
    /// The shell command, as the getting-started page shows it.
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

fn pod_ip(mesh: &LocalMesh, name: &str) -> String {
    mesh.pod(name, NAMESPACE)
        .map(|p| p.ip.clone())
        .unwrap_or_default()
}

pub const STEPS: &[Step] = &[
    Step {
        title: "Enroll namespace demo in the mesh",
        command: "ambientctl namespace enroll demo",
        eventually: false,
        check: |r, _| succeeded(r).map(|_| "namespace demo is in the mesh".into()),
    },
    Step {
        title: "The client reaches web through the ztunnels",
        command: "ambientctl demo exec client -- curl -s http://web.demo/",
        eventually: true,
        check: |r, _| {
            succeeded(r)?;
            r.stdout
                .starts_with("hello from web-v1")
                .then(|| "web-v1 answered".into())
                .ok_or_else(|| format!("unexpected answer {:?}", r.stdout))
        },
    },
    Step {
        title: "ztunnel knows the demo's pods, all on HBONE",
        command: "ambientctl ztunnel-config workloads --workload-namespace demo",
        eventually: true,
        check: |r, _| {
            succeeded(r)?;
            let hbone = |pod: &str| {
                r.stdout.lines().any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.get(1) == Some(&pod) && cols.last() == Some(&"HBONE")
                })
            };
            ["client", "web-v1", "web-v2", "db"]
                .iter()
                .all(|p| hbone(p))
                .then(|| "client, web-v1, web-v2 and db are listed with protocol HBONE".into())
                .ok_or_else(|| "not every demo pod is listed with protocol HBONE".into())
        },
    },
    Step {
        title: "Each pod holds a SPIFFE certificate (mutual TLS)",
        command: "ambientctl ztunnel-config certificates",
        eventually: true,
        check: |r, _| {
            succeeded(r)?;
            r.stdout
                .lines()
                .any(|l| {
                    l.starts_with("spiffe://cluster.local/ns/demo/sa/client ")
                        && l.contains(" Leaf ")
                        && l.contains("Available")
                })
                .then(|| "spiffe://cluster.local/ns/demo/sa/client is Available".into())
                .ok_or_else(|| "the client's certificate is not Available".into())
        },
    },
    Step {
        title: "L4 policy: only web may connect to db",
        command: "ambientctl apply -f - <<EOF
apiVersion: security.istio.io/v1
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
EOF",
        eventually: false,
        check: |r, _| succeeded(r).map(|_| "the policy is stored".into()),
    },
    Step {
        title: "The client's connection to db is refused",
        command: "ambientctl demo exec client -- curl -s http://db.demo/",
        eventually: true,
        check: |r, _| match r.code {
            Some(code @ (52 | 56)) => Ok(format!(
                "curl exit code {code}: ztunnel closed the connection"
            )),
            code => Err(format!("curl exit status {code:?}, {:?}", r.stdout)),
        },
    },
    Step {
        title: "web-v1 still reaches db",
        command: "ambientctl demo exec web-v1 -- curl -s http://db.demo/",
        eventually: true,
        check: |r, mesh| {
            succeeded(r)?;
            let expected = format!("hello from db, you are {}", pod_ip(mesh, "web-v1"));
            (r.stdout.trim() == expected)
                .then(|| "db answered web-v1, and saw its address".into())
                .ok_or_else(|| format!("unexpected answer {:?}", r.stdout))
        },
    },
    Step {
        title: "A waypoint for namespace demo",
        command: "ambientctl waypoint apply -n demo --enroll-namespace --wait",
        eventually: false,
        check: |r, _| {
            succeeded(r)?;
            r.stdout
                .contains("✅ waypoint demo/waypoint is ready!")
                .then(|| "the waypoint is programmed".into())
                .ok_or_else(|| format!("no ready line in {:?}", r.stdout))
        },
    },
    Step {
        title: "The waypoint's Gateway",
        command: "ambientctl waypoint list -n demo",
        eventually: false,
        check: |r, _| {
            succeeded(r)?;
            r.stdout
                .lines()
                .any(|l| l.starts_with("waypoint ") && l.contains("True"))
                .then(|| "waypoint is listed, programmed".into())
                .ok_or_else(|| "waypoint is not listed as programmed".into())
        },
    },
    Step {
        title: "ztunnel sends web's traffic to the waypoint",
        command: "ambientctl ztunnel-config services --service-namespace demo",
        eventually: true,
        check: |r, _| {
            succeeded(r)?;
            r.stdout
                .lines()
                .any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.get(1) == Some(&"web") && cols.get(3) == Some(&"waypoint")
                })
                .then(|| "service web has WAYPOINT waypoint".into())
                .ok_or_else(|| "service web is not bound to the waypoint".into())
        },
    },
    Step {
        title: "web now sees the waypoint as its client",
        command: "ambientctl demo exec client -- curl -s http://web.demo/",
        eventually: true,
        check: |r, mesh| {
            succeeded(r)?;
            let waypoint = pod_ip(mesh, "waypoint");
            (!waypoint.is_empty()
                && r.stdout
                    .trim_end()
                    .ends_with(&format!("you are {waypoint}")))
            .then(|| format!("the request came through the waypoint ({waypoint})"))
            .ok_or_else(|| format!("not through the waypoint: {:?}", r.stdout))
        },
    },
    Step {
        title: "L7 policy: web allows GET only",
        command: "ambientctl apply -f - <<EOF
apiVersion: security.istio.io/v1
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
EOF",
        eventually: false,
        check: |r, _| succeeded(r).map(|_| "the policy is stored".into()),
    },
    Step {
        title: "POST is denied by the waypoint",
        command: "ambientctl demo exec client -- curl -s -X POST http://web.demo/",
        eventually: true,
        check: |r, _| {
            succeeded(r)?;
            (r.stdout == "RBAC: access denied")
                .then(|| "RBAC: access denied (403)".into())
                .ok_or_else(|| format!("POST was answered {:?}", r.stdout))
        },
    },
    Step {
        title: "A route sends 10% of web's requests to web-v2",
        command: "ambientctl apply -f - <<EOF
apiVersion: gateway.networking.k8s.io/v1
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
EOF",
        eventually: false,
        check: |r, _| succeeded(r).map(|_| "the route is stored".into()),
    },
    Step {
        title: "200 requests, split 90/10",
        command: "ambientctl demo exec client -- curl -s \"http://web.demo/?[1-200]\" | cut -d, -f1 | sort | uniq -c",
        eventually: true,
        check: |r, _| {
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
        },
    },
];

/// Runs `command` through `sh -c`, with this `ambientctl` first on PATH.
pub fn run_command(command: &str) -> std::io::Result<Ran> {
    let mut path = std::env::current_exe()?
        .parent()
        .map(|d| d.as_os_str().to_owned())
        .unwrap_or_default();
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("PATH", path)
        .output()?;
    Ok(Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs every step against the running local mesh, printing as it goes.
pub fn run() -> Result<(), DemoError> {
    for (i, step) in STEPS.iter().enumerate() {
        println!("\n# {}. {}\n$ {}", i + 1, step.title, step.command);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ran = run_command(step.command).map_err(|source| DemoError::Exec {
                what: step.command.into(),
                source,
            })?;
            let mesh = LocalMesh::load(Path::new(DEMO_DIR))?;
            match (step.check)(&ran, &mesh) {
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

//! The mesh on the local cluster, installed the way users install it
//! (`ambientctl install`), every component a pod, then used the way an
//! Istio user uses it, with Istio's own curl and httpbin samples: label a
//! namespace, call a Service with `kubectl exec`, scale a Deployment, apply
//! an AuthorizationPolicy, delete a pod, remove the label. Needs root, the components and
//! the mesh's binaries built beside `cluster`: `cargo xtask cluster test`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_cluster::config::{Layout, Node, UpArgs};
use mesh_cluster::{host, lifecycle};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Removes the cluster also when an assertion fails.
struct Down(Layout);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = lifecycle::down(&self.0);
    }
}

/// The cluster's kubectl as its admin; stdout, or stderr as the error.
fn kubectl(layout: &Layout, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(layout.program("kubectl"))
        .arg(format!(
            "--kubeconfig={}",
            layout.kubeconfig("admin").display()
        ))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(input.unwrap_or_default().as_bytes())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn eventually(what: &str, bound: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the ztunnel pod of node `index` wrote (its access log among it).
fn ztunnel_log(layout: &Layout, index: u8) -> String {
    let pods = layout.node_root(&Node::new(index)).join("var/log/pods");
    std::fs::read_dir(&pods)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("istio-system_ztunnel-")
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("ztunnel.log")).ok())
        .collect()
}

/// Each istio-system pod as `name=<Ready status>`.
fn ready(layout: &Layout) -> String {
    kubectl(
        layout,
        &["get", "pods", "-n", "istio-system", "-o",
          "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}"],
        None,
    )
    .unwrap_or_default()
}

/// Whether the pod in `netns` has the in-pod redirection: the nftables
/// table, or the tc programs on its interface.
fn captured(netns: &str, redirection: Redirection) -> bool {
    match redirection {
        Redirection::Nftables => {
            host::run("ip", &["netns", "exec", netns, "nft", "list", "tables"])
                .is_ok_and(|t| t.contains("mesh-ambient"))
        }
        Redirection::Ebpf => host::run(
            "ip",
            &[
                "netns", "exec", netns, "tc", "filter", "show", "dev", "eth0", "ingress",
            ],
        )
        .is_ok_and(|t| t.contains("mesh_ingress")),
    }
}

/// The network namespaces of the pods labelled `app=<app>` in `demo`.
fn sandboxes(layout: &Layout, app: &str) -> Vec<String> {
    kubectl(
        layout,
        &[
            "get",
            "pods",
            "-n",
            "demo",
            "-l",
            &format!("app={app}"),
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}/{.metadata.uid}/{.status.phase} {end}",
        ],
        None,
    )
    .unwrap_or_default()
    .split_whitespace()
    .filter(|p| p.ends_with("/Running"))
    .filter_map(|p| {
        let mut parts = p.split('/');
        let (node, uid) = (parts.next()?, parts.next()?);
        Some(format!("kc-{node}-{}", uid.get(..8)?))
    })
    .collect()
}

/// Istio's own: allow nothing to the workloads it selects.
const ALLOW_NOTHING: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: demo}
spec:
  selector:
    matchLabels: {app: httpbin}
"#;

/// How the node agents capture pods: the install profile's choice.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Redirection {
    Nftables,
    Ebpf,
}

#[tokio::test]
#[ignore = "needs root, the components and the mesh's binaries: cargo xtask cluster test"]
async fn ambientctl_installs_the_mesh_and_a_namespace_label_puts_pods_in_and_out_live() {
    the_mesh_on_the_cluster(Redirection::Nftables).await;
}

#[tokio::test]
#[ignore = "needs root, the components and the mesh's binaries: cargo xtask cluster test"]
async fn the_ambient_ebpf_profile_captures_with_tc_programs_that_go_when_the_pods_are_released() {
    the_mesh_on_the_cluster(Redirection::Ebpf).await;
    let programs = host::run("bpftool", &["prog", "show"]).unwrap();
    assert!(
        !programs.contains("mesh_ingress") && !programs.contains("mesh_egress"),
        "programs left after every pod was released: {programs}"
    );
}

async fn the_mesh_on_the_cluster(redirection: Redirection) {
    let captured = |netns: &str| captured(netns, redirection);
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(
        &dir.path().join("state"),
        &root().join("target/cluster/bin"),
    );
    let _guard = Down(layout.clone());
    let program = PathBuf::from(env!("CARGO_BIN_EXE_cluster"));
    lifecycle::up(&layout, &UpArgs::nodes(2), &program)
        .await
        .unwrap();

    // The install, as Istio's ambient guide has a user run it: the Gateway
    // API's CRDs, then the installer, which returns once every component
    // (a pod each) is Ready; then Istio's own CRDs over ours, so that what
    // follows runs on Istio's real schemas (from the pinned istio.io/api).
    let crds = root().join("target/cluster/crds");
    let gateway_api = crds.join("gateway-api/standard").display().to_string();
    kubectl(
        &layout,
        &["apply", "--server-side", "-f", &gateway_api],
        None,
    )
    .unwrap();
    let began = Instant::now();
    let ambientctl = program.with_file_name("ambientctl");
    let install = Command::new(&ambientctl)
        .arg(format!(
            "--kubeconfig={}",
            layout.kubeconfig("admin").display()
        ))
        .args(["install", "-y", "--readiness-timeout=2m"])
        .args(match redirection {
            Redirection::Nftables => &[][..],
            Redirection::Ebpf => &["--set", "profile=ambient-ebpf"][..],
        })
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --bins)", ambientctl.display()));
    let said = String::from_utf8_lossy(&install.stdout);
    assert!(
        install.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&install.stderr)
    );
    assert_eq!(
        said,
        "✔ Istio core installed\n✔ Istiod installed\n✔ CNI installed\n✔ Ztunnel installed\n✔ Installation complete\n"
    );
    let pods = ready(&layout);
    assert!(
        pods.split_whitespace().count() == 5
            && pods.split_whitespace().all(|p| p.ends_with("=True")),
        "{pods}"
    );
    let istio = crds.join("istio.yaml").display().to_string();
    kubectl(
        &layout,
        &["apply", "--server-side", "--force-conflicts", "-f", &istio],
        None,
    )
    .unwrap();
    eprintln!(
        "the mesh was installed and Ready in {:.1} s",
        began.elapsed().as_secs_f64()
    );

    // Istio's curl and httpbin samples, text unchanged (`cargo xtask
    // cluster build` copies them from the pinned istio.io/istio module),
    // outside the mesh first: plaintext, nothing captured.
    kubectl(&layout, &["create", "namespace", "demo"], None).unwrap();
    let samples = root().join("target/cluster/samples");
    for sample in ["curl.yaml", "httpbin.yaml"] {
        let file = samples.join(sample).display().to_string();
        kubectl(&layout, &["apply", "-n", "demo", "-f", &file], None).unwrap();
    }
    eventually("the samples run", Duration::from_secs(90), || {
        sandboxes(&layout, "curl").len() == 1 && sandboxes(&layout, "httpbin").len() == 1
    })
    .await;
    // As Istio's guides call it.
    let call = || {
        kubectl(
            &layout,
            &[
                "exec",
                "-n",
                "demo",
                "deploy/curl",
                "--",
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "3",
                "http://httpbin:8000/get",
            ],
            None,
        )
        .unwrap_or_else(|e| e)
    };
    eventually("httpbin answers", Duration::from_secs(30), || {
        call() == "200"
    })
    .await;
    let (curl, httpbin) = (
        sandboxes(&layout, "curl")[0].clone(),
        sandboxes(&layout, "httpbin")[0].clone(),
    );
    assert!(!captured(&curl) && !captured(&httpbin));

    // Labelled: both running pods are captured live, and the call goes over
    // HBONE with both workloads' SPIFFE identities.
    kubectl(
        &layout,
        &[
            "label",
            "namespace",
            "demo",
            "istio.io/dataplane-mode=ambient",
        ],
        None,
    )
    .unwrap();
    eventually("both pods captured", Duration::from_secs(30), || {
        captured(&curl) && captured(&httpbin)
    })
    .await;
    let logs = || ztunnel_log(&layout, 1) + &ztunnel_log(&layout, 2);
    eventually(
        "httpbin answers through the mesh",
        Duration::from_secs(30),
        || {
            call() == "200" && {
                let log = logs();
                log.contains("src.identity=\"spiffe://cluster.local/ns/demo/sa/curl\"")
                    && log.contains("dst.identity=\"spiffe://cluster.local/ns/demo/sa/httpbin\"")
            }
        },
    )
    .await;

    // `kubectl scale`: the new replica is captured from its start.
    kubectl(
        &layout,
        &["scale", "-n", "demo", "deployment/httpbin", "--replicas=2"],
        None,
    )
    .unwrap();
    eventually(
        "both httpbin replicas captured",
        Duration::from_secs(30),
        || {
            let s = sandboxes(&layout, "httpbin");
            s.len() == 2 && s.iter().all(|n| captured(n))
        },
    )
    .await;

    // Istio's AuthorizationPolicy, unchanged: allow nothing, then deleted.
    kubectl(&layout, &["apply", "-f", "-"], Some(ALLOW_NOTHING)).unwrap();
    eventually(
        "the policy refuses the call",
        Duration::from_secs(30),
        || call() != "200",
    )
    .await;
    kubectl(&layout, &["delete", "-f", "-"], Some(ALLOW_NOTHING)).unwrap();
    eventually("allowed again", Duration::from_secs(30), || call() == "200").await;

    // A captured pod deleted: its network namespace goes, and with it the
    // redirection inside (nftables table, tc programs' attachment).
    let pod = kubectl(
        &layout,
        &[
            "get",
            "pods",
            "-n",
            "demo",
            "-l",
            "app=curl",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        None,
    )
    .unwrap();
    kubectl(
        &layout,
        &["delete", "pod", "-n", "demo", &pod, "--wait=true"],
        None,
    )
    .unwrap();
    // The curl sample's grace period is 0: the API object goes at once and
    // the node tears the pod down after, as a kubelet does.
    eventually(
        "the deleted pod's namespace removed",
        Duration::from_secs(30),
        || !host::ip(&["netns", "list"]).unwrap().contains(&curl),
    )
    .await;
    // Its Deployment's new pod is captured from its start.
    eventually("the new curl pod captured", Duration::from_secs(30), || {
        let s = sandboxes(&layout, "curl");
        s.len() == 1 && s[0] != curl && captured(&s[0])
    })
    .await;

    // The label removed: released live, plaintext again.
    kubectl(
        &layout,
        &["label", "namespace", "demo", "istio.io/dataplane-mode-"],
        None,
    )
    .unwrap();
    eventually("every pod released", Duration::from_secs(30), || {
        let all: Vec<String> = sandboxes(&layout, "curl")
            .into_iter()
            .chain(sandboxes(&layout, "httpbin"))
            .collect();
        all.len() == 3 && all.iter().all(|n| !captured(n))
    })
    .await;
    eventually(
        "httpbin answers in plaintext",
        Duration::from_secs(30),
        || call() == "200",
    )
    .await;
}

//! The plugin as the container runtime sees it: `CNI_*` variables and a
//! network config in, a result or a CNI error out, against a fake node agent
//! on a unix socket in a temporary directory. The last tests run the built
//! binary itself.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use cni_plugin::plugin::{self, Output};
use cni_plugin::protocol::{AgentReply, Command, PluginEvent};
use serde_json::{Value, json};

const K8S_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=apps;K8S_POD_NAME=web;\
                        K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=9f1c-uid";
const NETNS: &str = "/var/run/netns/cni-1234";

/// A node agent that records every event and answers each with `reply`.
struct FakeAgent {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    events: Arc<Mutex<Vec<PluginEvent>>>,
}

impl FakeAgent {
    fn start(reply: AgentReply) -> Self {
        Self::start_raw(format!("{}\n", serde_json::to_string(&reply).unwrap()))
    }

    /// Answers with `reply` verbatim, valid or not.
    fn start_raw(reply: String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("plugin.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let recorded = events.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                let event = serde_json::from_str(line.trim_end()).unwrap();
                recorded.lock().unwrap().push(event);
                stream.write_all(reply.as_bytes()).unwrap();
            }
        });
        Self {
            _dir: dir,
            socket,
            events,
        }
    }

    fn events(&self) -> Vec<PluginEvent> {
        self.events.lock().unwrap().clone()
    }
}

/// A socket path nobody listens on, in a directory that lives as long as
/// the returned guard.
fn dead_socket() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("plugin.sock");
    (dir, socket)
}

fn prev_result() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": NETNS}],
        "ips": [
            {"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 0},
            {"address": "fd00:10:244:1::5/64", "interface": 0}
        ],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {}
    })
}

/// Our entry of a conflist, as the runtime hands it over (with a field for
/// some other consumer, which we must ignore).
fn conf(socket: &Path, extra: Value) -> Vec<u8> {
    let mut conf = json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "mesh-cni",
        "agentSocket": socket,
        "runtimeConfig": {"portMappings": []},
        "prevResult": prev_result(),
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            conf.as_object_mut().unwrap().remove(k);
        } else {
            conf[k] = v.clone();
        }
    }
    serde_json::to_vec(&conf).unwrap()
}

fn env(command: &str, args: &str) -> BTreeMap<String, String> {
    [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", NETNS),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", args),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The CNI error on stdout: (code, msg).
fn cni_error(out: &Output) -> (u64, String) {
    assert_eq!(out.exit_code, 1, "expected a failure, got {out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["cniVersion"], "1.0.0");
    (
        v["code"].as_u64().unwrap(),
        v["msg"].as_str().unwrap().to_string(),
    )
}

fn assert_passed_through(out: &Output) {
    assert_eq!(out.exit_code, 0, "expected success, got {out:?}");
    let got: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(got, prev_result());
}

/// A manifest directory with `apps` labelled `mode` (unlabelled if None)
/// and, optionally, the pod `apps/web` with its own label.
fn manifests(mode: Option<&str>, pod_mode: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ns_labels = mode
        .map(|m| format!("  labels:\n    istio.io/dataplane-mode: {m}\n"))
        .unwrap_or_default();
    let mut text = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n{ns_labels}");
    if let Some(m) = pod_mode {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: apps\n  \
             labels:\n    app: web\n    istio.io/dataplane-mode: {m}\nspec:\n  \
             serviceAccountName: web\n"
        ));
    }
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    dir
}

#[test]
fn version_lists_the_supported_versions() {
    let env = BTreeMap::from([("CNI_COMMAND".to_string(), "VERSION".to_string())]);
    let out = plugin::run(&env, br#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(out.exit_code, 0);
    assert_eq!(
        out.stdout,
        r#"{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}"#
    );
}

#[test]
fn add_passes_prev_result_through_and_tells_the_agent() {
    for reply in [AgentReply::Captured, AgentReply::NotEnrolled] {
        let agent = FakeAgent::start(reply);
        let out = plugin::run(&env("ADD", K8S_ARGS), &conf(&agent.socket, json!({})));
        assert_passed_through(&out);
        assert_eq!(
            agent.events(),
            vec![PluginEvent {
                command: Command::Add,
                container_id: "c1".into(),
                netns: NETNS.into(),
                pod_name: "web".into(),
                pod_namespace: "apps".into(),
                pod_uid: Some("9f1c-uid".into()),
                ips: vec![
                    "10.244.1.5".parse().unwrap(),
                    "fd00:10:244:1::5".parse().unwrap()
                ],
            }]
        );
    }
}

#[test]
fn add_without_prev_result_fails() {
    let agent = FakeAgent::start(AgentReply::Captured);
    let stdin = conf(&agent.socket, json!({"prevResult": null}));
    let (code, msg) = cni_error(&plugin::run(&env("ADD", K8S_ARGS), &stdin));
    assert_eq!(code, 7);
    assert_eq!(
        msg,
        "mesh-cni must run chained after a plugin that assigns addresses (no prevResult)"
    );
    assert!(agent.events().is_empty());
}

#[test]
fn an_agent_error_fails_the_pod() {
    let agent = FakeAgent::start(AgentReply::Error {
        message: "ztunnel is not connected".into(),
    });
    let out = plugin::run(&env("ADD", K8S_ARGS), &conf(&agent.socket, json!({})));
    let (code, msg) = cni_error(&out);
    assert_eq!(code, 999);
    assert_eq!(
        msg,
        "pod apps/web is in the mesh but could not be captured: ztunnel is not connected"
    );
}

#[test]
fn agent_down_and_ambient_namespace_fails_closed() {
    let (_guard, socket) = dead_socket();
    let dir = manifests(Some("ambient"), None);
    let stdin = conf(&socket, json!({"manifestDir": dir.path()}));
    let (code, msg) = cni_error(&plugin::run(&env("ADD", K8S_ARGS), &stdin));
    assert_eq!(code, 999);
    let want = format!(
        "pod apps/web is in the mesh (namespace label istio.io/dataplane-mode=ambient) \
         but the node agent at {} is unreachable: cannot connect: ",
        socket.display()
    );
    assert!(msg.starts_with(&want), "{msg}");
    assert!(
        msg.ends_with("; refusing to start it without capture"),
        "{msg}"
    );
}

#[test]
fn agent_down_and_pod_label_names_the_pod_label() {
    let (_guard, socket) = dead_socket();
    let dir = manifests(None, Some("ambient"));
    let stdin = conf(&socket, json!({"manifestDir": dir.path()}));
    let (_, msg) = cni_error(&plugin::run(&env("ADD", K8S_ARGS), &stdin));
    assert!(
        msg.contains("is in the mesh (pod label istio.io/dataplane-mode=ambient)"),
        "{msg}"
    );
}

#[test]
fn agent_down_and_unlabelled_namespace_starts_the_pod() {
    let (_guard, socket) = dead_socket();
    let dir = manifests(None, None);
    let stdin = conf(&socket, json!({"manifestDir": dir.path()}));
    assert_passed_through(&plugin::run(&env("ADD", K8S_ARGS), &stdin));
}

#[test]
fn agent_down_and_opted_out_pod_starts() {
    let (_guard, socket) = dead_socket();
    let dir = manifests(Some("ambient"), Some("none"));
    let stdin = conf(&socket, json!({"manifestDir": dir.path()}));
    assert_passed_through(&plugin::run(&env("ADD", K8S_ARGS), &stdin));
}

#[test]
fn agent_down_without_manifest_dir_fails_closed() {
    let (_guard, socket) = dead_socket();
    let (code, msg) = cni_error(&plugin::run(
        &env("ADD", K8S_ARGS),
        &conf(&socket, json!({})),
    ));
    assert_eq!(code, 999);
    assert!(msg.contains("without `manifestDir`"), "{msg}");
    assert!(
        msg.contains("refusing to start it without capture"),
        "{msg}"
    );
    // Excluded namespaces need no decision.
    let kube_system = "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1";
    assert_passed_through(&plugin::run(
        &env("ADD", kube_system),
        &conf(&socket, json!({})),
    ));
}

#[test]
fn a_garbage_reply_counts_as_unreachable() {
    let agent = FakeAgent::start_raw("HTTP/1.1 400 Bad Request\r\n".into());
    let dir = manifests(Some("ambient"), None);
    let stdin = conf(&agent.socket, json!({"manifestDir": dir.path()}));
    let (_, msg) = cni_error(&plugin::run(&env("ADD", K8S_ARGS), &stdin));
    assert!(
        msg.contains("is unreachable: its reply \"HTTP/1.1 400"),
        "{msg}"
    );
    // Outside the mesh, the same agent does not stop the pod.
    let dir = manifests(None, None);
    let stdin = conf(&agent.socket, json!({"manifestDir": dir.path()}));
    assert_passed_through(&plugin::run(&env("ADD", K8S_ARGS), &stdin));
}

#[test]
fn sandboxes_that_are_not_pods_pass_through_untouched() {
    let agent = FakeAgent::start(AgentReply::Error {
        message: "must not be asked".into(),
    });
    let stdin = conf(&agent.socket, json!({}));
    assert_passed_through(&plugin::run(&env("ADD", "IgnoreUnknown=1"), &stdin));
    assert_passed_through(&plugin::run(&env("ADD", ""), &stdin));
    assert!(agent.events().is_empty());
}

#[test]
fn del_always_succeeds() {
    let (_guard, socket) = dead_socket();
    let mut del = env("DEL", K8S_ARGS);
    del.remove("CNI_NETNS");
    let out = plugin::run(&del, &conf(&socket, json!({"prevResult": null})));
    assert_eq!(out, Output::success(String::new()));

    let agent = FakeAgent::start(AgentReply::Error {
        message: "no such pod".into(),
    });
    let out = plugin::run(&del, &conf(&agent.socket, json!({})));
    assert_eq!(out, Output::success(String::new()));
    let events = agent.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].command, Command::Del);
    assert_eq!(events[0].netns, PathBuf::new());
}

#[test]
fn check_asks_the_agent() {
    let agent = FakeAgent::start(AgentReply::Captured);
    let out = plugin::run(&env("CHECK", K8S_ARGS), &conf(&agent.socket, json!({})));
    assert_eq!(out, Output::success(String::new()));
    assert_eq!(agent.events()[0].command, Command::Check);

    let agent = FakeAgent::start(AgentReply::Error {
        message: "the pod's redirection rules are gone".into(),
    });
    let out = plugin::run(&env("CHECK", K8S_ARGS), &conf(&agent.socket, json!({})));
    let (code, msg) = cni_error(&out);
    assert_eq!(code, 999);
    assert!(
        msg.ends_with("the pod's redirection rules are gone"),
        "{msg}"
    );
}

#[test]
fn a_hung_agent_is_given_up_on() {
    let (_guard, socket) = dead_socket();
    // Accepts (the kernel's backlog does) and never answers.
    let _listener = UnixListener::bind(&socket).unwrap();
    let dir = manifests(None, None);
    let stdin = conf(&socket, json!({"manifestDir": dir.path()}));
    let plugin = plugin::Plugin {
        agent_timeout: std::time::Duration::from_millis(200),
    };
    assert_passed_through(&plugin.run(&env("ADD", K8S_ARGS), &stdin));
}

#[test]
fn bad_config_is_named() {
    let (_guard, socket) = dead_socket();
    let out = plugin::run(
        &env("ADD", K8S_ARGS),
        br#"{"cniVersion": "1.0.0", "name": "#,
    );
    let (code, msg) = cni_error(&out);
    assert_eq!(code, 6);
    assert!(
        msg.starts_with("the network config on stdin is not valid JSON: EOF while parsing"),
        "{msg}"
    );

    let stdin = conf(&socket, json!({"excludedNamespaces": "kube-system"}));
    let (code, msg) = cni_error(&plugin::run(&env("ADD", K8S_ARGS), &stdin));
    assert_eq!(code, 7);
    assert!(
        msg.contains("excludedNamespaces: invalid type: string"),
        "{msg}"
    );

    let stdin = conf(
        &socket,
        json!({"prevResult": {"ips": [{"address": "ten/24"}]}}),
    );
    let (code, msg) = cni_error(&plugin::run(&env("ADD", K8S_ARGS), &stdin));
    assert_eq!(code, 7);
    assert!(msg.contains("ips[0].address \"ten/24\""), "{msg}");

    let mut no_command = env("ADD", K8S_ARGS);
    no_command.remove("CNI_COMMAND");
    let (code, msg) = cni_error(&plugin::run(&no_command, &conf(&socket, json!({}))));
    assert_eq!(code, 4);
    assert!(msg.starts_with("CNI_COMMAND is not set"), "{msg}");
}

/// Runs the built binary with only `vars` in its environment.
fn run_binary(vars: &BTreeMap<String, String>, stdin: &[u8]) -> std::process::Output {
    let mut child = Process::new(env!("CARGO_BIN_EXE_mesh-cni"))
        .env_clear()
        .envs(vars)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_binary_answers_version() {
    let vars = BTreeMap::from([("CNI_COMMAND".to_string(), "VERSION".to_string())]);
    let out = run_binary(&vars, br#"{"cniVersion":"1.0.0"}"#);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        r#"{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}"#
    );
}

#[test]
fn the_binary_adds_a_pod() {
    let agent = FakeAgent::start(AgentReply::Captured);
    let stdin = conf(&agent.socket, json!({"logLevel": "debug"}));
    let out = run_binary(&env("ADD", K8S_ARGS), &stdin);
    assert!(out.status.success(), "{out:?}");
    // Only the result on stdout; the logs went to stderr.
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, prev_result());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("captured"),
        "{out:?}"
    );
    assert_eq!(agent.events()[0].pod_uid.as_deref(), Some("9f1c-uid"));

    let (_guard, socket) = dead_socket();
    let out = run_binary(&env("ADD", K8S_ARGS), &conf(&socket, json!({})));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 999);
}

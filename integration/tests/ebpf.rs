//! What only the eBPF redirection has to prove: a program the kernel
//! refuses makes enrollment fail loudly without opening a plaintext path,
//! and releasing every pod leaves no program or map of ours behind. (The
//! capture suite itself runs in eBPF mode with `cargo xtask e2e --redirect
//! ebpf`.) Needs root.

use integration::cluster::capture::{self, Capture};
use integration::cluster::host::output;
use integration::cluster::{Cluster, HTTP_PORT, PodSpec, Redirect, TCP_PORT};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");

/// Kernel ids of every loaded program or map (`bpftool prog|map show`).
fn kernel_ids(kind: &str) -> Vec<u64> {
    let out = output("bpftool", &["-j", kind, "show"], None);
    assert!(
        out.status.success(),
        "bpftool {kind} show failed (apt-get install bpftool): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    all.iter().filter_map(|v| v["id"].as_u64()).collect()
}

fn loaded_ids(c: &Cluster, node: &str, kind: &str) -> Vec<u64> {
    c.agent_status(node)["redirection"]["ebpf"]["loaded"][kind]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default()
}

#[test]
fn a_program_the_kernel_refuses_fails_enrollment_clearly_and_nothing_leaves_in_plaintext() {
    let mut c = Cluster::start_with(&["node-a", "node-b"], Redirect::Ebpf);
    c.namespace("apps", &[AMBIENT]);
    c.captured_pods("apps", &[("client", "node-a"), ("remote", "node-b")]);
    let url = format!("http://{}:{HTTP_PORT}/", c.get("apps", "remote").ip);
    c.curl_eventually(c.get("apps", "client"), &url);

    // The agent restarts with an object whose ingress program the
    // verifier refuses.
    let rejected = c.dir.path().join("reject.bpf.o");
    std::fs::write(&rejected, mesh_ebpf::REJECTED_OBJECT).unwrap();
    c.stop_agent("node-a");
    c.start_agent_with("node-a", &["--ebpf-object", rejected.to_str().unwrap()]);
    let client = c.get("apps", "client");
    c.wait_for("the agent reports why it cannot capture", |c| {
        c.agent_status("node-a")["redirection"]["error"].is_string() && c.captured(client)
    });
    let status = c.agent_status("node-a");
    let error = status["redirection"]["error"].as_str().unwrap();
    assert!(
        error.contains("mesh_ingress") && error.contains("verifier"),
        "the error must name the program and the verifier: {error}"
    );

    // A new enrolled pod is refused, with that reason, and never runs.
    let err = c
        .try_pod(PodSpec::new("apps", "late", "node-a"))
        .err()
        .expect("CNI ADD must fail when the programs cannot be loaded");
    assert!(
        err.contains("apps/late") || err.contains("mesh_ingress"),
        "unclear error: {err}"
    );
    assert!(err.contains("verifier"), "the reason is lost: {err}");
    assert!(!std::path::Path::new(&format!("/var/run/netns/{}-apps-late", c.prefix)).exists());

    // The pod captured before keeps the programs already attached: its
    // traffic still crosses the nodes only inside HBONE.
    let client = c.get("apps", "client");
    let cap = Capture::start(&c.lan, &c.node("node-a").uplink, c.dir.path());
    let marker = format!("MARKER-{}", std::process::id());
    let body = c
        .curl(client, &format!("{url}{marker}"))
        .expect("still served");
    assert!(body.starts_with("hello from remote"), "{body}");
    let echoed = c
        .socat(
            client,
            &format!("{}:{TCP_PORT}", c.get("apps", "remote").ip),
            &format!("{marker}\n"),
        )
        .unwrap();
    assert!(echoed.ends_with(&format!("{marker}\n")), "{echoed}");
    let segments = cap.finish();
    assert!(
        !capture::contains(&segments, marker.as_bytes()),
        "plaintext on the wire"
    );
    for port in [HTTP_PORT, TCP_PORT] {
        assert!(
            capture::flows_to_port(&segments, port).is_empty(),
            "plaintext to {port}"
        );
    }
    assert!(
        !capture::flows_to_port(&segments, 15008).is_empty(),
        "no HBONE seen"
    );

    // A plain pod starts: only enrolled pods depend on the programs.
    c.namespace("plain", &[]);
    c.pod(PodSpec::new("plain", "web", "node-a"));
}

#[test]
fn releasing_every_pod_leaves_no_program_filter_or_map_behind() {
    let mut c = Cluster::start_with(&["node-a"], Redirect::Ebpf);
    c.namespace("apps", &[AMBIENT]);
    c.captured_pods("apps", &[("a", "node-a"), ("b", "node-a")]);
    let url = format!("http://{}:{HTTP_PORT}/", c.get("apps", "b").ip);
    c.curl_eventually(c.get("apps", "a"), &url);
    c.wait_for("the agent lists what it loaded", |c| {
        !loaded_ids(c, "node-a", "programs").is_empty()
    });
    let programs = loaded_ids(&c, "node-a", "programs");
    let maps = loaded_ids(&c, "node-a", "maps");
    assert_eq!(programs.len(), 2, "egress and ingress");
    assert!(maps.len() >= 2, "the counters and the settings: {maps:?}");
    let (in_kernel_programs, in_kernel_maps) = (kernel_ids("prog"), kernel_ids("map"));
    assert!(programs.iter().all(|id| in_kernel_programs.contains(id)));
    assert!(maps.iter().all(|id| in_kernel_maps.contains(id)));

    // Unlabelling the namespace releases both pods.
    c.namespace("apps", &[]);
    for name in ["a", "b"] {
        let pod = c.get("apps", name);
        c.wait_for(&format!("apps/{name} is released"), |c| {
            !c.captured(pod) && c.pod_rules(pod).is_none()
        });
        let qdiscs = output(
            "nsenter",
            &[
                &format!("--net=/var/run/netns/{}", pod.netns),
                "tc",
                "qdisc",
                "show",
            ],
            None,
        );
        assert!(
            !String::from_utf8_lossy(&qdiscs.stdout).contains("clsact"),
            "the clsact qdisc stayed on apps/{name}"
        );
    }
    c.wait_for("the kernel has freed our programs and maps", |_| {
        let (p, m) = (kernel_ids("prog"), kernel_ids("map"));
        programs.iter().all(|id| !p.contains(id)) && maps.iter().all(|id| !m.contains(id))
    });
    assert!(c.agent_status("node-a")["redirection"]["ebpf"]["loaded"].is_null());
    // The released pods talk directly again.
    let body = c.curl(c.get("apps", "a"), &url).unwrap();
    assert_eq!(
        body,
        format!("hello from b, you are {}\n", c.get("apps", "a").ip)
    );
}

/// Hides the kernel's BTF from the command it runs: a mount namespace of
/// its own with `/dev/null` over `/sys/kernel/btf/vmlinux`, checked empty
/// before the command starts. A slave of the host's, so the pods' network
/// namespaces mounted later still appear in it.
const WITHOUT_KERNEL_BTF: &[&str] = &[
    "unshare",
    "--mount",
    "--propagation",
    "slave",
    "--",
    "sh",
    "-c",
    "mount --bind /dev/null /sys/kernel/btf/vmlinux && test ! -s /sys/kernel/btf/vmlinux && exec \"$@\"",
    "sh",
];

/// reliability.md R6, missing BTF: the programs use no CO-RE relocation,
/// so a kernel whose BTF the agent cannot read changes nothing: a pod
/// enrolled by an agent that cannot see it is captured with programs that
/// agent loaded, and its traffic crosses the nodes only inside HBONE.
#[test]
fn without_the_kernels_btf_the_programs_load_and_capture_as_before() {
    let mut c = Cluster::start_with(&["node-a", "node-b"], Redirect::Ebpf);
    c.namespace("apps", &[AMBIENT]);
    c.captured_pods("apps", &[("remote", "node-b")]);
    c.stop_agent("node-a");
    c.agent_wrapper = WITHOUT_KERNEL_BTF.iter().map(|a| a.to_string()).collect();
    c.start_agent("node-a");
    let mounts =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", c.agent_pid("node-a"))).unwrap();
    assert!(
        mounts.contains(" /sys/kernel/btf/vmlinux "),
        "the agent still sees the kernel's BTF:\n{mounts}"
    );

    c.captured_pods("apps", &[("client", "node-a")]);
    c.wait_for("the agent lists what it loaded", |c| {
        loaded_ids(c, "node-a", "programs").len() == 2
    });
    let client = c.get("apps", "client");
    let remote = c.get("apps", "remote");
    let url = format!("http://{}:{HTTP_PORT}/", remote.ip);
    c.curl_eventually(client, &url);
    let cap = Capture::start(&c.lan, &c.node("node-a").uplink, c.dir.path());
    let marker = format!("MARKER-{}", std::process::id());
    let body = c.curl(client, &format!("{url}{marker}")).expect("served");
    assert!(body.starts_with("hello from remote"), "{body}");
    let segments = cap.finish();
    assert!(
        !capture::contains(&segments, marker.as_bytes()),
        "plaintext on the wire"
    );
    assert!(
        capture::flows_to_port(&segments, HTTP_PORT).is_empty(),
        "plaintext to {HTTP_PORT}"
    );
    assert!(
        !capture::flows_to_port(&segments, 15008).is_empty(),
        "no HBONE seen"
    );
}

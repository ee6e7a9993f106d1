use super::*;
use crate::local::LocalMesh;

/// A page, its commands that are not tour steps (how to bring the mesh up,
/// before the steps, and take it down, after), and its tour. `cargo xtask
/// ci` runs the tours (`cargo xtask demo --check`).
struct Page {
    file: &'static str,
    setup: &'static [&'static str],
    steps: &'static [Step],
    teardown: &'static [&'static str],
}

const PAGES: [Page; 2] = [
    Page {
        file: "getting-started.md",
        setup: &[
            "cargo xtask demo",
            "cargo xtask cluster up\nexport KUBECONFIG=$PWD/target/cluster/run/admin.kubeconfig\nexport PATH=$PWD/target/debug:$PWD/target/cluster/bin:$PATH",
            "kubectl apply --server-side -f target/cluster/crds/gateway-api/standard/\nambientctl install -y\nkubectl apply --server-side --force-conflicts -f target/cluster/crds/istio.yaml",
            "kubectl apply -f samples/demo.yaml\nkubectl wait -n demo --for=condition=Available deployment --all",
            "ambientctl demo check",
        ],
        steps: cluster::STEPS,
        teardown: &["cargo xtask cluster down"],
    },
    Page {
        file: "local-mesh.md",
        setup: &[
            "cargo xtask demo --local",
            "cargo build\nexport PATH=$PWD/target/debug:$PATH\nambientctl demo up",
            "ambientctl demo check",
        ],
        steps: local::STEPS,
        teardown: &["ambientctl demo down"],
    },
];

/// The contents of the page's ```sh blocks, in order.
fn sh_blocks(page: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in page.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), l) => lines.push(l),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```sh block");
    blocks
}

#[test]
fn each_page_shows_exactly_the_commands_its_tour_runs() {
    for page in &PAGES {
        let text = std::fs::read_to_string(format!(
            "{}/../docs/{}",
            env!("CARGO_MANIFEST_DIR"),
            page.file
        ))
        .unwrap_or_else(|e| panic!("docs/{}: {e}", page.file));
        let expected: Vec<String> = page
            .setup
            .iter()
            .copied()
            .chain(page.steps.iter().map(|s| s.command))
            .chain(page.teardown.iter().copied())
            .map(str::to_string)
            .collect();
        let shown = sh_blocks(&text);
        for (i, (shown, expected)) in shown.iter().zip(&expected).enumerate() {
            assert_eq!(shown, expected, "```sh block {} of {}", i + 1, page.file);
        }
        assert_eq!(
            shown.len(),
            expected.len(),
            "number of ```sh blocks of {}",
            page.file
        );
    }
}

#[test]
fn sh_blocks_are_read_whole_and_other_blocks_skipped() {
    let page = "text\n```sh\na\nb <<EOF\nEOF\n```\n```text\nout\n```\n```sh\nc\n```\n";
    assert_eq!(sh_blocks(page), ["a\nb <<EOF\nEOF", "c"]);
}

fn ran(code: i32, stdout: &str) -> Ran {
    Ran {
        code: Some(code),
        stdout: stdout.into(),
        stderr: String::new(),
    }
}

fn step(steps: &'static [Step], title: &str) -> &'static Step {
    steps
        .iter()
        .find(|s| s.title == title)
        .expect("a step of the tour")
}

fn mesh() -> LocalMesh {
    serde_json::from_str(
        r#"{"pid":1,"manifests":"/m","logs":"/l","ztunnels":[],
        "pods":[{"namespace":"demo","name":"waypoint","node":"node-b","netns":"x","ip":"10.1.2.9"}]}"#,
    )
    .unwrap()
}

#[test]
fn the_checks_tell_a_good_outcome_from_a_bad_one() {
    for steps in [local::STEPS, cluster::STEPS] {
        let refused = step(steps, "The client's connection to db is refused");
        assert!((refused.check)(&ran(56, ""), &mesh()).is_ok());
        assert!((refused.check)(&ran(0, "hello from db, you are 10.0.0.1\n"), &mesh()).is_err());
        assert!(
            (refused.check)(&ran(6, ""), &mesh()).is_err(),
            "no name resolution is no denial"
        );

        let via = step(steps, "web now sees the waypoint as its client");
        assert!((via.check)(&ran(0, "hello from web-v1, you are 10.1.2.9\n"), &mesh()).is_ok());
        assert!((via.check)(&ran(0, "hello from web-v1, you are 10.1.1.2\n"), &mesh()).is_err());

        let split = step(steps, "200 requests, split 90/10");
        let good = "    181 hello from web-v1\n     19 hello from web-v2\n";
        assert_eq!(
            (split.check)(&ran(0, good), &mesh()).unwrap(),
            "web-v1 181, web-v2 19"
        );
        let all_v1 = "    200 hello from web-v1\n";
        assert!((split.check)(&ran(0, all_v1), &mesh()).is_err());
        let short = "    170 hello from web-v1\n     10 hello from web-v2\n";
        assert!((split.check)(&ran(0, short), &mesh()).is_err());

        let denied = step(steps, "POST is denied by the waypoint");
        assert!((denied.check)(&ran(0, "RBAC: access denied"), &mesh()).is_ok());
        assert!((denied.check)(&ran(0, "hello from web-v1, you are 10.1.2.9\n"), &mesh()).is_err());

        let hbone = step(steps, "ztunnel knows the demo's pods, all on HBONE");
        let rows = |suffix: &str, last: &str| {
            ["client", "web-v1", "web-v2", "db"]
                .iter()
                .map(|p| format!("demo {p}{suffix} 10.0.0.1 node-1 None {last}\n"))
                .collect::<String>()
        };
        assert!((hbone.check)(&ran(0, &rows("", "HBONE")), &mesh()).is_ok());
        assert!((hbone.check)(&ran(0, &rows("-5c45b7855d-c9rd9", "HBONE")), &mesh()).is_ok());
        assert!((hbone.check)(&ran(0, &rows("", "TCP")), &mesh()).is_err());
    }
}

#[test]
fn cluster_pods_are_found_by_their_deployment() {
    let mut ips = std::collections::HashMap::new();
    ips.insert("waypoint".to_string(), "10.1.2.9".to_string());
    let pods = cluster::ClusterPods::from_ips(ips);
    assert_eq!(pods.ip("waypoint").as_deref(), Some("10.1.2.9"));
    assert_eq!(
        cluster::deployment_of("web-v1-f9d8c445f-ck7jf"),
        Some("web-v1")
    );
    assert_eq!(cluster::deployment_of("bare"), None);

    let nodes = step(cluster::STEPS, "Two nodes, Ready");
    let two = "NAME STATUS ROLES AGE VERSION\nnode-1 Ready <none> 1m v1.37.2\nnode-2 Ready <none> 1m v1.37.2\n";
    assert!((nodes.check)(&ran(0, two), &pods).is_ok());
    let one = "NAME STATUS ROLES AGE VERSION\nnode-1 Ready <none> 1m v1.37.2\nnode-2 NotReady <none> 1m v1.37.2\n";
    assert!((nodes.check)(&ran(0, one), &pods).is_err());

    let mesh = step(
        cluster::STEPS,
        "Every pod Running and Ready, the mesh's on every node",
    );
    let up = "NAMESPACE NAME READY STATUS RESTARTS AGE\n\
              istio-system istio-cni-node-a 1/1 Running 0 1m\nistio-system istio-cni-node-b 1/1 Running 0 1m\n\
              istio-system istiod-b66-hm 1/1 Running 0 1m\nistio-system ztunnel-j 1/1 Running 0 1m\n\
              istio-system ztunnel-z 1/1 Running 0 1m\nkube-system coredns-c6-n5 1/1 Running 0 1m\n";
    assert!((mesh.check)(&ran(0, up), &pods).is_ok());
    assert!(
        (mesh.check)(
            &ran(0, &up.replace("ztunnel-z 1/1", "ztunnel-z 0/1")),
            &pods
        )
        .is_err()
    );
    assert!(
        (mesh.check)(
            &ran(
                0,
                &up.replace("coredns-c6-n5 1/1 Running", "coredns-c6-n5 0/1 Pending")
            ),
            &pods
        )
        .is_err()
    );
    assert!((mesh.check)(&ran(0, &up.replace("ztunnel-j", "zt-j")), &pods).is_err());
}

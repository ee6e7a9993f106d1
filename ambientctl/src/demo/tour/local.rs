//! The tour of the local mesh (`docs/local-mesh.md`): the same story as
//! the cluster's, with `ambientctl` standing in for kubectl and
//! `ambientctl demo exec` for `kubectl exec`.

use super::*;

impl Pods for crate::local::LocalMesh {
    fn ip(&self, name: &str) -> Option<String> {
        self.pod(name, NAMESPACE).ok().map(|p| p.ip.clone())
    }
}

pub const STEPS: &[Step] = &[
    Step {
        title: "Enroll namespace demo in the mesh",
        command: "ambientctl namespace enroll demo",
        eventually: false,
        check: stored,
    },
    Step {
        title: "The client reaches web through the ztunnels",
        command: "ambientctl demo exec client -- curl -s http://web.demo/",
        eventually: true,
        check: web_v1_answered,
    },
    Step {
        title: "ztunnel knows the demo's pods, all on HBONE",
        command: "ambientctl ztunnel-config workloads --workload-namespace demo",
        eventually: true,
        check: all_on_hbone,
    },
    Step {
        title: "Each pod holds a SPIFFE certificate (mutual TLS)",
        command: "ambientctl ztunnel-config certificates",
        eventually: true,
        check: a_leaf_is_available,
    },
    Step {
        title: "L4 policy: only web may connect to db",
        command: concat!("ambientctl apply -f - <<EOF\n", db_from_web!(), "EOF"),
        eventually: false,
        check: stored,
    },
    Step {
        title: "The client's connection to db is refused",
        command: "ambientctl demo exec client -- curl -s http://db.demo/",
        eventually: true,
        check: refused,
    },
    Step {
        title: "web-v1 still reaches db",
        command: "ambientctl demo exec web-v1 -- curl -s http://db.demo/",
        eventually: true,
        check: db_answered_web_v1,
    },
    Step {
        title: "A waypoint for namespace demo",
        command: "ambientctl waypoint apply -n demo --enroll-namespace --wait",
        eventually: false,
        check: waypoint_ready,
    },
    Step {
        title: "The waypoint's Gateway",
        command: "ambientctl waypoint list -n demo",
        eventually: false,
        check: waypoint_listed,
    },
    Step {
        title: "ztunnel sends web's traffic to the waypoint",
        command: "ambientctl ztunnel-config services --service-namespace demo",
        eventually: true,
        check: web_bound_to_waypoint,
    },
    Step {
        title: "web now sees the waypoint as its client",
        command: "ambientctl demo exec client -- curl -s http://web.demo/",
        eventually: true,
        check: through_the_waypoint,
    },
    Step {
        title: "L7 policy: web allows GET only",
        command: concat!("ambientctl apply -f - <<EOF\n", web_get_only!(), "EOF"),
        eventually: false,
        check: stored,
    },
    Step {
        title: "POST is denied by the waypoint",
        command: "ambientctl demo exec client -- curl -s -X POST http://web.demo/",
        eventually: true,
        check: post_denied,
    },
    Step {
        title: "A route sends 10% of web's requests to web-v2",
        command: concat!("ambientctl apply -f - <<EOF\n", web_split!(), "EOF"),
        eventually: false,
        check: stored,
    },
    Step {
        title: "200 requests, split 90/10",
        command: "ambientctl demo exec client -- curl -s \"http://web.demo/?[1-200]\" | cut -d, -f1 | sort | uniq -c",
        eventually: true,
        check: split_90_10,
    },
];

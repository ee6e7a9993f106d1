//! The tour on a Kubernetes cluster (`docs/getting-started.md`): what an
//! Istio ambient user types, kubectl for Kubernetes' own verbs and
//! `ambientctl` where they would type istioctl. It needs `kubectl` on PATH
//! and the cluster in `KUBECONFIG`.

use std::collections::HashMap;
use std::path::Path;

use super::*;

/// The demo's pods' addresses, read with kubectl: by the name of the
/// Deployment that made the pod (its name less the ReplicaSet's hash and
/// the pod's suffix).
pub struct ClusterPods(HashMap<String, String>);

impl ClusterPods {
    pub fn read(kubeconfig: Option<&Path>) -> Result<Self, DemoError> {
        let command = format!("kubectl get pods -n {NAMESPACE} -o json");
        let ran = run_command(&command, Target::Cluster(kubeconfig)).map_err(|source| {
            DemoError::Exec {
                what: command.clone(),
                source,
            }
        })?;
        let list: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap_or_default();
        let mut ips = HashMap::new();
        for pod in list["items"].as_array().into_iter().flatten() {
            let (Some(name), Some(ip)) = (
                pod["metadata"]["name"].as_str(),
                pod["status"]["podIP"].as_str(),
            ) else {
                continue;
            };
            if pod["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            if let Some(deployment) = deployment_of(name) {
                ips.insert(deployment.to_string(), ip.to_string());
            }
        }
        Ok(Self(ips))
    }

    #[cfg(test)]
    pub fn from_ips(ips: HashMap<String, String>) -> Self {
        Self(ips)
    }
}

/// The Deployment of a pod it made: `web-v1-f9d8c445f-ck7jf` gives `web-v1`.
pub fn deployment_of(pod: &str) -> Option<&str> {
    let parts: Vec<&str> = pod.rsplitn(3, '-').collect();
    match parts[..] {
        [_, _, deployment] => Some(deployment),
        _ => None,
    }
}

impl Pods for ClusterPods {
    fn ip(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// Two nodes, Ready.
fn nodes_ready(r: &Ran, _: &dyn Pods) -> Result<String, String> {
    succeeded(r)?;
    let ready = r
        .stdout
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
        .count();
    (ready >= 2)
        .then(|| format!("{ready} nodes Ready"))
        .ok_or_else(|| format!("{ready} nodes Ready, 2 expected"))
}

/// Every pod Running and Ready (`kubectl get pods -A`), istiod and a
/// ztunnel and a CNI agent on each node among them.
fn mesh_running(r: &Ran, _: &dyn Pods) -> Result<String, String> {
    succeeded(r)?;
    // NAMESPACE NAME READY STATUS RESTARTS AGE
    let rows: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .filter(|cols: &Vec<&str>| cols.len() >= 4)
        .collect();
    let up = |cols: &Vec<&str>| {
        cols[2].split_once('/').is_some_and(|(a, b)| a == b) && cols[3] == "Running"
    };
    if let Some(down) = rows.iter().find(|c| !up(c)) {
        return Err(format!(
            "pod {}/{} is {} {}",
            down[0], down[1], down[3], down[2]
        ));
    }
    let mesh = |prefix: &str| {
        rows.iter()
            .filter(|c| c[0] == "istio-system" && c[1].starts_with(prefix))
            .count()
    };
    let (istiod, ztunnel, cni) = (mesh("istiod-"), mesh("ztunnel-"), mesh("istio-cni-node-"));
    (istiod >= 1 && ztunnel >= 2 && cni >= 2)
        .then(|| {
            format!(
                "every pod Running and Ready: istiod, {ztunnel} ztunnels and {cni} CNI agents among them"
            )
        })
        .ok_or_else(|| {
            format!("a mesh component is missing: istiod {istiod}, ztunnel {ztunnel}, CNI {cni}")
        })
}

pub const STEPS: &[Step] = &[
    Step {
        title: "Two nodes, Ready",
        command: "kubectl get nodes",
        eventually: false,
        check: nodes_ready,
    },
    Step {
        title: "Every pod Running and Ready, the mesh's on every node",
        command: "kubectl get pods -A",
        eventually: false,
        check: mesh_running,
    },
    Step {
        title: "Put namespace demo in the mesh",
        command: "kubectl label namespace demo istio.io/dataplane-mode=ambient",
        eventually: false,
        check: stored,
    },
    Step {
        title: "The client reaches web through the ztunnels",
        command: "kubectl exec -n demo deploy/client -- curl -s http://web.demo/",
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
        command: concat!("kubectl apply -f - <<EOF\n", db_from_web!(), "EOF"),
        eventually: false,
        check: stored,
    },
    Step {
        title: "The client's connection to db is refused",
        command: "kubectl exec -n demo deploy/client -- curl -s http://db.demo/",
        eventually: true,
        check: refused,
    },
    Step {
        title: "web-v1 still reaches db",
        command: "kubectl exec -n demo deploy/web-v1 -- curl -s http://db.demo/",
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
        command: "kubectl exec -n demo deploy/client -- curl -s http://web.demo/",
        eventually: true,
        check: through_the_waypoint,
    },
    Step {
        title: "L7 policy: web allows GET only",
        command: concat!("kubectl apply -f - <<EOF\n", web_get_only!(), "EOF"),
        eventually: false,
        check: stored,
    },
    Step {
        title: "POST is denied by the waypoint",
        command: "kubectl exec -n demo deploy/client -- curl -s -X POST http://web.demo/",
        eventually: true,
        check: post_denied,
    },
    Step {
        title: "A route sends 10% of web's requests to web-v2",
        command: concat!("kubectl apply -f - <<EOF\n", web_split!(), "EOF"),
        eventually: false,
        check: stored,
    },
    Step {
        title: "200 requests, split 90/10",
        command: "kubectl exec -n demo deploy/client -- curl -s \"http://web.demo/?[1-200]\" | cut -d, -f1 | sort | uniq -c",
        eventually: true,
        check: split_90_10,
    },
    Step {
        title: "Take namespace demo out of the mesh",
        command: "kubectl label namespace demo istio.io/dataplane-mode-",
        eventually: false,
        check: stored,
    },
    Step {
        title: "No policy applies outside the mesh",
        command: "kubectl exec -n demo deploy/client -- curl -s http://db.demo/",
        eventually: true,
        check: db_answered_client,
    },
];

/// Out of the mesh, db answers the client, and sees its own address.
fn db_answered_client(r: &Ran, pods: &dyn Pods) -> Result<String, String> {
    db_answered(r, pods, "client")
}

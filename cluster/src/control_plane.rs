//! The control plane: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler, built from Kubernetes' published modules, run as
//! processes on the host with the flags a kubeadm cluster gives them.

use std::time::{Duration, Instant};

use crate::config::{
    API_PORT, API_SERVICE_IP, CLUSTER_CIDR, CLUSTER_DOMAIN, ETCD_CLIENT_PORT, ETCD_PEER_PORT,
    HOST_IP, Layout, NODE_CIDR_MASK, SERVICE_CIDR,
};
use crate::pki::{Authority, PkiError, Subject, service_account_keys};
use crate::processes::{ProcessError, spawn};
use crate::{kubeconfig, processes};

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("writing {what}")]
    Write {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{component} was not ready within {waited:?}: {last}; its log is {log}")]
    NotReady {
        component: String,
        waited: Duration,
        last: String,
        log: String,
    },
    #[error("{component} exited while starting; its log is {log}")]
    Exited { component: String, log: String },
}

/// The user the nodes' network add-on acts as.
pub const NETWORK_USER: &str = "local-cluster:network";

/// Lets [`NETWORK_USER`] read the nodes (their pod ranges and addresses).
pub async fn grant_network(client: &kube::Client) -> Result<(), kube::Error> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{Api, Patch, PatchParams};
    let name = "local-cluster:network";
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": { "name": name },
        "rules": [{ "apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"] }],
    }))
    .expect("a role built from literals deserializes");
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": { "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": NETWORK_USER }],
    }))
    .expect("a binding built from literals deserializes");
    let apply = PatchParams::apply("local-cluster").force();
    Api::<ClusterRole>::all(client.clone())
        .patch(name, &apply, &Patch::Apply(&role))
        .await?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(name, &apply, &Patch::Apply(&binding))
        .await?;
    Ok(())
}

/// The client identities the cluster's own parts use.
pub fn subjects(nodes: &[crate::config::Node]) -> Vec<Subject> {
    let mut all = vec![
        Subject::new("admin", "kubernetes-admin", &["system:masters"]),
        Subject::new("controller-manager", "system:kube-controller-manager", &[]),
        Subject::new("scheduler", "system:kube-scheduler", &[]),
        // The nodes' network add-on (pod routes between nodes). Kubernetes
        // lets a node read only its own Node, so, as a network add-on's
        // DaemonSet does, it has an identity of its own: see `grant_network`.
        Subject::new("network", NETWORK_USER, &[]),
        // Every node's kube-proxy (bound to system:node-proxier by default).
        Subject::new("kube-proxy", "system:kube-proxy", &[]),
        // How the API server reaches a node's kubelet endpoint (logs, exec).
        Subject::new(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        ),
    ];
    for node in nodes {
        all.push(Subject::new(
            &node.name,
            &format!("system:node:{}", node.name),
            &["system:nodes"],
        ));
    }
    all
}

/// Certificates, keys and kubeconfigs for the API server, the components,
/// the user and every node.
pub fn write_credentials(
    layout: &Layout,
    nodes: &[crate::config::Node],
) -> Result<(), ControlPlaneError> {
    let pki = layout.pki();
    std::fs::create_dir_all(&pki).map_err(|source| ControlPlaneError::Write {
        what: pki.display().to_string(),
        source,
    })?;
    let ca = Authority::create(&pki)?;
    let svc = format!("kubernetes.default.svc.{CLUSTER_DOMAIN}");
    ca.serving(
        "apiserver",
        &[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            &svc,
        ],
        &[HOST_IP, API_SERVICE_IP, std::net::Ipv4Addr::LOCALHOST],
    )?;
    service_account_keys(&pki)?;
    // Each node's kubelet endpoint, which the API server verifies.
    for node in nodes {
        ca.serving(&format!("kubelet-{}", node.name), &[&node.name], &[node.ip])?;
    }
    for subject in subjects(nodes) {
        ca.client(&subject)?;
        kubeconfig::write(layout, &subject.file).map_err(|source| ControlPlaneError::Write {
            what: format!("{}'s kubeconfig", subject.file),
            source,
        })?;
    }
    Ok(())
}

fn arg(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

/// Starts kube-proxy in `node`'s namespace, in nftables mode: Service
/// VIPs for the node and its pods (the bridge's packets pass netfilter).
/// `cluster` is the `cluster` binary, which enters the namespace.
pub fn start_kube_proxy(
    layout: &Layout,
    node: &crate::config::Node,
    cluster: &std::path::Path,
) -> Result<(), ControlPlaneError> {
    let args = vec![
        arg("kubeconfig", layout.kubeconfig("kube-proxy").display()),
        "--proxy-mode=nftables".to_string(),
        arg("hostname-override", &node.name),
        arg("cluster-cidr", CLUSTER_CIDR),
        // The machine's conntrack settings are not the node's to change.
        "--conntrack-max-per-core=0".to_string(),
        "--conntrack-tcp-timeout-established=0".to_string(),
        "--conntrack-tcp-timeout-close-wait=0".to_string(),
        arg("healthz-bind-address", format!("{}:10256", node.ip)),
        "--metrics-bind-address=127.0.0.1:10249".to_string(),
    ];
    let name = format!("kube-proxy-{}", node.name);
    processes::spawn_in(
        layout,
        &name,
        Some((&node.netns, cluster)),
        &layout.program("kube-proxy"),
        &args,
    )?;
    Ok(())
}

/// Starts etcd and waits until it accepts connections.
pub fn start_etcd(layout: &Layout) -> Result<(), ControlPlaneError> {
    let client = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}");
    let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
    let args = vec![
        arg("name", "local"),
        arg("data-dir", layout.etcd_data().display()),
        arg("listen-client-urls", &client),
        arg("advertise-client-urls", &client),
        arg("listen-peer-urls", &peer),
        arg("initial-advertise-peer-urls", &peer),
        arg("initial-cluster", format!("local={peer}")),
        // A throw-away cluster: losing the last writes to a crash is fine,
        // waiting for the disk on every write is not.
        "--unsafe-no-fsync".to_string(),
        arg("log-level", "warn"),
    ];
    spawn(layout, "etcd", &layout.program("etcd"), &args)?;
    wait_tcp(layout, "etcd", ETCD_CLIENT_PORT, Duration::from_secs(20))
}

/// Starts the API server; [`crate::api::wait_ready`] tells when it serves.
pub fn start_apiserver(layout: &Layout) -> Result<(), ControlPlaneError> {
    let pki = layout.pki();
    let p = |f: &str| pki.join(f).display().to_string();
    let args = vec![
        arg(
            "etcd-servers",
            format!("http://127.0.0.1:{ETCD_CLIENT_PORT}"),
        ),
        arg("bind-address", HOST_IP),
        arg("advertise-address", HOST_IP),
        arg("secure-port", API_PORT),
        arg("cert-dir", p("apiserver-generated")),
        arg("tls-cert-file", p("apiserver.crt")),
        arg("tls-private-key-file", p("apiserver.key")),
        arg("client-ca-file", p("ca.crt")),
        arg(
            "kubelet-client-certificate",
            p("apiserver-kubelet-client.crt"),
        ),
        arg("kubelet-client-key", p("apiserver-kubelet-client.key")),
        arg("kubelet-certificate-authority", p("ca.crt")),
        // Node names resolve nowhere: reach kubelets by address.
        arg("kubelet-preferred-address-types", "InternalIP"),
        arg(
            "service-account-issuer",
            format!("https://kubernetes.default.svc.{CLUSTER_DOMAIN}"),
        ),
        arg("service-account-key-file", p("sa.pub")),
        arg("service-account-signing-key-file", p("sa.key")),
        arg("authorization-mode", "Node,RBAC"),
        arg("enable-admission-plugins", "NodeRestriction"),
        arg("service-cluster-ip-range", SERVICE_CIDR),
        // The mesh's DaemonSets (ztunnel, the CNI agent) are privileged.
        "--allow-privileged=true".to_string(),
        arg("profiling", false),
    ];
    spawn(
        layout,
        "kube-apiserver",
        &layout.program("kube-apiserver"),
        &args,
    )?;
    Ok(())
}

/// Starts the controller-manager and the scheduler.
pub fn start_controllers(layout: &Layout) -> Result<(), ControlPlaneError> {
    let pki = layout.pki();
    let p = |f: &str| pki.join(f).display().to_string();
    let cm = layout
        .kubeconfig("controller-manager")
        .display()
        .to_string();
    let args = vec![
        arg("kubeconfig", &cm),
        arg("authentication-kubeconfig", &cm),
        arg("authorization-kubeconfig", &cm),
        arg("bind-address", "127.0.0.1"),
        arg("cert-dir", p("controller-manager-generated")),
        arg("service-account-private-key-file", p("sa.key")),
        arg("root-ca-file", p("ca.crt")),
        arg("cluster-signing-cert-file", p("ca.crt")),
        arg("cluster-signing-key-file", p("ca.key")),
        "--use-service-account-credentials=true".to_string(),
        "--allocate-node-cidrs=true".to_string(),
        arg("cluster-cidr", CLUSTER_CIDR),
        arg("node-cidr-mask-size", NODE_CIDR_MASK),
        arg("service-cluster-ip-range", SERVICE_CIDR),
        "--leader-elect=false".to_string(),
        arg("profiling", false),
    ];
    spawn(
        layout,
        "kube-controller-manager",
        &layout.program("kube-controller-manager"),
        &args,
    )?;
    let sched = layout.kubeconfig("scheduler").display().to_string();
    let args = vec![
        arg("kubeconfig", &sched),
        arg("authentication-kubeconfig", &sched),
        arg("authorization-kubeconfig", &sched),
        arg("bind-address", "127.0.0.1"),
        arg("cert-dir", p("scheduler-generated")),
        "--leader-elect=false".to_string(),
        arg("profiling", false),
    ];
    spawn(
        layout,
        "kube-scheduler",
        &layout.program("kube-scheduler"),
        &args,
    )?;
    Ok(())
}

/// Fails with the component's log path if its process is gone.
pub fn check_alive(layout: &Layout, component: &str) -> Result<(), ControlPlaneError> {
    let alive = processes::recorded(layout)
        .iter()
        .any(|p| p.name == component && p.alive());
    if alive {
        Ok(())
    } else {
        Err(ControlPlaneError::Exited {
            component: component.to_string(),
            log: log_of(layout, component),
        })
    }
}

pub fn log_of(layout: &Layout, component: &str) -> String {
    layout
        .logs()
        .join(format!("{component}.log"))
        .display()
        .to_string()
}

fn wait_tcp(
    layout: &Layout,
    component: &str,
    port: u16,
    bound: Duration,
) -> Result<(), ControlPlaneError> {
    let start = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        check_alive(layout, component)?;
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() > bound => {
                return Err(ControlPlaneError::NotReady {
                    component: component.to_string(),
                    waited: bound,
                    last: e.to_string(),
                    log: log_of(layout, component),
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

//! The Kubernetes objects the harness writes for the cluster's pods,
//! namespaces and services, as the API server would hold them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use super::{GRPC_PORT, HTTP_PORT, PodSpec, TCP_PORT};

pub struct ServiceDef {
    pub namespace: String,
    pub name: String,
    pub vip: Ipv4Addr,
    pub selector: String,
}

fn labels_yaml(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "{}".into();
    }
    let items: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k:?}: {v:?}"))
        .collect();
    format!("{{{}}}", items.join(", "))
}

pub fn namespace(name: &str, labels: &BTreeMap<String, String>) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {}\n",
        labels_yaml(labels)
    )
}

pub fn pod(spec: &PodSpec, uid: &str, ip: Option<Ipv4Addr>) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  uid: {uid}\n  labels: {}\nspec:\n  nodeName: {}\n  serviceAccountName: {}\n  containers:\n  - name: app\n    ports: [{{name: http, containerPort: {HTTP_PORT}}}, {{name: tcp, containerPort: {TCP_PORT}}}, {{name: grpc, containerPort: {GRPC_PORT}}}]\n",
        spec.name,
        spec.namespace,
        labels_yaml(&spec.labels),
        spec.node,
        spec.service_account,
    );
    match ip {
        Some(ip) => {
            let _ = write!(y, "status:\n  phase: Running\n  podIP: {ip}\n");
        }
        None => y.push_str("status:\n  phase: Pending\n"),
    }
    y
}

pub fn service(def: &ServiceDef) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n  clusterIP: {}\n  selector: {{app: {}}}\n  ports:\n  - {{name: http, port: {HTTP_PORT}, targetPort: {HTTP_PORT}}}\n  - {{name: tcp, port: {TCP_PORT}, targetPort: {TCP_PORT}}}\n  - {{name: grpc, port: {GRPC_PORT}, targetPort: {GRPC_PORT}}}\n",
        def.name, def.namespace, def.vip, def.selector
    )
}

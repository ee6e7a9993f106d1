//! The `resolv.conf` the kubelet gives a pod, by its `dnsPolicy`:
//! `ClusterFirst` (the default) points at the cluster's DNS Service with the
//! namespace's search path; `Default`, and `ClusterFirst` on the host's
//! network, keep the node's own; `None` uses `dnsConfig` alone, which the
//! other policies add to.

use k8s_openapi::api::core::v1::Pod;

use crate::config::{CLUSTER_DOMAIN, DNS_SERVICE_IP};

/// The file's content, or `None` when the pod keeps the node's.
pub fn resolv_conf(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let (mut nameservers, mut searches, mut options): (Vec<String>, Vec<String>, Vec<String>) =
        match policy {
            "ClusterFirst" if host_network => return None,
            "Default" if spec.dns_config.is_none() => return None,
            "ClusterFirst" | "ClusterFirstWithHostNet" => (
                vec![DNS_SERVICE_IP.to_string()],
                vec![
                    format!("{ns}.svc.{CLUSTER_DOMAIN}"),
                    format!("svc.{CLUSTER_DOMAIN}"),
                    CLUSTER_DOMAIN.to_string(),
                ],
                vec!["ndots:5".to_string()],
            ),
            _ => (Vec::new(), Vec::new(), Vec::new()),
        };
    if let Some(config) = &spec.dns_config {
        nameservers.extend(config.nameservers.clone().unwrap_or_default());
        searches.extend(config.searches.clone().unwrap_or_default());
        for o in config.options.clone().unwrap_or_default() {
            let Some(name) = o.name else { continue };
            options.retain(|existing| existing.split(':').next() != Some(name.as_str()));
            options.push(match o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for n in nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "apps" }, "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn each_dns_policy_gives_the_kubelets_file() {
        assert_eq!(
            resolv_conf(&pod(serde_json::json!({ "containers": [] }))).unwrap(),
            "search apps.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\noptions ndots:5\n"
        );
        let host = serde_json::json!({ "hostNetwork": true, "containers": [] });
        assert_eq!(resolv_conf(&pod(host)), None);
        let host_cluster = serde_json::json!({ "hostNetwork": true,
            "dnsPolicy": "ClusterFirstWithHostNet", "containers": [] });
        assert!(
            resolv_conf(&pod(host_cluster))
                .unwrap()
                .contains("10.96.0.10")
        );
        let default = serde_json::json!({ "dnsPolicy": "Default", "containers": [] });
        assert_eq!(resolv_conf(&pod(default)), None);
        let custom = serde_json::json!({ "dnsPolicy": "None", "containers": [],
            "dnsConfig": { "nameservers": ["1.2.3.4"], "searches": ["x.local"],
                           "options": [{ "name": "ndots", "value": "2" }, { "name": "edns0" }] } });
        assert_eq!(
            resolv_conf(&pod(custom)).unwrap(),
            "search x.local\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"
        );
        let merged = serde_json::json!({ "containers": [],
            "dnsConfig": { "options": [{ "name": "ndots", "value": "1" }] } });
        assert!(
            resolv_conf(&pod(merged))
                .unwrap()
                .ends_with("options ndots:1\n")
        );
    }
}

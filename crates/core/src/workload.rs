//! What the data plane knows about a workload (a pod, today).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::address::Network;
use crate::identity::{DEFAULT_SERVICE_ACCOUNT, Identity, IdentityError, TrustDomain};
use crate::service::PortMapping;

/// The globally unique id of a workload, e.g. `Kubernetes//Pod/default/sleep-1`.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct WorkloadUid(String);

impl WorkloadUid {
    pub fn new(uid: impl Into<String>) -> Self {
        Self(uid.into())
    }

    /// The uid istiod gives a Kubernetes pod: `<cluster>//Pod/<namespace>/<name>`.
    pub fn for_pod(cluster_id: &str, namespace: &str, name: &str) -> Self {
        Self(format!("{cluster_id}//Pod/{namespace}/{name}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkloadUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How traffic to a workload is carried.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum TunnelProtocol {
    /// Plain TCP: the destination is not in the mesh.
    #[default]
    None,
    /// HTTP/2 CONNECT over mutual TLS to the workload's port 15008.
    Hbone,
}

/// A workload as the data plane sees it.
///
/// Empty trust domain and service account take Istio's defaults at
/// construction, so [`Workload::identity`] never has to guess.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub uid: WorkloadUid,
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub tunnel_protocol: TunnelProtocol,
    #[serde(default)]
    pub trust_domain: TrustDomain,
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// The Kubernetes node the workload runs on.
    #[serde(default)]
    pub node: String,
    /// Keys (`namespace/name`) of the WORKLOAD_SELECTOR authorization
    /// policies that select this workload.
    #[serde(default)]
    pub authorization_policies: Vec<String>,
    /// The services this workload is an endpoint of, by key
    /// (`namespace/hostname`), with this endpoint's port mapping.
    #[serde(default)]
    pub services: BTreeMap<String, Vec<PortMapping>>,
    /// The waypoint that takes traffic addressed to this workload's IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<crate::waypoint::GatewayAddress>,
    /// Who the workload is in metrics and access logs.
    #[serde(default)]
    pub telemetry: WorkloadTelemetry,
}

/// The names dashboards group a workload by (Istio's `source_workload`,
/// `source_canonical_service`, ...), as istiod derives them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadTelemetry {
    /// The owning controller's name (a Deployment's), or the pod's.
    #[serde(default)]
    pub workload_name: String,
    /// `service.istio.io/canonical-name`, `app.kubernetes.io/name`, `app`.
    #[serde(default)]
    pub canonical_name: String,
    /// `service.istio.io/canonical-revision`, `app.kubernetes.io/version`,
    /// `version`, or `latest`.
    #[serde(default)]
    pub canonical_revision: String,
    #[serde(default)]
    pub cluster_id: String,
}

fn default_service_account() -> String {
    DEFAULT_SERVICE_ACCOUNT.to_string()
}

impl Workload {
    /// The SPIFFE identity the workload's certificate carries.
    pub fn identity(&self) -> Result<Identity, IdentityError> {
        Identity::new(
            self.trust_domain.clone(),
            self.namespace.clone(),
            self.service_account.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_uid_has_empty_group() {
        assert_eq!(
            WorkloadUid::for_pod("Kubernetes", "default", "sleep").as_str(),
            "Kubernetes//Pod/default/sleep"
        );
    }

    #[test]
    fn defaults_identity() {
        let w: Workload = serde_json_like();
        assert_eq!(
            w.identity().unwrap().to_string(),
            "spiffe://cluster.local/ns/default/sa/default"
        );
    }

    #[test]
    fn loads_camel_case_yaml() {
        let w: Workload = serde_yaml::from_str(
            "
uid: Kubernetes//Pod/default/echo
name: echo
namespace: default
addresses: [10.0.0.3]
tunnelProtocol: HBONE
serviceAccount: echo
authorizationPolicies: [default/allow-sleep]
services:
  default/echo.default.svc.cluster.local:
  - servicePort: 80
    targetPort: 8080
",
        )
        .unwrap();
        assert_eq!(w.authorization_policies, ["default/allow-sleep"]);
        assert_eq!(
            w.services["default/echo.default.svc.cluster.local"],
            [PortMapping {
                service_port: 80,
                target_port: 8080
            }]
        );
        assert!(
            serde_yaml::from_str::<Workload>("uid: u\nname: n\nnamespace: d\nbogus: 1\n").is_err()
        );
    }

    fn serde_json_like() -> Workload {
        Workload {
            uid: WorkloadUid::new("u"),
            name: "sleep".into(),
            namespace: "default".into(),
            addresses: vec![],
            network: Network::default(),
            tunnel_protocol: TunnelProtocol::Hbone,
            trust_domain: TrustDomain::default(),
            service_account: default_service_account(),
            node: String::new(),
            authorization_policies: vec![],
            services: BTreeMap::new(),
            waypoint: None,
            telemetry: WorkloadTelemetry::default(),
        }
    }
}

//! The waypoint controller: every Gateway of class `istio-waypoint` gets a
//! ServiceAccount, a Deployment running our `waypoint` and a Service, all
//! named after the Gateway and owned by it (Kubernetes deletes them with
//! it), plus the `istio-ca-root-cert` ConfigMap its pods mount. The
//! Gateway's status then says `Programmed`, with the Service's address, in
//! the words istiod uses.
//!
//! Everything is written with server-side apply (field manager
//! `istiod-lite`), so a reconcile is idempotent and leaves fields that
//! others own alone. A Gateway the model refuses (not exactly one HBONE
//! listener on 15008, say) gets `Accepted=False` with the reason, and
//! nothing is deployed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SecurityContext, Service, ServiceAccount,
    ServiceAccountTokenProjection, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use mesh_model::routes::{GATEWAY_NAME_LABEL, WAYPOINT_CLASS, WAYPOINT_PORT};
use mesh_model::{Kind, Object};
use serde_json::json;
use tracing::{info, warn};

use crate::source::{Watched, to_object};
use crate::token_review::ISTIO_CA_AUDIENCE;

/// Who writes what the controller writes.
pub const FIELD_MANAGER: &str = "istiod-lite";
/// The ConfigMap istiod publishes the root certificate in.
pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
const MANAGED_LABEL: &str = "gateway.istio.io/managed";
const MANAGED_VALUE: &str = "istio.io-mesh-controller";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const ROOT_DIR: &str = "/var/run/secrets/istio";

/// What every waypoint Deployment is made with.
#[derive(Clone, Debug)]
pub struct WaypointSettings {
    /// The `waypoint` image.
    pub image: String,
    /// istiod-lite's CA and xDS address, `host:port`.
    pub istiod_address: String,
    /// The root certificate(s), PEM, published for the pods to verify istiod-lite.
    pub root_cert_pem: String,
    pub cluster_id: String,
    pub trust_domain: String,
    /// The cluster's DNS suffix, for the status message.
    pub domain_suffix: String,
}

/// The objects one waypoint is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct WaypointObjects {
    pub service_account: ServiceAccount,
    pub deployment: Deployment,
    pub service: Service,
    pub root_cert: ConfigMap,
}

/// The Gateway the objects belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// What the controller wants to exist for `gw`.
pub fn desired(gw: &GatewayRef, s: &WaypointSettings) -> WaypointObjects {
    let name = gw.name.as_str();
    let owner = OwnerReference {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        name: gw.name.clone(),
        uid: gw.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let meta = |labels: BTreeMap<String, String>| ObjectMeta {
        name: Some(gw.name.clone()),
        namespace: Some(gw.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };
    let selector = labels(&[(GATEWAY_NAME_LABEL, name)]);
    let object_labels = labels(&[(GATEWAY_NAME_LABEL, name), (MANAGED_LABEL, MANAGED_VALUE)]);
    let pod_labels = labels(&[
        (GATEWAY_NAME_LABEL, name),
        (MANAGED_LABEL, MANAGED_VALUE),
        (mesh_model::enrollment::DATAPLANE_MODE, "none"),
        ("sidecar.istio.io/inject", "false"),
        ("service.istio.io/canonical-name", name),
    ]);
    let istiod = s.istiod_address.as_str();
    let container = Container {
        name: "waypoint".into(),
        image: Some(s.image.clone()),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("INSTANCE_IP", "status.podIP"),
            field_env("NODE_NAME", "spec.nodeName"),
            field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            env("GATEWAY_NAME", name),
            env("CA_ADDRESS", istiod),
            env("XDS_ADDRESS", istiod),
            env("CA_ROOT_CA", &format!("{ROOT_DIR}/root-cert.pem")),
            env("AUTH_TOKEN", &format!("{TOKEN_DIR}/istio-token")),
            env("ISTIO_META_CLUSTER_ID", &s.cluster_id),
            env("TRUST_DOMAIN", &s.trust_domain),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("mesh".into()),
                container_port: WAYPOINT_PORT.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("http-envoy-prom".into()),
                container_port: 15020,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz/ready".into()),
                port: IntOrString::Int(15021),
                ..Default::default()
            }),
            period_seconds: Some(10),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(
                [("cpu", "100m"), ("memory", "128Mi")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.into())))
                    .collect(),
            ),
            limits: Some(
                [("cpu", "2"), ("memory", "1Gi")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.into())))
                    .collect(),
            ),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(1337),
            run_as_group: Some(1337),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "istio-token".into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "istio-ca-root-cert".into(),
                mount_path: ROOT_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let pod = PodSpec {
        service_account_name: Some(gw.name.clone()),
        containers: vec![container],
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        }),
        volumes: Some(vec![
            Volume {
                name: "istio-token".into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            audience: Some(ISTIO_CA_AUDIENCE.into()),
                            expiration_seconds: Some(43200),
                            path: "istio-token".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "istio-ca-root-cert".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: ROOT_CERT_CONFIGMAP.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    WaypointObjects {
        service_account: ServiceAccount {
            metadata: meta(object_labels.clone()),
            ..Default::default()
        },
        deployment: Deployment {
            metadata: meta(object_labels.clone()),
            spec: DeploymentSpec {
                selector: LabelSelector {
                    match_labels: Some(selector.clone()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        annotations: Some(
                            [
                                ("prometheus.io/scrape", "true"),
                                ("prometheus.io/port", "15020"),
                                ("prometheus.io/path", "/stats/prometheus"),
                            ]
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ),
                        ..Default::default()
                    }),
                    spec: Some(pod),
                },
                ..Default::default()
            },
            ..Default::default()
        },
        service: Service {
            metadata: meta(object_labels),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(selector),
                ip_family_policy: Some("PreferDualStack".into()),
                ports: Some(vec![ServicePort {
                    name: Some("mesh".into()),
                    port: WAYPOINT_PORT.into(),
                    app_protocol: Some("all".into()),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        // Shared by every waypoint of the namespace: not owned by one.
        root_cert: root_cert_configmap(&gw.namespace, &s.root_cert_pem),
    }
}

/// `istio-ca-root-cert` of `namespace`: the root(s) its pods verify
/// istiod-lite with.
pub fn root_cert_configmap(namespace: &str, pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CERT_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels(&[("istio.io/config", "true")])),
            ..Default::default()
        },
        data: Some(
            [("root-cert.pem".to_string(), pem.to_string())]
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    }
}

/// Writes `istio-ca-root-cert` in `namespace` (istiod-lite's own, at
/// start, for ztunnel).
pub async fn publish_root_cert(
    client: &Client,
    namespace: &str,
    pem: &str,
) -> Result<(), ControllerError> {
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            ROOT_CERT_CONFIGMAP,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&typed(root_cert_configmap(namespace, pem))),
        )
        .await
        .map(|_| ())
        .map_err(|e| ControllerError::Write {
            what: "the root certificate ConfigMap",
            namespace: namespace.into(),
            name: ROOT_CERT_CONFIGMAP.into(),
            error: e.to_string(),
        })
}

/// The Gateway's status: Accepted and Programmed as istiod words them.
pub fn status(
    gw: &GatewayRef,
    generation: Option<i64>,
    outcome: &Result<String, String>,
    domain_suffix: &str,
) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |type_: &str, ok: bool, reason: &str, message: &str| {
        json!({
            "type": type_,
            "status": if ok { "True" } else { "False" },
            "reason": reason,
            "message": message,
            "observedGeneration": generation.unwrap_or_default(),
            "lastTransitionTime": now,
        })
    };
    match outcome {
        Ok(address) => json!({
            "addresses": [{"type": "IPAddress", "value": address}],
            "conditions": [
                condition("Accepted", true, "Accepted", "Resource accepted"),
                condition("Programmed", true, "Programmed", &format!(
                    "Resource programmed, assigned to service(s) {}.{}.svc.{domain_suffix}:{WAYPOINT_PORT}",
                    gw.name, gw.namespace
                )),
            ],
        }),
        Err(problem) => json!({
            "conditions": [
                condition("Accepted", false, "Invalid", problem),
                condition("Programmed", false, "Invalid", "Resource not programmed: the Gateway is invalid"),
            ],
        }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("writing {what} for waypoint {namespace}/{name}: {error}")]
    Write {
        what: &'static str,
        namespace: String,
        name: String,
        error: String,
    },
}

const GATEWAYS: Watched = crate::source::watched(Kind::Gateway);

/// Brings one Gateway's waypoint to what it should be. Gateways of other
/// classes are left alone.
pub async fn reconcile(
    client: &Client,
    gateway: &DynamicObject,
    s: &WaypointSettings,
) -> Result<(), ControllerError> {
    let class = gateway.data["spec"]["gatewayClassName"].as_str();
    if class != Some(WAYPOINT_CLASS) {
        return Ok(());
    }
    let gw = GatewayRef {
        namespace: gateway.metadata.namespace.clone().unwrap_or_default(),
        name: gateway.metadata.name.clone().unwrap_or_default(),
        uid: gateway.metadata.uid.clone().unwrap_or_default(),
    };
    let write = |what: &'static str| {
        let (namespace, name) = (gw.namespace.clone(), gw.name.clone());
        move |e: kube::Error| ControllerError::Write {
            what,
            namespace,
            name,
            error: e.to_string(),
        }
    };
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let ns = gw.namespace.as_str();
    let outcome = match to_object(&GATEWAYS, gateway) {
        Ok(Some((_, Object::Gateway(_)))) => {
            let o = desired(&gw, s);
            Api::<ConfigMap>::namespaced(client.clone(), ns)
                .patch(
                    ROOT_CERT_CONFIGMAP,
                    &apply,
                    &Patch::Apply(&typed(o.root_cert)),
                )
                .await
                .map_err(write("the root certificate ConfigMap"))?;
            Api::<ServiceAccount>::namespaced(client.clone(), ns)
                .patch(&gw.name, &apply, &Patch::Apply(&typed(o.service_account)))
                .await
                .map_err(write("the ServiceAccount"))?;
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch(&gw.name, &apply, &Patch::Apply(&typed(o.deployment)))
                .await
                .map_err(write("the Deployment"))?;
            let service = Api::<Service>::namespaced(client.clone(), ns)
                .patch(&gw.name, &apply, &Patch::Apply(&typed(o.service)))
                .await
                .map_err(write("the Service"))?;
            match service.spec.and_then(|s| s.cluster_ip) {
                Some(ip) if !ip.is_empty() && ip != "None" => Ok(ip),
                _ => Err("the waypoint's Service has no cluster IP yet".to_string()),
            }
        }
        Ok(_) => Err(format!("not a {}", Kind::Gateway.as_str())),
        Err(problem) => Err(problem),
    };
    if let Err(problem) = &outcome {
        warn!(gateway = %format!("{ns}/{}", gw.name), %problem, "waypoint not programmed");
    }
    let mut wanted = status(&gw, gateway.metadata.generation, &outcome, &s.domain_suffix);
    // Writing the same status again would change the Gateway and wake
    // this controller again, for ever: unchanged conditions keep their
    // time, and an unchanged status is not written.
    let current = &gateway.data["status"];
    keep_transition_times(&mut wanted, current);
    if without_times(&wanted) == without_times(current) {
        return Ok(());
    }
    let body = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "status": wanted,
    });
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &GATEWAYS.api_resource())
        .patch_status(&gw.name, &apply, &Patch::Apply(&body))
        .await
        .map_err(write("the Gateway's status"))?;
    if outcome.is_ok() {
        info!(gateway = %format!("{ns}/{}", gw.name), "waypoint programmed");
    }
    Ok(())
}

/// Conditions whose type, status and reason have not changed keep the
/// `lastTransitionTime` they have.
fn keep_transition_times(wanted: &mut serde_json::Value, current: &serde_json::Value) {
    let Some(conditions) = wanted["conditions"].as_array_mut() else {
        return;
    };
    for c in conditions {
        let same = current["conditions"].as_array().and_then(|old| {
            old.iter().find(|o| {
                o["type"] == c["type"] && o["status"] == c["status"] && o["reason"] == c["reason"]
            })
        });
        if let Some(old) = same {
            c["lastTransitionTime"] = old["lastTransitionTime"].clone();
        }
    }
}

/// The status with the condition times left out, for comparing.
fn without_times(status: &serde_json::Value) -> serde_json::Value {
    let mut s = status.clone();
    if let Some(conditions) = s["conditions"].as_array_mut() {
        for c in conditions {
            if let Some(m) = c.as_object_mut() {
                m.remove("lastTransitionTime");
            }
        }
    }
    json!({"addresses": s["addresses"], "conditions": s["conditions"]})
}

/// A typed object as an apply patch, its apiVersion and kind set (server-side
/// apply needs them).
fn typed<K: k8s_openapi::Resource + serde::Serialize>(object: K) -> serde_json::Value {
    let mut v = serde_json::to_value(&object).unwrap_or_default();
    v["apiVersion"] = K::API_VERSION.into();
    v["kind"] = K::KIND.into();
    v
}

/// Runs the controller until `stop` resolves: every waypoint Gateway, and
/// again whenever one of its Deployments or Services changes.
pub async fn run(
    client: Client,
    settings: WaypointSettings,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let resource = GATEWAYS.api_resource();
    let gateways: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let context = Arc::new((client.clone(), settings));
    Controller::new_with(gateways, watcher::Config::default(), resource)
        .owns(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(Api::<Service>::all(client), watcher::Config::default())
        .graceful_shutdown_on(stop)
        .run(
            |gw: Arc<DynamicObject>, ctx: Arc<(Client, WaypointSettings)>| async move {
                reconcile(&ctx.0, &gw, &ctx.1)
                    .await
                    .map(|_| Action::requeue(Duration::from_secs(300)))
            },
            |_gw, error: &ControllerError, _ctx| {
                warn!(%error, "waypoint reconcile failed; retrying in 10s");
                Action::requeue(Duration::from_secs(10))
            },
            context,
        )
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests;

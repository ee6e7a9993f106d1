//! The delta-xDS client (`dataplane.md` §3): one stream to istiod carrying
//! the types a [`Handler`] asks for, wildcard. ztunnel subscribes to
//! `istio.workload.Address` and `istio.security.Authorization`
//! ([`StateHandler`]); a waypoint to addresses and its own configuration.
//!
//! - The last state is kept while disconnected; on reconnect the versions
//!   held are offered as `initial_resource_versions`, so only changes come.
//! - Each resource is decoded and converted on its own: bad ones are NACKed
//!   by name, the rest apply. A rejected resource is left out of the held
//!   versions so the server sends it again.
//! - Readiness waits for the first answered response of each type.
//! - Reconnects back off from 10 ms to 15 s; a stream that ends cleanly or
//!   after having worked is retried at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mesh_core::{Address, Authorization};
use mesh_proto::envoy::config::core::v3::Node;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use mesh_proto::google::rpc::Status as RpcStatus;
use mesh_proto::istio::security as spb;
use mesh_proto::istio::workload as wpb;
use mesh_runtime::drain::DrainWatcher;
use mesh_runtime::readiness::BlockReady;
use mesh_tls::AuthSource;
use mesh_tls::control::ControlPlaneAddress;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::state::ProxyState;

pub use mesh_proto::xds::{ADDRESS_TYPE, AUTHORIZATION_TYPE};

/// What a client does with the resources of the types it subscribes to.
/// Each resource is applied on its own: an `Err` NACKs that resource (by
/// name, with the reason) and the others still apply.
pub trait Handler: Send + 'static {
    /// The type URLs to subscribe to, in order.
    fn types(&self) -> Vec<&'static str>;
    /// Decodes, converts and applies one resource.
    fn apply(&mut self, type_url: &str, name: &str, body: &[u8]) -> Result<(), String>;
    /// Removes one resource; `false` if it was unknown.
    fn remove(&mut self, type_url: &str, name: &str) -> bool;
    /// After each response of `type_url`, once its resources are applied.
    fn answered(&mut self, _type_url: &str) {}
}

/// Workloads, services and (optionally) L4 policies into a [`ProxyState`].
pub struct StateHandler {
    state: Arc<ProxyState>,
    policies: bool,
}

impl StateHandler {
    /// With `policies`, also subscribes to Authorization; inbound then
    /// fails closed until the first policy response arrives.
    pub fn new(state: Arc<ProxyState>, policies: bool) -> Self {
        if policies {
            state.expect_policies();
        }
        Self { state, policies }
    }
}

impl Handler for StateHandler {
    fn types(&self) -> Vec<&'static str> {
        if self.policies {
            vec![ADDRESS_TYPE, AUTHORIZATION_TYPE]
        } else {
            vec![ADDRESS_TYPE]
        }
    }

    fn apply(&mut self, type_url: &str, name: &str, bytes: &[u8]) -> Result<(), String> {
        if type_url == ADDRESS_TYPE {
            let proto = wpb::Address::decode(bytes).map_err(|e| format!("cannot decode: {e}"))?;
            match Address::try_from(&proto).map_err(|e| e.to_string())? {
                Address::Workload(w) => self.state.insert(w),
                Address::Service(s) => self.state.insert_service(s),
            }
        } else {
            // A policy that cannot be read must not silently drop out:
            // the state fails its namespace closed until a good one comes.
            let policy = spb::Authorization::decode(bytes)
                .map_err(|e| format!("cannot decode: {e}"))
                .and_then(|proto| Authorization::try_from(&proto).map_err(|e| e.to_string()));
            match policy {
                Ok(p) => self.state.insert_policy(p),
                Err(e) => {
                    self.state.reject_policy(name);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Removal names are a workload uid, else a service's
    /// `namespace/hostname`; for policies, `namespace/name`.
    fn remove(&mut self, type_url: &str, name: &str) -> bool {
        if type_url == ADDRESS_TYPE {
            self.state.remove_workload(name) || self.state.remove_service(name)
        } else {
            self.state.remove_policy(name)
        }
    }

    fn answered(&mut self, type_url: &str) {
        if type_url == AUTHORIZATION_TYPE {
            self.state.policies_arrived();
        }
    }
}

const BACKOFF_START: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// How long the control plane has to accept a new stream (its response
/// headers, sent once it has authenticated us): a control plane that never
/// answers is retried like one that refuses.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// gRPC INVALID_ARGUMENT, the code a NACK carries.
const INVALID_ARGUMENT: i32 = 3;

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct XdsConfig {
    pub target: ControlPlaneAddress,
    pub auth: AuthSource,
    pub cluster_id: String,
    pub node: NodeInfo,
}

/// What the proxy says about itself in the first request of each type.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Istio's proxy type: `ztunnel`, or `router` for a waypoint.
    pub proxy_type: String,
    pub instance_ip: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub node_name: String,
}

impl NodeInfo {
    /// `<type>~<ip>~<pod>.<ns>~<ns>.svc.cluster.local` with Istio's metadata.
    pub fn to_proto(&self) -> Node {
        let s = |v: &str| prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(v.to_string())),
        };
        Node {
            id: format!(
                "{}~{}~{}.{}~{}.svc.cluster.local",
                self.proxy_type,
                self.instance_ip,
                self.pod_name,
                self.pod_namespace,
                self.pod_namespace
            ),
            cluster: String::new(),
            metadata: Some(prost_types::Struct {
                fields: [
                    ("NAME".to_string(), s(&self.pod_name)),
                    ("NAMESPACE".to_string(), s(&self.pod_namespace)),
                    ("INSTANCE_IPS".to_string(), s(&self.instance_ip)),
                    ("NODE_NAME".to_string(), s(&self.node_name)),
                ]
                .into_iter()
                .collect(),
            }),
            build_version: String::new(),
        }
    }
}

/// Counters: the atomics for tests, the families for `/metrics` (Istio's
/// `istio_xds_*` names once [`XdsClientStats::register`]ed).
#[derive(Debug, Default)]
pub struct XdsClientStats {
    pub connects: AtomicU64,
    pub responses: AtomicU64,
    pub resources_received: AtomicU64,
    pub resources_rejected: AtomicU64,
    pub removals_received: AtomicU64,
    /// By `reason`: `ConnectionError` (no stream), `Error` (a stream that
    /// failed), `Complete` (a stream the server ended).
    terminations: Family<Vec<(String, String)>, Counter>,
    /// Responses by type `url`.
    messages: Family<Vec<(String, String)>, Counter>,
    message_bytes: Family<Vec<(String, String)>, Counter>,
}

impl XdsClientStats {
    /// Adds `xds_connection_terminations`, `xds_message` and
    /// `xds_message_bytes` to `registry` (give it the `istio`-prefixed one).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "xds_connection_terminations",
            "xDS streams ended, by reason",
            self.terminations.clone(),
        );
        registry.register(
            "xds_message",
            "xDS responses received, by type",
            self.messages.clone(),
        );
        registry.register(
            "xds_message_bytes",
            "Bytes of xDS responses received, by type",
            self.message_bytes.clone(),
        );
    }

    /// A stream ended for `reason`.
    pub fn terminated(&self, reason: &str) {
        self.terminations
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// A response of `type_url`, `bytes` long, arrived.
    pub fn received(&self, type_url: &str, bytes: usize) {
        let url = vec![("url".to_string(), type_url.to_string())];
        self.messages.get_or_create(&url).inc();
        self.message_bytes.get_or_create(&url).inc_by(bytes as u64);
    }
}

pub struct XdsClient<H> {
    config: XdsConfig,
    handler: H,
    types: Vec<&'static str>,
    /// type URL → name → version: what we hold and applied.
    held: HashMap<&'static str, HashMap<String, String>>,
    /// One readiness guard per type, dropped after its first answered response.
    ready: HashMap<&'static str, BlockReady>,
    stats: Arc<XdsClientStats>,
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("building the channel: {0}")]
    Channel(#[from] mesh_tls::Error),
    #[error("{0}")]
    Grpc(#[from] tonic::Status),
    #[error("reading the token: {0}")]
    Token(String),
    #[error("the request stream closed")]
    Closed,
    #[error("the control plane did not accept the stream within {0:?}")]
    OpenTimeout(Duration),
}

/// How the readiness tasks of the first answers are named: this, then the
/// type URL. [`Ready::tasks_done`] with it waits for the first answers.
///
/// [`Ready::tasks_done`]: mesh_runtime::readiness::Ready::tasks_done
pub const READINESS_PREFIX: &str = "xds ";

impl<H: Handler> XdsClient<H> {
    pub fn new(
        config: XdsConfig,
        handler: H,
        ready: &mesh_runtime::readiness::Ready,
        stats: Arc<XdsClientStats>,
    ) -> Self {
        let types = handler.types();
        let guards = types
            .iter()
            .map(|t| {
                let task = format!("{READINESS_PREFIX}{t}");
                (*t, ready.register_task(&task))
            })
            .collect();
        Self {
            config,
            handler,
            types,
            held: HashMap::new(),
            ready: guards,
            stats,
        }
    }

    /// Runs until a drain starts.
    pub async fn run(mut self, drain: DrainWatcher) {
        let mut backoff = BACKOFF_START;
        loop {
            let mut worked = false;
            let result = tokio::select! {
                r = self.stream_once(&mut worked) => r,
                _ = drain.signaled() => return,
            };
            self.stats.terminated(match (&result, worked) {
                (Ok(()), _) => "Complete",
                (Err(_), true) => "Error",
                (Err(_), false) => "ConnectionError",
            });
            match result {
                Ok(()) => {
                    debug!("xDS stream ended; reconnecting");
                    backoff = BACKOFF_START;
                }
                Err(e) => {
                    if worked || immediate_retry(&e) {
                        backoff = BACKOFF_START;
                    }
                    warn!(address = %self.config.target.address, error = %e, retry_in = ?backoff,
                        "xDS stream failed; keeping the last configuration");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = drain.signaled() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn stream_once(&mut self, worked: &mut bool) -> Result<(), StreamError> {
        let channel = mesh_tls::control::channel(&self.config.target)?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(mesh_proto::xds::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(mesh_proto::xds::MAX_MESSAGE_SIZE);
        let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
        let node = self.config.node.to_proto();
        for t in self.types.clone() {
            let request = DeltaDiscoveryRequest {
                node: Some(node.clone()),
                type_url: t.to_string(),
                initial_resource_versions: self.held.get(t).cloned().unwrap_or_default(),
                ..Default::default()
            };
            tx.send(request).await.map_err(|_| StreamError::Closed)?;
        }
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        self.config
            .auth
            .authorize(request.metadata_mut(), &self.config.cluster_id)
            .await
            .map_err(|e| StreamError::Token(e.to_string()))?;
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        let mut responses = tokio::time::timeout(
            STREAM_OPEN_TIMEOUT,
            client.delta_aggregated_resources(request),
        )
        .await
        .map_err(|_| {
            mesh_core::wait::Wait::XdsStreamOpen.timed_out();
            StreamError::OpenTimeout(STREAM_OPEN_TIMEOUT)
        })??
        .into_inner();
        info!(address = %self.config.target.address, "xDS stream connected");
        while let Some(response) = responses.message().await? {
            *worked = true;
            let reply = self.handle(response);
            let type_url = reply.type_url.clone();
            tx.send(reply).await.map_err(|_| StreamError::Closed)?;
            if let Some(t) = self.types.iter().find(|t| **t == type_url)
                && self.ready.remove(t).is_some()
            {
                info!(type_url = %t, "first xDS response applied");
            }
        }
        Ok(())
    }

    /// Applies one response and builds its ACK or NACK.
    fn handle(&mut self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        self.stats.responses.fetch_add(1, Ordering::Relaxed);
        self.stats
            .received(&response.type_url, prost::Message::encoded_len(&response));
        let type_url = response.type_url.clone();
        let Some(kind) = self.types.iter().copied().find(|t| *t == type_url) else {
            warn!(%type_url, "response of a type we did not ask for; rejecting it");
            return nack(
                &type_url,
                &response.nonce,
                format!("unsupported type {type_url}"),
            );
        };
        let held = self.held.entry(kind).or_default();
        let mut errors = Vec::new();
        self.stats
            .resources_received
            .fetch_add(response.resources.len() as u64, Ordering::Relaxed);
        self.stats
            .removals_received
            .fetch_add(response.removed_resources.len() as u64, Ordering::Relaxed);
        for resource in &response.resources {
            let applied = match &resource.resource {
                None => Err("the resource has no body".to_string()),
                Some(any) if any.type_url != kind => Err(format!(
                    "body has type {} in a {kind} response",
                    any.type_url
                )),
                Some(any) => self.handler.apply(kind, &resource.name, &any.value),
            };
            match applied {
                Ok(()) => {
                    held.insert(resource.name.clone(), resource.version.clone());
                }
                Err(reason) => {
                    warn!(%type_url, name = %resource.name, %reason, "rejecting resource");
                    // A previous version stays applied: offer an empty
                    // version on reconnect, so the server re-sends it or
                    // removes it. Never applied: offer nothing.
                    if let Some(v) = held.get_mut(&resource.name) {
                        v.clear();
                    }
                    errors.push(format!("{}: {reason}", resource.name));
                }
            }
        }
        for name in &response.removed_resources {
            held.remove(name);
            if !self.handler.remove(kind, name) {
                debug!(%kind, %name, "removal of an unknown resource");
            }
        }
        self.handler.answered(kind);
        debug!(%type_url, applied = response.resources.len() - errors.len(), rejected = errors.len(),
            removed = response.removed_resources.len(), "xDS response handled");
        if errors.is_empty() {
            DeltaDiscoveryRequest {
                type_url,
                response_nonce: response.nonce,
                ..Default::default()
            }
        } else {
            self.stats
                .resources_rejected
                .fetch_add(errors.len() as u64, Ordering::Relaxed);
            nack(&type_url, &response.nonce, errors.join("; "))
        }
    }
}

fn nack(type_url: &str, nonce: &str, message: String) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        response_nonce: nonce.to_string(),
        error_detail: Some(RpcStatus {
            code: INVALID_ARGUMENT,
            message,
            details: vec![],
        }),
        ..Default::default()
    }
}

/// Errors after which istiod is probably just restarting.
fn immediate_retry(e: &StreamError) -> bool {
    let StreamError::Grpc(status) = e else {
        return false;
    };
    match status.code() {
        tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => true,
        tonic::Code::Unavailable => {
            let m = status.message();
            m.contains("transport is closing") || m.contains("received prior goaway")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_restart_like_errors_skip_the_backoff() {
        let grpc = |s: tonic::Status| immediate_retry(&StreamError::Grpc(s));
        assert!(grpc(tonic::Status::unavailable("transport is closing")));
        assert!(grpc(tonic::Status::unavailable(
            "received prior goaway: ..."
        )));
        assert!(grpc(tonic::Status::cancelled("")));
        assert!(!grpc(tonic::Status::unavailable("connection refused")));
        assert!(!grpc(tonic::Status::unauthenticated("token rejected")));
        assert!(!immediate_retry(&StreamError::Closed));
    }

    #[test]
    fn node_id_and_metadata_follow_istio() {
        let node = NodeInfo {
            proxy_type: "ztunnel".into(),
            instance_ip: "10.0.0.9".into(),
            pod_name: "ztunnel-abc".into(),
            pod_namespace: "istio-system".into(),
            node_name: "node-a".into(),
        }
        .to_proto();
        assert_eq!(
            node.id,
            "ztunnel~10.0.0.9~ztunnel-abc.istio-system~istio-system.svc.cluster.local"
        );
        let md = node.metadata.unwrap().fields;
        let s = |k: &str| match &md[k].kind {
            Some(prost_types::value::Kind::StringValue(v)) => v.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(
            [s("NAME"), s("NAMESPACE"), s("INSTANCE_IPS"), s("NODE_NAME")],
            ["ztunnel-abc", "istio-system", "10.0.0.9", "node-a"]
        );
    }

    fn response(resources: Vec<(&str, wpb::Address)>, removed: &[&str]) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: ADDRESS_TYPE.into(),
            nonce: "n".into(),
            resources: resources
                .into_iter()
                .map(
                    |(name, a)| mesh_proto::envoy::service::discovery::v3::Resource {
                        name: name.into(),
                        version: format!("v-{name}"),
                        resource: Some(prost_types::Any {
                            type_url: ADDRESS_TYPE.into(),
                            value: a.encode_to_vec(),
                        }),
                        ..Default::default()
                    },
                )
                .collect(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn service(hostname: &str) -> wpb::Address {
        wpb::Address {
            r#type: Some(wpb::address::Type::Service(wpb::Service {
                name: "s".into(),
                namespace: "ns".into(),
                hostname: hostname.into(),
                addresses: vec![wpb::NetworkAddress {
                    network: String::new(),
                    address: vec![10, 96, 0, 1],
                    length: None,
                }],
                ..Default::default()
            })),
        }
    }

    fn test_config() -> XdsConfig {
        XdsConfig {
            target: ControlPlaneAddress {
                address: "unused:15012".into(),
                server_name: None,
                root_pem: String::new(),
            },
            auth: AuthSource::Static("t".into()),
            cluster_id: "Kubernetes".into(),
            node: NodeInfo {
                proxy_type: "ztunnel".into(),
                instance_ip: "1.1.1.1".into(),
                pod_name: "z".into(),
                pod_namespace: "istio-system".into(),
                node_name: "n".into(),
            },
        }
    }

    #[test]
    fn rejected_resources_leave_the_held_versions_and_removals_apply() {
        let state = Arc::new(ProxyState::new());
        let ready = mesh_runtime::readiness::Ready::new();
        let handler = StateHandler::new(state.clone(), true);
        let mut client = XdsClient::new(test_config(), handler, &ready, Default::default());
        let ack = client.handle(response(
            vec![
                ("ns/a.example", service("a.example")),
                ("ns/b.example", service("")),
            ],
            &[],
        ));
        let nack = ack.error_detail.expect("one resource is bad");
        assert!(
            nack.message.starts_with("ns/b.example: service.hostname"),
            "{}",
            nack.message
        );
        let held = &client.held[ADDRESS_TYPE];
        assert_eq!(
            held.get("ns/a.example").map(String::as_str),
            Some("v-ns/a.example")
        );
        assert!(!held.contains_key("ns/b.example"), "re-sent on reconnect");
        assert!(state.service("ns/a.example").is_some());

        // A bad update of a resource still applied: it stays applied, and an
        // empty version is offered on reconnect so the server re-sends it
        // (or removes it, if it is gone).
        let nack = client.handle(response(vec![("ns/a.example", service(""))], &[]));
        assert!(nack.error_detail.is_some());
        assert!(state.service("ns/a.example").is_some());
        assert_eq!(client.held[ADDRESS_TYPE]["ns/a.example"], "");

        let ack = client.handle(response(vec![], &["ns/a.example"]));
        assert!(ack.error_detail.is_none());
        assert!(state.service("ns/a.example").is_none());
        assert!(client.held[ADDRESS_TYPE].is_empty());
    }

    #[test]
    fn inbound_fails_closed_until_the_first_policies_arrive() {
        let state = Arc::new(ProxyState::new());
        let w: mesh_core::Workload = serde_yaml::from_str(
            "{uid: u, name: n, namespace: ns, addresses: [10.0.0.1], tunnelProtocol: HBONE}",
        )
        .unwrap();
        state.insert(w.clone());
        let conn = mesh_core::ConnectionInfo {
            src: "10.0.0.9:1000".parse().unwrap(),
            dst: "10.0.0.1:80".parse().unwrap(),
            src_identity: None,
        };
        assert!(
            state.authorize(&w.uid, &conn).is_some(),
            "no xDS: local state decides"
        );
        let ready = mesh_runtime::readiness::Ready::new();
        let handler = StateHandler::new(state.clone(), true);
        let mut client = XdsClient::new(test_config(), handler, &ready, Default::default());
        assert!(state.authorize(&w.uid, &conn).is_none(), "policies pending");
        client.handle(DeltaDiscoveryResponse {
            type_url: AUTHORIZATION_TYPE.into(),
            nonce: "n".into(),
            ..Default::default()
        });
        assert!(
            state
                .authorize(&w.uid, &conn)
                .is_some_and(|d| d.is_allowed())
        );
    }
}

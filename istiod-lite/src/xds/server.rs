//! `AggregatedDiscoveryService/DeltaAggregatedResources` on 15012, next to
//! the CA and authenticated the same way.
//!
//! Each stream subscribes by wildcard to the types it asks for. On its first
//! request of a type it is sent every resource whose version differs from
//! the `initial_resource_versions` it brought (and removals for names it
//! holds that no longer exist); after that, only what changes. ACKs are
//! noted; NACKs are logged with the node and the reason.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use mesh_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use mesh_runtime::drain::{DrainWatcher, WeakDrainWatcher};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::resources::{ResourceSet, SUPPORTED_TYPES, WAYPOINT_CONFIG_TYPE};
use crate::ca::token::authenticate;
use crate::ca::{Authenticator, Caller};
use crate::metrics::{Metrics, TypeLabel};

/// Counters the tests (and later the metrics) read.
#[derive(Debug, Default)]
pub struct XdsStats {
    pub streams: AtomicU64,
    pub responses: AtomicU64,
    pub resources_sent: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
}

pub struct AdsService {
    auth: Arc<dyn Authenticator>,
    resources: watch::Receiver<Arc<ResourceSet>>,
    /// Weak: the service lives in every connection of the gRPC server,
    /// which the drain must not wait for; each stream holds a watcher.
    drain: WeakDrainWatcher,
    stats: Arc<XdsStats>,
    metrics: Arc<Metrics>,
}

impl AdsService {
    pub fn new(
        auth: Arc<dyn Authenticator>,
        resources: watch::Receiver<Arc<ResourceSet>>,
        drain: DrainWatcher,
        stats: Arc<XdsStats>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            auth,
            resources,
            drain: drain.downgrade(),
            stats,
            metrics,
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let caller = authenticate(self.auth.as_ref(), request.metadata())
            .await
            .inspect_err(|s| warn!(reason = %s.message(), "xDS stream refused"))?;
        let drain = self
            .drain
            .upgrade()
            .ok_or_else(|| Status::unavailable("istiod-lite is shutting down"))?;
        let (tx, rx) = mpsc::channel(16);
        self.stats.streams.fetch_add(1, Ordering::Relaxed);
        let stream = AdsStream {
            caller,
            node: String::new(),
            subscriptions: HashMap::new(),
            nonce: 0,
            tx,
            stats: self.stats.clone(),
            metrics: self.metrics.clone(),
            drain,
        };
        tokio::spawn(stream.run(request.into_inner(), self.resources.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What one proxy holds of one type: name → version.
type Held = HashMap<String, String>;

struct AdsStream {
    caller: Caller,
    node: String,
    subscriptions: HashMap<String, Held>,
    nonce: u64,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    stats: Arc<XdsStats>,
    metrics: Arc<Metrics>,
    /// Also raced by every push, which may wait on a proxy that does not
    /// read.
    drain: DrainWatcher,
}

impl AdsStream {
    async fn run(
        mut self,
        mut requests: Streaming<DeltaDiscoveryRequest>,
        mut resources: watch::Receiver<Arc<ResourceSet>>,
    ) {
        let drain = self.drain.clone();
        self.metrics.connected(true);
        loop {
            tokio::select! {
                r = requests.message() => match r {
                    Ok(Some(req)) => {
                        // Not marked seen: a change published meanwhile must
                        // still wake the `changed()` branch (diffs are idempotent).
                        let current = resources.borrow().clone();
                        if self.on_request(req, &current).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        debug!(node = %self.node, error = %status, "xDS stream ended");
                        break;
                    }
                },
                changed = resources.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let current = resources.borrow_and_update().clone();
                    if self.push_all(&current).await.is_err() {
                        break;
                    }
                }
                _ = drain.signaled() => break,
            }
        }
        self.metrics.connected(false);
        debug!(node = %self.node, "xDS stream closed");
    }

    async fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        current: &ResourceSet,
    ) -> Result<(), ()> {
        if let Some(node) = &req.node
            && self.node.is_empty()
        {
            self.node = node.id.clone();
            info!(node = %self.node, caller = %format!("{}/{}", self.caller.namespace, self.caller.service_account), "xDS stream opened");
        }
        if !req.response_nonce.is_empty() {
            match &req.error_detail {
                Some(detail) => {
                    self.stats.nacks.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .rejects
                        .get_or_create(&TypeLabel::of(&req.type_url))
                        .inc();
                    warn!(node = %self.node, type_url = %req.type_url, nonce = %req.response_nonce,
                        reason = %detail.message, "proxy rejected (NACKed) resources");
                }
                None => {
                    self.stats.acks.fetch_add(1, Ordering::Relaxed);
                    debug!(node = %self.node, type_url = %req.type_url, nonce = %req.response_nonce, "ACK");
                }
            }
            return Ok(());
        }
        if !SUPPORTED_TYPES.contains(&req.type_url.as_str()) {
            warn!(node = %self.node, type_url = %req.type_url, "subscription to a type this server does not serve; ignoring it");
            return Ok(());
        }
        if req.resource_names_subscribe.iter().any(|n| n != "*") {
            debug!(node = %self.node, type_url = %req.type_url, "named subscriptions are served as wildcard");
        }
        if self.subscriptions.contains_key(&req.type_url) {
            return Ok(());
        }
        // First request of this type: the proxy holds what it says it holds.
        self.subscriptions
            .insert(req.type_url.clone(), req.initial_resource_versions);
        self.push(&req.type_url, current, true).await
    }

    async fn push_all(&mut self, current: &ResourceSet) -> Result<(), ()> {
        // A ztunnel denies connections to a workload that lists a policy it
        // does not hold. So new and changed policies go before the workloads
        // that name them, and removed ones after the workloads stop naming
        // them: make before break, with no blip either way.
        let policies = super::AUTHORIZATION_TYPE;
        let others: Vec<String> = self
            .subscriptions
            .keys()
            .filter(|t| *t != policies)
            .cloned()
            .collect();
        self.push_part(policies, current, false, Part::Updates)
            .await?;
        for t in others {
            self.push(&t, current, false).await?;
        }
        self.push_part(policies, current, false, Part::Removals)
            .await?;
        if let Some(at) = current.changed_at {
            self.metrics
                .convergence
                .0
                .observe(at.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Sends the difference between what the proxy holds and `current`.
    /// `always`: send even when empty (the answer to a first request, which
    /// the proxy needs to become ready).
    async fn push(
        &mut self,
        type_url: &str,
        current: &ResourceSet,
        always: bool,
    ) -> Result<(), ()> {
        self.push_part(type_url, current, always, Part::Both).await
    }

    /// [`Self::push`], limited to new and changed resources, or to
    /// removals, or not.
    async fn push_part(
        &mut self,
        type_url: &str,
        current: &ResourceSet,
        always: bool,
        part: Part,
    ) -> Result<(), ()> {
        let empty = Default::default();
        let all = current.of_type(type_url).unwrap_or(&empty);
        let own;
        let want = if type_url == WAYPOINT_CONFIG_TYPE {
            // A waypoint is sent its own configuration only: the one named
            // after the identity it authenticated as (`ns/<gateway name>`).
            let name = format!("{}/{}", self.caller.namespace, self.caller.service_account);
            own = all
                .get_key_value(&name)
                .map(|(k, v)| (k.clone(), v.clone()))
                .into_iter()
                .collect();
            &own
        } else {
            all
        };
        let Some(held) = self.subscriptions.get_mut(type_url) else {
            return Ok(());
        };
        let mut resources = Vec::new();
        for (name, r) in want {
            if part == Part::Removals {
                break;
            }
            if held.get(name) != Some(&r.version) {
                resources.push(Resource {
                    version: r.version.clone(),
                    resource: Some(r.body.clone()),
                    name: name.clone(),
                    ..Default::default()
                });
                held.insert(name.clone(), r.version.clone());
            }
        }
        let removed: Vec<String> = held
            .keys()
            .filter(|n| part != Part::Updates && !want.contains_key(*n))
            .cloned()
            .collect();
        for n in &removed {
            held.remove(n);
        }
        if resources.is_empty() && removed.is_empty() && !always {
            return Ok(());
        }
        self.nonce += 1;
        let response = DeltaDiscoveryResponse {
            system_version_info: current.generation.to_string(),
            type_url: type_url.to_string(),
            nonce: format!("{}-{}", current.generation, self.nonce),
            removed_resources: removed,
            resources,
        };
        debug!(node = %self.node, %type_url, resources = response.resources.len(),
            removed = response.removed_resources.len(), "pushing");
        self.stats.responses.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .pushes
            .get_or_create(&TypeLabel::of(type_url))
            .inc();
        self.stats
            .resources_sent
            .fetch_add(response.resources.len() as u64, Ordering::Relaxed);
        // A proxy that stops reading fills the stream's window and this
        // queue; the push then waits for it, but not past a drain.
        tokio::select! {
            sent = self.tx.send(Ok(response)) => sent.map_err(|_| ()),
            _ = self.drain.signaled() => Err(()),
        }
    }
}

/// Which part of a type's difference to send.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Both,
    Updates,
    Removals,
}

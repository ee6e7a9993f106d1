//! The model from a Kubernetes API server: one watcher (list, then watch,
//! re-listing when the watch breaks) per kind the mesh reads, folded into
//! the same [`Model`] the manifest directory gives, through the same
//! parser. Only the source differs.
//!
//! **Invariant:** as with the manifest directory, a broken object never
//! takes away what was working. An object that fails to parse keeps its
//! last good version (or stays absent), and the error names it.
//!
//! A kind whose CRD is not installed (the Gateway API, say) counts as
//! empty. Its watcher keeps retrying with backoff, so installing the CRD
//! later is picked up without a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use mesh_model::{Kind, Model, Object, ObjectKey, Parsed, parse_object};
use mesh_runtime::drain::DrainWatcher;
use tokio::sync::watch;
use tracing::{info, warn};

/// A kind the mesh reads, and where the API server serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watched {
    pub kind: Kind,
    /// Empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
}

impl Watched {
    pub fn api_version(&self) -> String {
        match self.group {
            "" => self.version.to_string(),
            g => format!("{g}/{}", self.version),
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version: self.api_version(),
            kind: self.kind.as_str().into(),
            plural: self.plural.into(),
        }
    }
}

const SECURITY: &str = "security.istio.io";
const GATEWAY: &str = "gateway.networking.k8s.io";

/// The kinds the node agent needs: which pods are enrolled.
pub const ENROLLMENT: [Watched; 2] = [watched(Kind::Namespace), watched(Kind::Pod)];

/// Where `kind` is served (every kind of the model is in [`WATCHED`]).
pub const fn watched(kind: Kind) -> Watched {
    let mut i = 0;
    while i < WATCHED.len() {
        if WATCHED[i].kind as u8 == kind as u8 {
            return WATCHED[i];
        }
        i += 1;
    }
    panic!("a kind of the model is not in WATCHED")
}

/// Every kind of the model, at the version read.
pub const WATCHED: [Watched; 10] = [
    Watched {
        kind: Kind::Namespace,
        group: "",
        version: "v1",
        plural: "namespaces",
    },
    Watched {
        kind: Kind::Pod,
        group: "",
        version: "v1",
        plural: "pods",
    },
    Watched {
        kind: Kind::Service,
        group: "",
        version: "v1",
        plural: "services",
    },
    Watched {
        kind: Kind::EndpointSlice,
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
    },
    Watched {
        kind: Kind::AuthorizationPolicy,
        group: SECURITY,
        version: "v1",
        plural: "authorizationpolicies",
    },
    Watched {
        kind: Kind::PeerAuthentication,
        group: SECURITY,
        version: "v1",
        plural: "peerauthentications",
    },
    Watched {
        kind: Kind::RequestAuthentication,
        group: SECURITY,
        version: "v1",
        plural: "requestauthentications",
    },
    Watched {
        kind: Kind::Gateway,
        group: GATEWAY,
        version: "v1",
        plural: "gateways",
    },
    Watched {
        kind: Kind::HttpRoute,
        group: GATEWAY,
        version: "v1",
        plural: "httproutes",
    },
    Watched {
        kind: Kind::GrpcRoute,
        group: GATEWAY,
        version: "v1",
        plural: "grpcroutes",
    },
];

/// The objects the watchers have delivered, by kind; pure, so tests feed it
/// events directly.
#[derive(Debug)]
pub struct KubeObjects {
    /// The kinds watched.
    kinds: Vec<Watched>,
    objects: BTreeMap<ObjectKey, Object>,
    /// Objects of a kind being re-listed (between `Init` and `InitDone`).
    relisting: BTreeMap<Kind, BTreeMap<ObjectKey, Object>>,
    /// Kinds whose first list is complete (or whose CRD is absent).
    synced: BTreeSet<Kind>,
}

/// Why an object from the API server was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {namespace}/{name}: {problem}; keeping its last good version")]
pub struct ObjectRejected {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub problem: String,
}

impl Default for KubeObjects {
    /// Every kind of the model.
    fn default() -> Self {
        Self::of(&WATCHED)
    }
}

impl KubeObjects {
    /// Only `kinds` (the node agent needs Namespaces and Pods).
    pub fn of(kinds: &[Watched]) -> Self {
        Self {
            kinds: kinds.to_vec(),
            objects: BTreeMap::new(),
            relisting: BTreeMap::new(),
            synced: BTreeSet::new(),
        }
    }

    pub fn model(&self) -> Model {
        Model::from_objects(self.objects.iter())
    }

    /// Whether every kind has been listed once.
    pub fn synced(&self) -> bool {
        self.kinds.iter().all(|w| self.synced.contains(&w.kind))
    }

    /// Counts a kind as listed and empty: its CRD is not installed.
    pub fn absent(&mut self, kind: Kind) -> bool {
        let before = self.objects.len();
        self.objects.retain(|k, _| k.kind != kind);
        self.relisting.remove(&kind);
        let newly = self.synced.insert(kind);
        newly || self.objects.len() != before
    }

    /// Applies one watcher event; returns whether the model changed, and
    /// the objects refused (each keeps its last good version).
    pub fn apply(
        &mut self,
        watched: &Watched,
        event: Event<DynamicObject>,
    ) -> (bool, Vec<ObjectRejected>) {
        let kind = watched.kind;
        let mut rejected = Vec::new();
        let changed = match event {
            Event::Init => {
                self.relisting.insert(kind, BTreeMap::new());
                false
            }
            Event::InitApply(o) => {
                let parsed = self.parse(watched, o, &mut rejected);
                if let Some((key, object)) = parsed {
                    self.relisting.entry(kind).or_default().insert(key, object);
                }
                false
            }
            Event::InitDone => {
                let fresh = self.relisting.remove(&kind).unwrap_or_default();
                let before: BTreeMap<&ObjectKey, &Object> = self
                    .objects
                    .iter()
                    .filter(|(k, _)| k.kind == kind)
                    .collect();
                let same = before.len() == fresh.len()
                    && fresh.iter().all(|(k, o)| before.get(k) == Some(&o));
                if !same {
                    self.objects.retain(|k, _| k.kind != kind);
                    self.objects.extend(fresh);
                }
                let newly = self.synced.insert(kind);
                !same || newly
            }
            Event::Apply(o) => match self.parse(watched, o, &mut rejected) {
                Some((key, object)) if self.objects.get(&key) != Some(&object) => {
                    self.objects.insert(key, object);
                    true
                }
                _ => false,
            },
            Event::Delete(o) => {
                let key = key_of(watched, &o);
                self.objects.remove(&key).is_some()
            }
        };
        (changed, rejected)
    }

    /// The object, parsed as the manifest source parses it; a refusal is
    /// recorded, and during a re-list the last good version is carried
    /// over.
    fn parse(
        &self,
        watched: &Watched,
        o: DynamicObject,
        rejected: &mut Vec<ObjectRejected>,
    ) -> Option<(ObjectKey, Object)> {
        let key = key_of(watched, &o);
        let refuse = |problem: String, rejected: &mut Vec<ObjectRejected>| {
            rejected.push(ObjectRejected {
                kind: watched.kind.as_str(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                problem,
            });
            self.objects
                .get(&key)
                .map(|last| (key.clone(), last.clone()))
        };
        match to_object(watched, &o) {
            Ok(Some(parsed)) => Some(parsed),
            Ok(None) => None,
            Err(problem) => refuse(problem, rejected),
        }
    }
}

/// An object from the API server, read by the manifest source's parser.
/// `None` for kinds the model does not read.
pub(crate) fn to_object(
    watched: &Watched,
    o: &DynamicObject,
) -> Result<Option<(ObjectKey, Object)>, String> {
    let mut json = serde_json::to_value(o).map_err(|e| e.to_string())?;
    // List items come without their type; the watcher knows it.
    json["apiVersion"] = watched.api_version().into();
    json["kind"] = watched.kind.as_str().into();
    let doc = serde_yaml::to_value(&json).map_err(|e| e.to_string())?;
    match parse_object(doc) {
        Ok(Parsed::Object(k, object)) => Ok(Some((k, *object))),
        Ok(Parsed::Ignored { .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn key_of(watched: &Watched, o: &DynamicObject) -> ObjectKey {
    ObjectKey {
        kind: watched.kind,
        namespace: match watched.kind.namespaced() {
            true => o.metadata.namespace.clone().unwrap_or_default(),
            false => String::new(),
        },
        name: o.metadata.name.clone().unwrap_or_default(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading the kubeconfig {path}: {error}")]
    Kubeconfig { path: String, error: String },
    #[error(
        "no Kubernetes configuration: {0} (give --kubeconfig FILE, or run in a pod with a \
         service account)"
    )]
    NoConfig(String),
    #[error("the Kubernetes client cannot be built: {0}")]
    Client(String),
    #[error(
        "cannot reach the Kubernetes API server at {url}: {error} (check the kubeconfig, and \
         that the cluster is up)"
    )]
    Unreachable { url: String, error: String },
    #[error(
        "the Kubernetes API server at {url} did not answer within {timeout:?} (check the \
         kubeconfig, and that the cluster is up)"
    )]
    Timeout { url: String, timeout: Duration },
    #[error("the first list of {0} did not complete within {1:?}; is the API server overloaded?")]
    SyncTimeout(String, Duration),
}

/// How long an API server has to answer at start before a binary gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first list of every kind watched may take.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest any Kubernetes call waits for the server between reads.
pub const KUBE_READ_TIMEOUT: Duration = Duration::from_secs(295);

/// A client for the cluster of `kubeconfig` (its current context), or,
/// without one, the in-cluster service account (or `KUBECONFIG`); checked
/// to answer within `timeout`, so a wrong address fails at once.
pub async fn connect(kubeconfig: Option<&Path>, timeout: Duration) -> Result<Client, SourceError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let config = match kubeconfig {
        Some(path) => {
            let shown = path.display().to_string();
            let read = Kubeconfig::read_from(path).map_err(|e| SourceError::Kubeconfig {
                path: shown.clone(),
                error: e.to_string(),
            })?;
            kube::Config::from_custom_kubeconfig(read, &KubeConfigOptions::default())
                .await
                .map_err(|e| SourceError::Kubeconfig {
                    path: shown,
                    error: e.to_string(),
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| SourceError::NoConfig(e.to_string()))?,
    };
    let mut config = config;
    // Every call waits at most this long for the server between reads (the
    // kube client has none by default, so a hung relist or status write
    // stalled its task for ever): the watchers' own idle bound, 290 s of
    // watch plus 5, counted from each request rather than from when its
    // pooled connection went idle.
    config.read_timeout = Some(KUBE_READ_TIMEOUT);
    config.reset_reader_on_write = true;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| SourceError::Client(e.to_string()))?;
    match tokio::time::timeout(timeout, client.apiserver_version()).await {
        Err(_) => Err(SourceError::Timeout { url, timeout }),
        Ok(Err(e)) => Err(SourceError::Unreachable {
            url,
            error: e.to_string(),
        }),
        Ok(Ok(v)) => {
            info!(%url, version = %v.git_version, "connected to the Kubernetes API server");
            Ok(client)
        }
    }
}

type Events =
    futures::stream::BoxStream<'static, (Watched, Result<Event<DynamicObject>, watcher::Error>)>;

/// The watchers of `kinds`, merged; Pods only those matching
/// `pod_fields` when given (a field selector such as `spec.nodeName=n1`).
fn events(client: Client, kinds: &[Watched], pod_fields: Option<&str>) -> Events {
    let streams = kinds.iter().map(|w| {
        let w = *w;
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &w.api_resource());
        let config = match pod_fields {
            Some(fields) if w.kind == Kind::Pod => watcher::Config::default().fields(fields),
            _ => watcher::Config::default(),
        };
        watcher::watcher(api, config)
            .default_backoff()
            .map(move |e| (w, e))
            .boxed()
    });
    futures::stream::select_all(streams).boxed()
}

/// A running source: [`KubeSource::start`] lists everything once, then
/// [`KubeSource::run`] follows changes.
pub struct KubeSource {
    objects: KubeObjects,
    events: Events,
}

impl KubeSource {
    /// Lists every kind (a missing CRD counts as empty); returns once all
    /// are listed, so the first proxies get the whole mesh.
    pub async fn start(client: Client, timeout: Duration) -> Result<(Self, Model), SourceError> {
        Self::start_kinds(client, &WATCHED, timeout).await
    }

    /// [`Self::start`] for some kinds only.
    pub async fn start_kinds(
        client: Client,
        kinds: &[Watched],
        timeout: Duration,
    ) -> Result<(Self, Model), SourceError> {
        Self::start_selected(client, kinds, None, timeout).await
    }

    /// [`Self::start_kinds`], with Pods narrowed by a field selector (the
    /// node agent wants its own node's: `spec.nodeName=<node>`).
    pub async fn start_selected(
        client: Client,
        kinds: &[Watched],
        pod_fields: Option<&str>,
        timeout: Duration,
    ) -> Result<(Self, Model), SourceError> {
        let mut source = KubeSource {
            objects: KubeObjects::of(kinds),
            events: events(client, kinds, pod_fields),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while !source.objects.synced() {
            let next = tokio::time::timeout_at(deadline, source.events.next()).await;
            match next {
                Ok(Some(event)) => {
                    source.handle(event);
                }
                Ok(None) => break,
                Err(_) => {
                    let missing: Vec<&str> = kinds
                        .iter()
                        .filter(|w| !source.objects.synced.contains(&w.kind))
                        .map(|w| w.plural)
                        .collect();
                    return Err(SourceError::SyncTimeout(missing.join(", "), timeout));
                }
            }
        }
        let model = source.objects.model();
        Ok((source, model))
    }

    /// One event in; whether the model changed.
    fn handle(
        &mut self,
        (w, event): (Watched, Result<Event<DynamicObject>, watcher::Error>),
    ) -> bool {
        match event {
            Ok(event) => {
                let (changed, rejected) = self.objects.apply(&w, event);
                for r in rejected {
                    warn!("invalid object from the API server: {r}");
                }
                changed
            }
            // Before the first list, a 404 means the CRD is not installed:
            // the kind is empty. After it, keep what we have: a 404 while an
            // API server restarts must not wipe every policy.
            Err(e) if is_not_found(&e) && !self.objects.synced.contains(&w.kind) => {
                warn!(kind = w.kind.as_str(), resource = %format!("{}.{}", w.plural, w.group),
                    "the API server does not serve this kind (CRD not installed?); treating it as empty and retrying");
                self.objects.absent(w.kind)
            }
            Err(e) => {
                warn!(kind = w.kind.as_str(), error = %e, "watching failed; retrying with backoff");
                false
            }
        }
    }

    /// Follows changes until the drain, publishing a new model after each
    /// burst of events.
    pub async fn run(mut self, models: watch::Sender<Arc<Model>>, drain: DrainWatcher) {
        loop {
            let event = tokio::select! {
                e = self.events.next() => e,
                _ = drain.signaled() => return,
            };
            let Some(event) = event else { return };
            let mut changed = self.handle(event);
            // Take whatever else is ready before publishing once.
            while let Some(Some(event)) = self.events.next().now_or_never() {
                changed |= self.handle(event);
            }
            if changed && self.objects.synced() {
                models.send_replace(Arc::new(self.objects.model()));
            }
        }
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    use kube::Error;
    match e {
        watcher::Error::InitialListFailed(Error::Api(s))
        | watcher::Error::WatchStartFailed(Error::Api(s))
        | watcher::Error::WatchFailed(Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

#[cfg(test)]
mod tests;

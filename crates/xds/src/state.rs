//! What this proxy knows about the mesh's workloads.
//!
//! Fed by the xDS client (and a local file, `LOCAL_XDS_PATH`); read by every
//! connection. One writer, many readers.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use mesh_core::{
    Authorization, ConnectionInfo, Decision, DenyReason, GatewayAddress, GatewayDestination,
    Network, NetworkAddress, Scope, Service, Workload, WorkloadUid,
};
use tokio::sync::watch;
use tracing::info;

/// Istio's root namespace, where mesh-wide (global) policies live.
const ROOT_NAMESPACE: &str = "istio-system";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{path}: workload {uid}: {reason}")]
    Invalid {
        path: String,
        uid: String,
        reason: String,
    },
}

/// The file format of `LOCAL_XDS_PATH`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    #[serde(default)]
    pub workloads: Vec<Workload>,
    #[serde(default)]
    pub policies: Vec<Authorization>,
}

/// Workloads, services and policies, indexed for the data path.
///
/// Every change to a policy or to a workload's policy list bumps
/// [`ProxyState::policy_changes`], so open connections can be re-checked.
#[derive(Debug)]
pub struct ProxyState {
    inner: RwLock<Inner>,
    policy_version: watch::Sender<u64>,
    /// False from the moment an xDS client is attached until its first
    /// Authorization response is applied: before that, a workload's
    /// policies may simply not have arrived, and inbound fails closed.
    policies_synced: AtomicBool,
}

impl Default for ProxyState {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            policy_version: watch::Sender::new(0),
            policies_synced: AtomicBool::new(true),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_uid: HashMap<String, Arc<Workload>>,
    by_addr: HashMap<NetworkAddress, Arc<Workload>>,
    services: HashMap<String, Arc<Service>>,
    services_by_vip: HashMap<NetworkAddress, Arc<Service>>,
    policies: HashMap<String, Arc<Authorization>>,
    /// Policies (`namespace/name`) the control plane sent that could not be
    /// read, and of which no good version is held: their scope is unknown,
    /// so every workload of their namespace (all workloads, for the root
    /// namespace) is denied until a readable version or a removal arrives.
    rejected_policies: BTreeSet<String>,
    /// Service key → uids of the workloads that list it (its endpoints).
    endpoints: HashMap<String, BTreeSet<String>>,
}

impl Inner {
    fn index(&mut self, w: &Arc<Workload>) {
        for ip in &w.addresses {
            self.by_addr
                .insert(NetworkAddress::new(w.network.clone(), *ip), w.clone());
        }
        for service in w.services.keys() {
            self.endpoints
                .entry(service.clone())
                .or_default()
                .insert(w.uid.to_string());
        }
    }

    fn unindex(&mut self, old: &Arc<Workload>) {
        for ip in &old.addresses {
            let key = NetworkAddress::new(old.network.clone(), *ip);
            if self.by_addr.get(&key).is_some_and(|w| Arc::ptr_eq(w, old)) {
                self.by_addr.remove(&key);
            }
        }
        for service in old.services.keys() {
            if let Some(uids) = self.endpoints.get_mut(service) {
                uids.remove(old.uid.as_str());
                if uids.is_empty() {
                    self.endpoints.remove(service);
                }
            }
        }
    }
}

impl ProxyState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads and validates a local config file; nothing is applied if any
    /// workload in it is invalid.
    pub fn load_file(path: &Path) -> Result<LocalConfig, StateError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
            path: p.clone(),
            source,
        })?;
        let config: LocalConfig =
            serde_yaml::from_str(&text).map_err(|source| StateError::Parse {
                path: p.clone(),
                source,
            })?;
        for w in &config.workloads {
            w.identity().map_err(|e| StateError::Invalid {
                path: p.clone(),
                uid: w.uid.to_string(),
                reason: e.to_string(),
            })?;
        }
        Ok(config)
    }

    /// Applies a local config file's content.
    pub fn apply_local(&self, config: LocalConfig) {
        for w in config.workloads {
            self.insert(w);
        }
        for p in config.policies {
            self.insert_policy(p);
        }
    }

    /// Policies come from a control plane that has not answered yet.
    pub fn expect_policies(&self) {
        self.policies_synced.store(false, Ordering::Release);
    }

    /// The first set of policies has been applied.
    pub fn policies_arrived(&self) {
        self.policies_synced.store(true, Ordering::Release);
    }

    pub fn policies_synced(&self) -> bool {
        self.policies_synced.load(Ordering::Acquire)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        // Each critical section leaves the maps consistent, so a poisoned
        // lock still holds a usable state.
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn policies_changed(&self) {
        self.policy_version.send_modify(|v| *v += 1);
    }

    /// Adds or replaces a workload (by uid).
    pub fn insert(&self, workload: Workload) {
        let w = Arc::new(workload);
        let policies_differ = {
            let mut inner = self.write();
            let old = inner.by_uid.insert(w.uid.to_string(), w.clone());
            if let Some(old) = &old {
                inner.unindex(old);
            }
            inner.index(&w);
            old.is_none_or(|o| o.authorization_policies != w.authorization_policies)
        };
        if policies_differ {
            self.policies_changed();
        }
    }

    /// Removes a workload by uid; false if it was unknown. Connections to
    /// it are re-checked (and closed).
    pub fn remove_workload(&self, uid: &str) -> bool {
        {
            let mut inner = self.write();
            let Some(old) = inner.by_uid.remove(uid) else {
                return false;
            };
            inner.unindex(&old);
        }
        self.policies_changed();
        true
    }

    pub fn insert_service(&self, service: Service) {
        let s = Arc::new(service);
        let mut inner = self.write();
        if let Some(old) = inner.services.insert(s.key(), s.clone()) {
            for vip in &old.vips {
                inner.services_by_vip.remove(vip);
            }
        }
        for vip in &s.vips {
            inner.services_by_vip.insert(vip.clone(), s.clone());
        }
    }

    /// Removes a service by `namespace/hostname`; false if it was unknown.
    pub fn remove_service(&self, key: &str) -> bool {
        let mut inner = self.write();
        let Some(old) = inner.services.remove(key) else {
            return false;
        };
        for vip in &old.vips {
            if inner
                .services_by_vip
                .get(vip)
                .is_some_and(|s| Arc::ptr_eq(s, &old))
            {
                inner.services_by_vip.remove(vip);
            }
        }
        true
    }

    pub fn insert_policy(&self, policy: Authorization) {
        let changed = {
            let mut inner = self.write();
            let key = policy.key();
            let was_rejected = inner.rejected_policies.remove(&key);
            let old = inner.policies.insert(key, Arc::new(policy.clone()));
            was_rejected || old.is_none_or(|o| *o != policy)
        };
        if changed {
            self.policies_changed();
        }
    }

    /// Records that the policy `key` (`namespace/name`) was sent but could
    /// not be read. A good version already held stays in force; without
    /// one, the policy's namespace fails closed (see `authorize`).
    pub fn reject_policy(&self, key: &str) {
        let newly = {
            let mut inner = self.write();
            !inner.policies.contains_key(key) && inner.rejected_policies.insert(key.to_string())
        };
        if newly {
            self.policies_changed();
        }
    }

    /// Removes a policy by `namespace/name`; false if it was unknown.
    pub fn remove_policy(&self, key: &str) -> bool {
        let removed = {
            let mut inner = self.write();
            let rejected = inner.rejected_policies.remove(key);
            inner.policies.remove(key).is_some() || rejected
        };
        if removed {
            self.policies_changed();
        }
        removed
    }

    /// Changes whenever a connection's authorization could have changed.
    pub fn policy_changes(&self) -> watch::Receiver<u64> {
        self.policy_version.subscribe()
    }

    pub fn workload_by_addr(&self, network: &Network, ip: IpAddr) -> Option<Arc<Workload>> {
        self.read()
            .by_addr
            .get(&NetworkAddress::new(network.clone(), ip))
            .cloned()
    }

    pub fn workload_by_uid(&self, uid: &str) -> Option<Arc<Workload>> {
        self.read().by_uid.get(uid).cloned()
    }

    pub fn service_by_vip(&self, network: &Network, ip: IpAddr) -> Option<Arc<Service>> {
        self.read()
            .services_by_vip
            .get(&NetworkAddress::new(network.clone(), ip))
            .cloned()
    }

    pub fn service(&self, key: &str) -> Option<Arc<Service>> {
        self.read().services.get(key).cloned()
    }

    pub fn workloads(&self) -> Vec<Arc<Workload>> {
        self.read().by_uid.values().cloned().collect()
    }

    pub fn services(&self) -> Vec<Arc<Service>> {
        self.read().services.values().cloned().collect()
    }

    pub fn policy_by_key(&self, key: &str) -> Option<Arc<Authorization>> {
        self.read().policies.get(key).cloned()
    }

    pub fn policies(&self) -> Vec<Arc<Authorization>> {
        self.read().policies.values().cloned().collect()
    }

    /// The endpoints of a service: workloads that list it, with the target
    /// port for `service_port` (resolved per endpoint when the service
    /// names its target port).
    pub fn endpoints(&self, service: &Service, service_port: u16) -> Vec<(Arc<Workload>, u16)> {
        let key = service.key();
        let declared = service
            .ports
            .iter()
            .find(|p| p.service_port == service_port)
            .map(|p| p.target_port);
        let Some(declared) = declared else {
            return Vec::new();
        };
        let inner = self.read();
        let Some(uids) = inner.endpoints.get(&key) else {
            return Vec::new();
        };
        uids.iter()
            .filter_map(|uid| {
                let w = inner.by_uid.get(uid)?;
                let target = w
                    .services
                    .get(&key)?
                    .iter()
                    .find(|p| p.service_port == service_port)
                    .map(|p| p.target_port)
                    .filter(|p| *p != 0)
                    .or((declared != 0).then_some(declared))?;
                (!w.addresses.is_empty()).then(|| (w.clone(), target))
            })
            .collect()
    }

    /// The waypoint pods behind `gw` (`dataplane.md` §8.2): the endpoints
    /// of its Service on the HBONE port (hostname form), or the workload at
    /// its address.
    pub fn waypoint_workloads(&self, gw: &GatewayAddress) -> Vec<Arc<Workload>> {
        match &gw.destination {
            GatewayDestination::Hostname {
                namespace,
                hostname,
            } => {
                let Some(service) =
                    self.service(&mesh_core::service::service_key(namespace, hostname))
                else {
                    return Vec::new();
                };
                self.endpoints(&service, gw.hbone_port)
                    .into_iter()
                    .map(|(w, _)| w)
                    .collect()
            }
            GatewayDestination::Address { network, address } => self
                .workload_by_addr(network, *address)
                .into_iter()
                .collect(),
        }
    }

    /// The policies that apply to `workload` (`dataplane.md` §7.2): its
    /// namespace's, the mesh-wide ones, and those it lists by name (an
    /// unknown listed name never gets here: `missing_policy` denies first).
    fn applicable(inner: &Inner, workload: &Workload) -> Vec<Arc<Authorization>> {
        let mut out: Vec<Arc<Authorization>> = inner
            .policies
            .values()
            .filter(|p| match p.scope {
                Scope::Global => true,
                Scope::Namespace => p.namespace == workload.namespace,
                Scope::WorkloadSelector => false,
            })
            .cloned()
            .collect();
        for p in workload
            .authorization_policies
            .iter()
            .filter_map(|key| inner.policies.get(key))
        {
            if !out.iter().any(|o| Arc::ptr_eq(o, p)) {
                out.push(p.clone());
            }
        }
        out
    }

    /// Why `workload`'s connections cannot be decided on the policies held:
    /// a policy it lists is missing, or a policy of its namespace (or of
    /// the root namespace) was refused. `None` when the policies are whole.
    fn missing_policy(inner: &Inner, workload: &Workload) -> Option<DenyReason> {
        if let Some(key) = workload
            .authorization_policies
            .iter()
            .find(|k| !inner.policies.contains_key(k.as_str()))
        {
            return Some(DenyReason::UnknownPolicy {
                policy: key.clone(),
                why: "has not arrived or was refused",
            });
        }
        inner
            .rejected_policies
            .iter()
            .find(|key| {
                let ns = key.split_once('/').map_or("", |(ns, _)| ns);
                ns == workload.namespace || ns == ROOT_NAMESPACE
            })
            .map(|key| DenyReason::UnknownPolicy {
                policy: key.clone(),
                why: "was sent in a form this proxy could not read",
            })
    }

    /// Decides a connection to the workload `uid` as it is now, reading the
    /// workload and the policies under one lock. `None`: the workload is
    /// gone, or policies have not arrived yet (callers refuse the
    /// connection).
    pub fn authorize(&self, uid: &WorkloadUid, conn: &ConnectionInfo) -> Option<Decision> {
        if !self.policies_synced() {
            return None;
        }
        let inner = self.read();
        let workload = inner.by_uid.get(uid.as_str())?;
        if let Some(reason) = Self::missing_policy(&inner, workload) {
            return Some(Decision::Deny(reason));
        }
        let policies = Self::applicable(&inner, workload);
        drop(inner);
        for p in mesh_core::authorization::dry_run_matches(policies.iter().map(|p| &**p), conn) {
            info!(policy = %p.key(), action = ?p.action, src_addr = %conn.src, dst_addr = %conn.dst, "dry-run policy matched");
        }
        Some(mesh_core::evaluate(policies.iter().map(|p| &**p), conn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_indexes_by_address() {
        let dir = std::env::temp_dir().join(format!("zt-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("local.yaml");
        std::fs::write(
            &file,
            "workloads:\n- uid: Kubernetes//Pod/default/sleep\n  name: sleep\n  namespace: default\n  addresses: [10.0.0.1]\n  tunnelProtocol: HBONE\n  serviceAccount: sleep\n  node: node-a\n",
        )
        .unwrap();
        let state = ProxyState::new();
        state.apply_local(ProxyState::load_file(&file).unwrap());
        let w = state
            .workload_by_addr(&Network::default(), "10.0.0.1".parse().unwrap())
            .unwrap();
        assert_eq!(
            w.identity().unwrap().to_string(),
            "spiffe://cluster.local/ns/default/sa/sleep"
        );
        std::fs::write(
            &file,
            "workloads:\n- uid: x\n  name: a\n  namespace: default\n  bogus: 1\n",
        )
        .unwrap();
        let err = ProxyState::load_file(&file).unwrap_err().to_string();
        assert!(err.contains("local.yaml") && err.contains("bogus"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_shipped_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../ztunnel/examples/local-workloads.yaml");
        let config = ProxyState::load_file(&path).unwrap();
        assert_eq!(config.workloads.len(), 2);
    }

    /// A policy the control plane sent that cannot be read, or one a
    /// workload lists that never came, denies instead of being skipped.
    #[test]
    fn unreadable_or_missing_policies_fail_closed() {
        use crate::client::{AUTHORIZATION_TYPE, Handler, StateHandler};
        use mesh_proto::istio::security as spb;
        use prost::Message;

        let state = Arc::new(ProxyState::new());
        let config: LocalConfig = serde_yaml::from_str(
            "workloads:\n\
             - {uid: a, name: a, namespace: apps, addresses: [10.0.0.1], serviceAccount: a, node: n}\n\
             - {uid: b, name: b, namespace: other, addresses: [10.0.0.2], serviceAccount: b, node: n}\n",
        )
        .unwrap();
        state.apply_local(config);
        let mut handler = StateHandler::new(state.clone(), true);
        handler.answered(AUTHORIZATION_TYPE);
        let conn = ConnectionInfo {
            src: "10.0.0.9:1000".parse().unwrap(),
            dst: "10.0.0.1:80".parse().unwrap(),
            src_identity: None,
        };
        let decide = |uid: &str| state.authorize(&WorkloadUid::new(uid), &conn).unwrap();
        assert_eq!(decide("a"), Decision::Allow);

        // An action this proxy does not know: refused, and its namespace
        // denied, while other namespaces are untouched.
        let unreadable = spb::Authorization {
            name: "deny-some".into(),
            namespace: "apps".into(),
            scope: spb::Scope::Namespace as i32,
            action: 42,
            ..Default::default()
        };
        let versions = state.policy_changes();
        let err = handler
            .apply(
                AUTHORIZATION_TYPE,
                "apps/deny-some",
                &unreadable.encode_to_vec(),
            )
            .unwrap_err();
        assert!(err.contains("action"), "{err}");
        assert!(
            versions.has_changed().unwrap(),
            "open connections are re-checked"
        );
        let denied = decide("a").to_string();
        assert!(
            denied.contains("apps/deny-some") && denied.contains("failing closed"),
            "{denied}"
        );
        assert_eq!(decide("b"), Decision::Allow);

        // A readable version lifts it; a later unreadable one keeps it.
        let readable = spb::Authorization {
            action: spb::Action::Deny as i32,
            ..unreadable.clone()
        };
        handler
            .apply(
                AUTHORIZATION_TYPE,
                "apps/deny-some",
                &readable.encode_to_vec(),
            )
            .unwrap();
        assert_eq!(
            decide("a"),
            Decision::Allow,
            "a DENY with no rules matches nothing"
        );
        assert!(
            handler
                .apply(
                    AUTHORIZATION_TYPE,
                    "apps/deny-some",
                    &unreadable.encode_to_vec()
                )
                .is_err()
        );
        assert_eq!(
            decide("a"),
            Decision::Allow,
            "the good version stays in force"
        );

        // A refused root-namespace policy denies every namespace; its
        // removal lifts that.
        let global = spb::Authorization {
            name: "mesh-wide".into(),
            namespace: "istio-system".into(),
            ..unreadable
        };
        let _ = handler.apply(
            AUTHORIZATION_TYPE,
            "istio-system/mesh-wide",
            &global.encode_to_vec(),
        );
        assert!(matches!(
            decide("b"),
            Decision::Deny(DenyReason::UnknownPolicy { .. })
        ));
        assert!(handler.remove(AUTHORIZATION_TYPE, "istio-system/mesh-wide"));
        assert_eq!(decide("b"), Decision::Allow);

        // A workload that lists a policy not (yet) held is denied.
        let mut b = (*state.workload_by_uid("b").unwrap()).clone();
        b.authorization_policies = vec!["other/allow-b".into()];
        state.insert(b);
        let why = decide("b").to_string();
        assert!(
            why.contains("other/allow-b") && why.contains("has not arrived"),
            "{why}"
        );
    }
}

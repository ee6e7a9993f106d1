//! What this waypoint serves, compiled from its configuration resource:
//! per bound Service its routes and policies, the workloads bound for
//! pod-addressed traffic, and the Gateway-wide policies. Replaced as a
//! whole on every push; requests read one snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mesh_model::waypoint::{AppProtocol, BoundService, Named, WaypointConfig};
use mesh_model::{AuthorizationPolicySpec, RequestAuthenticationSpec};

use crate::jwt::JwtValidator;
use crate::policy::Policies;
use crate::route::RouteTable;

#[derive(Default)]
pub struct Bindings {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// Gateway-wide policies: for pod-addressed traffic.
    pub workload_policies: Arc<Policies>,
    /// Gateway-wide RequestAuthentication, for pod-addressed traffic;
    /// `None` when no JWT rule applies.
    pub workload_jwt: Option<Arc<JwtValidator>>,
    services: HashMap<String, Arc<ServiceBinding>>,
    workloads: HashSet<String>,
    /// What this was compiled from, for the admin endpoint's dump.
    pub source: Option<Arc<WaypointConfig>>,
}

/// One bound Service.
pub struct ServiceBinding {
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub ports: HashMap<u16, AppProtocol>,
    pub routes: RouteTable,
    /// The Gateway's policies and the Service's, evaluated together.
    pub policies: Policies,
    /// The Gateway's JWT rules and the Service's; `None` when none apply.
    pub jwt: Option<Arc<JwtValidator>>,
}

impl Bindings {
    pub fn compile(cfg: &WaypointConfig) -> Result<Self, String> {
        let gateway_policies: &[Named<AuthorizationPolicySpec>] = &cfg.policies;
        let gateway_jwt: &[Named<RequestAuthenticationSpec>] = &cfg.request_authentications;
        let mut services = HashMap::new();
        for s in &cfg.services {
            services.insert(
                s.hostname.clone(),
                Arc::new(ServiceBinding::compile(
                    s,
                    gateway_policies,
                    gateway_jwt,
                    &cfg.domain_suffix,
                )?),
            );
        }
        Ok(Self {
            gateway: format!("{}/{}", cfg.namespace, cfg.name),
            workload_policies: Arc::new(Policies::new(gateway_policies)),
            workload_jwt: jwt_validator(gateway_jwt)?,
            services,
            workloads: cfg.workloads.iter().cloned().collect(),
            source: Some(Arc::new(cfg.clone())),
        })
    }

    pub fn service(&self, hostname: &str) -> Option<Arc<ServiceBinding>> {
        self.services.get(hostname).cloned()
    }

    pub fn serves_workload(&self, uid: &str) -> bool {
        self.workloads.contains(uid)
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }
}

impl ServiceBinding {
    fn compile(
        s: &BoundService,
        gateway_policies: &[Named<AuthorizationPolicySpec>],
        gateway_jwt: &[Named<RequestAuthenticationSpec>],
        domain: &str,
    ) -> Result<Self, String> {
        let routes = RouteTable::compile(s, domain)
            .map_err(|e| format!("service {}/{}: {e}", s.namespace, s.name))?;
        Ok(Self {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            hostname: s.hostname.clone(),
            ports: s.ports.iter().map(|p| (p.port, p.protocol)).collect(),
            routes,
            policies: Policies::new(gateway_policies.iter().chain(&s.policies)),
            jwt: jwt_validator(gateway_jwt.iter().chain(&s.request_authentications))?,
        })
    }

    /// The declared protocol of `port` (unspecified if the port is unknown).
    pub fn protocol(&self, port: u16) -> AppProtocol {
        self.ports.get(&port).copied().unwrap_or_default()
    }
}

/// The validator for these RequestAuthentications, `None` if they have no
/// JWT rule. An error names the RequestAuthentication (the push is NACKed).
fn jwt_validator<'a>(
    specs: impl IntoIterator<Item = &'a Named<RequestAuthenticationSpec>>,
) -> Result<Option<Arc<JwtValidator>>, String> {
    let v = JwtValidator::new(specs)?;
    Ok((!v.is_empty()).then(|| Arc::new(v)))
}

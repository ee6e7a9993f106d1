//! What a tunnelled connection is for: the HBONE authority is the original
//! destination (`dataplane.md` §8.3), a Service VIP (service-addressed) or a
//! pod IP (workload-addressed). Only what is bound to this waypoint is
//! served.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::{Network, Workload};
use mesh_model::waypoint::AppProtocol;
use mesh_xds::ProxyState;

use crate::bindings::{Bindings, ServiceBinding};
use crate::jwt::JwtValidator;
use crate::policy::Policies;

#[derive(Clone)]
pub enum Target {
    Service(Arc<ServiceBinding>),
    Workload {
        workload: Arc<Workload>,
        policies: Arc<Policies>,
        jwt: Option<Arc<JwtValidator>>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("{0} is neither a Service VIP nor a workload this mesh knows")]
    Unknown(SocketAddr),
    #[error("{0} is not bound to this waypoint")]
    NotBound(String),
}

impl Target {
    pub fn resolve(
        state: &ProxyState,
        bindings: &Bindings,
        network: &Network,
        original: SocketAddr,
    ) -> Result<Self, TargetError> {
        if let Some(service) = state.service_by_vip(network, original.ip()) {
            return bindings
                .service(&service.hostname)
                .map(Target::Service)
                .ok_or_else(|| TargetError::NotBound(format!("service {}", service.key())));
        }
        let workload = state
            .workload_by_addr(network, original.ip())
            .ok_or(TargetError::Unknown(original))?;
        if !bindings.serves_workload(workload.uid.as_str()) {
            return Err(TargetError::NotBound(format!("workload {}", workload.uid)));
        }
        Ok(Target::Workload {
            workload,
            policies: bindings.workload_policies.clone(),
            jwt: bindings.workload_jwt.clone(),
        })
    }

    pub fn policies(&self) -> &Policies {
        match self {
            Target::Service(s) => &s.policies,
            Target::Workload { policies, .. } => policies,
        }
    }

    /// The JWT rules that apply, if any.
    pub fn jwt(&self) -> Option<&JwtValidator> {
        match self {
            Target::Service(s) => s.jwt.as_deref(),
            Target::Workload { jwt, .. } => jwt.as_deref(),
        }
    }

    pub fn protocol(&self, port: u16) -> AppProtocol {
        match self {
            Target::Service(s) => s.protocol(port),
            Target::Workload { .. } => AppProtocol::Unspecified,
        }
    }

    /// For logs: `service ns/name` or `workload uid`.
    pub fn describe(&self) -> String {
        match self {
            Target::Service(s) => format!("service {}/{}", s.namespace, s.name),
            Target::Workload { workload, .. } => format!("workload {}", workload.uid),
        }
    }
}

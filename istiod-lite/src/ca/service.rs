//! `istio.v1.auth.IstioCertificateService/CreateCertificate`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::{Identity, TrustDomain};
use mesh_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateService;
use mesh_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use prost_types::value::Kind;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::authority::CertificateAuthority;
use super::nodes::NodePods;
use super::token::{Authenticator, Caller, authenticate};

pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Signing policy.
#[derive(Clone, Debug)]
pub struct CaPolicy {
    /// Used when the request asks for no particular lifetime.
    pub default_ttl: Duration,
    /// Longer requests are cut to this.
    pub max_ttl: Duration,
    /// `namespace/service-account` of the node proxies allowed to impersonate.
    pub trusted_node_accounts: HashSet<(String, String)>,
}

pub struct CaService {
    ca: Arc<CertificateAuthority>,
    auth: Arc<dyn Authenticator>,
    pods: Arc<dyn NodePods>,
    policy: CaPolicy,
    metrics: Arc<crate::metrics::Metrics>,
}

impl CaService {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        auth: Arc<dyn Authenticator>,
        pods: Arc<dyn NodePods>,
        policy: CaPolicy,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            ca,
            auth,
            pods,
            policy,
            metrics,
        }
    }

    async fn caller(&self, request: &Request<IstioCertificateRequest>) -> Result<Caller, Status> {
        authenticate(self.auth.as_ref(), request.metadata()).await
    }

    /// The identity the certificate is for: the caller's own, or with
    /// `ImpersonatedIdentity` the requested one, if the caller is a trusted
    /// node proxy and a pod with that identity runs on the caller's node.
    fn decide_identity(
        &self,
        caller: &Caller,
        request: &IstioCertificateRequest,
    ) -> Result<Identity, Status> {
        let td: &TrustDomain = self.ca.trust_domain();
        let requested = request
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY))
            .map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Ok(s.clone()),
                _ => Err(Status::invalid_argument(format!(
                    "metadata {IMPERSONATED_IDENTITY} must be a string SPIFFE identity"
                ))),
            })
            .transpose()?;
        let Some(requested) = requested else {
            return Identity::new(td.clone(), &caller.namespace, &caller.service_account)
                .map_err(|e| Status::unauthenticated(format!("caller identity is invalid: {e}")));
        };
        let caller_account = (caller.namespace.clone(), caller.service_account.clone());
        if !self.policy.trusted_node_accounts.contains(&caller_account) {
            return Err(Status::permission_denied(format!(
                "{}/{} may not request certificates for other identities: it is not a trusted node proxy (see --trusted-node-accounts / CA_TRUSTED_NODE_ACCOUNTS)",
                caller.namespace, caller.service_account
            )));
        }
        let identity: Identity = requested.parse().map_err(|e| {
            Status::invalid_argument(format!(
                "{IMPERSONATED_IDENTITY} {requested:?} is not a SPIFFE identity: {e}"
            ))
        })?;
        if identity.trust_domain() != td {
            return Err(Status::permission_denied(format!(
                "{identity} is outside this CA's trust domain {td}"
            )));
        }
        let node = caller.node.as_deref().ok_or_else(|| {
            Status::permission_denied(
                "the caller's credential names no node, so it cannot impersonate",
            )
        })?;
        if !self
            .pods
            .identity_on_node(node, identity.namespace(), identity.service_account())
        {
            return Err(Status::permission_denied(format!(
                "no pod with identity {identity} runs on node {node}; a node proxy may only request identities of pods on its own node"
            )));
        }
        Ok(identity)
    }

    fn ttl(&self, requested_secs: i64) -> Duration {
        if requested_secs <= 0 {
            return self.policy.default_ttl;
        }
        Duration::from_secs(requested_secs as u64).min(self.policy.max_ttl)
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.metrics.csr.inc();
        let caller = self.caller(&request).await.inspect_err(|s| {
            self.metrics.auth_failures.inc();
            warn!(reason = %s.message(), "CA request refused");
        })?;
        let body = request.into_inner();
        let identity = self.decide_identity(&caller, &body).inspect_err(|s| {
            self.metrics.refused.inc();
            warn!(caller = %format!("{}/{}", caller.namespace, caller.service_account), reason = %s.message(), "CA request refused");
        })?;
        let ttl = self.ttl(body.validity_duration);
        let chain = self.ca.sign(&body.csr, &identity, ttl).map_err(|e| {
            self.metrics.refused.inc();
            Status::invalid_argument(e.to_string())
        })?;
        self.metrics.issued.inc();
        info!(%identity, ttl = ?ttl, caller = %format!("{}/{}", caller.namespace, caller.service_account), "issued certificate");
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }
}

//! The client of istiod's `IstioCertificateService`.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use mesh_core::Identity;
use mesh_proto::istio::v1::auth::IstioCertificateRequest;
use mesh_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use prost_types::value::Kind;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::certificate::{TrustedRoots, WorkloadCertificate};
use crate::control::{ControlPlaneAddress, channel};
use crate::csr;
use crate::error::Error;

/// The metadata key istiod reads to issue a certificate for another identity.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Anything that can produce a certificate for an identity: the real CA
/// client, or a fake in tests.
pub trait CertificateSource: Send + Sync + 'static {
    fn fetch(&self, identity: &Identity) -> BoxFuture<'_, Result<WorkloadCertificate, Error>>;
}

/// Where the bearer token comes from.
#[derive(Clone, Debug)]
pub enum AuthSource {
    /// A file re-read on every call, so a rotated token is picked up.
    File(PathBuf),
    /// A fixed token.
    Static(String),
}

impl AuthSource {
    /// From a setting such as `AUTH_TOKEN`: an existing file path, a token
    /// itself (no `/`), or, when unset, the file `default`. A path that does
    /// not exist is an error rather than a token.
    pub fn from_setting(setting: Option<String>, default: &str) -> Result<Self, String> {
        match setting {
            Some(v) if std::path::Path::new(&v).exists() => Ok(Self::File(v.into())),
            Some(v) if v.contains('/') => Err("no such token file".into()),
            Some(v) => Ok(Self::Static(v)),
            None => Ok(Self::File(default.into())),
        }
    }

    /// Adds `authorization: Bearer <token>` and `clusterid` to a call to
    /// istiod (CA or xDS), reading the token afresh.
    pub async fn authorize(
        &self,
        metadata: &mut tonic::metadata::MetadataMap,
        cluster_id: &str,
    ) -> Result<(), Error> {
        let token = self.token().await?;
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Error::Bug("token is not a valid header value".into()))?;
        metadata.insert("authorization", bearer);
        if let Ok(cluster) = MetadataValue::try_from(cluster_id) {
            metadata.insert("clusterid", cluster);
        }
        Ok(())
    }

    async fn token(&self) -> Result<String, Error> {
        match self {
            AuthSource::Static(t) => Ok(t.clone()),
            AuthSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map(|t| t.trim().to_string())
                .map_err(|source| Error::Token {
                    path: path.display().to_string(),
                    source,
                }),
        }
    }
}

/// How a node proxy asks the CA for certificates.
#[derive(Clone, Debug)]
pub struct CaClientConfig {
    pub target: ControlPlaneAddress,
    pub auth: AuthSource,
    pub cluster_id: String,
    /// Requested validity (`SECRET_TTL`).
    pub ttl: Duration,
    /// Node-proxy mode: ask for other workloads' identities with
    /// `ImpersonatedIdentity`. Off when the proxy serves only its own identity.
    pub impersonate: bool,
}

pub struct CaClient {
    client: IstioCertificateServiceClient<Channel>,
    config: CaClientConfig,
    /// What issued chains must verify to: the configured root bundle that
    /// also authenticates the CA (CA_ROOT_CA).
    trusted: TrustedRoots,
}

/// How long one certificate request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl CaClient {
    pub fn new(config: CaClientConfig) -> Result<Self, Error> {
        let channel = channel(&config.target)?;
        let trusted =
            TrustedRoots::from_pem(&config.target.root_pem, "the configured root (CA_ROOT_CA)")?;
        Ok(Self {
            client: IstioCertificateServiceClient::new(channel),
            config,
            trusted,
        })
    }

    async fn request(&self, identity: &Identity) -> Result<WorkloadCertificate, Error> {
        let generated = csr::generate(identity)?;
        let metadata = self.config.impersonate.then(|| prost_types::Struct {
            fields: [(
                IMPERSONATED_IDENTITY.to_string(),
                prost_types::Value {
                    kind: Some(Kind::StringValue(identity.to_string())),
                },
            )]
            .into_iter()
            .collect(),
        });
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: generated.csr_pem,
            validity_duration: self.config.ttl.as_secs() as i64,
            metadata,
        });
        self.config
            .auth
            .authorize(request.metadata_mut(), &self.config.cluster_id)
            .await?;

        let mut client = self.client.clone();
        let answered = tokio::time::timeout(REQUEST_TIMEOUT, client.create_certificate(request))
            .await
            .map_err(|_| {
                mesh_core::wait::Wait::CaRequest.timed_out();
                Error::CaUnreachable {
                    address: self.config.target.address.clone(),
                    reason: format!("no answer within {REQUEST_TIMEOUT:?}"),
                }
            })?;
        let response = answered
            .map_err(|status| match status.code() {
                tonic::Code::Unavailable | tonic::Code::Unknown
                    if status.message().contains("transport")
                        || status.message().contains("connect") =>
                {
                    Error::CaUnreachable {
                        address: self.config.target.address.clone(),
                        reason: status.message().to_string(),
                    }
                }
                code => Error::CaRefused {
                    identity: identity.clone(),
                    code,
                    message: status.message().to_string(),
                },
            })?
            .into_inner();
        WorkloadCertificate::from_pem_chain(identity, &generated.key_pem, &response.cert_chain)?
            .trusting(&self.trusted)
            .map(|cert| cert.asked_for(self.config.ttl))
    }
}

impl CertificateSource for CaClient {
    fn fetch(&self, identity: &Identity) -> BoxFuture<'_, Result<WorkloadCertificate, Error>> {
        let identity = identity.clone();
        Box::pin(async move { self.request(&identity).await })
    }
}

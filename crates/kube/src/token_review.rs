//! Who is calling, by Kubernetes service account token: a TokenReview
//! (`authentication.k8s.io/v1`) with audience `istio-ca`, as istiod does
//! for its CA and xDS.
//!
//! The API server says whether the token is valid for the audience and
//! whose it is: `system:serviceaccount:<namespace>:<name>`, and for bound
//! tokens (the projected ones pods get) the pod and the node it runs on in
//! `extra`. The node matters: a node proxy may only ask for the
//! identities of pods on its own node.
//!
//! Answers are cached for a short time, so a ztunnel fetching certificates
//! for many pods does not cost one review each.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::Client;
use kube::api::{Api, PostParams};

/// The audience istiod's CA expects on the tokens it is sent.
pub const ISTIO_CA_AUDIENCE: &str = "istio-ca";
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const SA_PREFIX: &str = "system:serviceaccount:";
const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 10_000;
/// How long a review may take: the API server's answer decides whether a
/// proxy gets a certificate or its configuration, and a hung call would
/// hold that proxy with it.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// The service account a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reviewed {
    pub namespace: String,
    pub service_account: String,
    /// For bound tokens: the pod the token was issued to, and its node.
    pub pod: Option<String>,
    pub node: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the Kubernetes API server could not review the token: {0}")]
    Api(String),
    #[error("Kubernetes rejected the token: {0}")]
    Rejected(String),
    #[error("the token is not valid for audience {ISTIO_CA_AUDIENCE} (it is for {0:?})")]
    Audience(Vec<String>),
    #[error("the token belongs to {0:?}, not to a service account")]
    NotServiceAccount(String),
}

/// Reviews tokens against one cluster.
pub struct TokenReviewer {
    client: Client,
    audience: String,
    cache: Mutex<HashMap<String, (Instant, Reviewed)>>,
}

impl TokenReviewer {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            audience: ISTIO_CA_AUDIENCE.into(),
            cache: Mutex::default(),
        }
    }

    pub async fn review(&self, token: &str) -> Result<Reviewed, ReviewError> {
        if let Some(hit) = self.cached(token) {
            return Ok(hit);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| {
                    mesh_core::wait::Wait::TokenReview.timed_out();
                    ReviewError::Api(format!("no answer within {REVIEW_TIMEOUT:?}"))
                })?
                .map_err(|e| ReviewError::Api(e.to_string()))?;
        let reviewed = judge(answer.status.unwrap_or_default(), &self.audience)?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(token.to_string(), (Instant::now(), reviewed.clone()));
        Ok(reviewed)
    }

    fn cached(&self, token: &str) -> Option<Reviewed> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(token)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, r)| r.clone())
    }
}

/// What the API server's answer means for the CA.
fn judge(status: TokenReviewStatus, audience: &str) -> Result<Reviewed, ReviewError> {
    if status.authenticated != Some(true) {
        return Err(ReviewError::Rejected(
            status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "not authenticated".into()),
        ));
    }
    // An API server that ignores audiences answers with none: not ours.
    let audiences = status.audiences.unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(ReviewError::Audience(audiences));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let (namespace, service_account) = username
        .strip_prefix(SA_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty())
        .ok_or_else(|| ReviewError::NotServiceAccount(username.clone()))?;
    let extra = user.extra.unwrap_or_default();
    let first = |key: &str| extra.get(key).and_then(|v| v.first()).cloned();
    Ok(Reviewed {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod: first(POD_NAME),
        node: first(NODE_NAME),
    })
}

#[cfg(test)]
mod tests;

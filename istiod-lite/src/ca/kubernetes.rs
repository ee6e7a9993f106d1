//! Authentication in a Kubernetes cluster: service account tokens are
//! reviewed by the API server (audience `istio-ca`); istiod-lite's own
//! bootstrap tokens (`istiod-lite token`) keep working beside them.
//!
//! The caller's node comes from the token itself (bound tokens name it),
//! or else from the pod it names, as the model knows it. A token that
//! names neither has no node, so its holder cannot impersonate.

use std::sync::Arc;

use futures::future::BoxFuture;
use mesh_kube::token_review::TokenReviewer;
use tokio::sync::watch;

use super::token::{AuthError, Authenticator, Caller, TokenIssuer};
use crate::model::Model;

pub struct KubeAuthenticator {
    reviewer: TokenReviewer,
    bootstrap: Arc<TokenIssuer>,
    models: watch::Receiver<Arc<Model>>,
}

impl KubeAuthenticator {
    pub fn new(
        reviewer: TokenReviewer,
        bootstrap: Arc<TokenIssuer>,
        models: watch::Receiver<Arc<Model>>,
    ) -> Self {
        Self {
            reviewer,
            bootstrap,
            models,
        }
    }

    fn node_of_pod(&self, namespace: &str, pod: &str) -> Option<String> {
        let model = self.models.borrow();
        model
            .pods
            .get(&(namespace.to_string(), pod.to_string()))
            .and_then(|p| p.spec.node_name.clone())
    }
}

impl Authenticator for KubeAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move {
            if TokenIssuer::looks_like_bootstrap(token) {
                return self.bootstrap.verify(token);
            }
            let r = self
                .reviewer
                .review(token)
                .await
                .map_err(|e| AuthError::Kubernetes(e.to_string()))?;
            let node = r.node.clone().or_else(|| {
                r.pod
                    .as_deref()
                    .and_then(|pod| self.node_of_pod(&r.namespace, pod))
            });
            Ok(Caller {
                namespace: r.namespace,
                service_account: r.service_account,
                node,
            })
        })
    }
}

#[cfg(test)]
mod tests;

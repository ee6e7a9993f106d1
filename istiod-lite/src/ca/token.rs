//! Who is calling: bearer-token authentication for the CA (and xDS).
//!
//! Without a Kubernetes API server, istiod-lite issues its own bootstrap
//! tokens: HMAC-SHA256-signed claims naming the caller's namespace, service
//! account and node, with an expiry. The Kubernetes TokenReview authenticator
//! implements the same [`Authenticator`] trait.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use futures::future::BoxFuture;
use ring::hmac;

use super::authority::{CaError, write_private};

const PREFIX: &str = "v1";

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Caller {
    pub namespace: String,
    pub service_account: String,
    /// The node the caller runs on, when known; required for impersonation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token is malformed ({0}); issue a new one with `istiod-lite token`")]
    Malformed(&'static str),
    #[error(
        "token signature is invalid: it was not issued by this istiod-lite (was its state directory replaced?)"
    )]
    BadSignature,
    #[error("token expired {0} s ago; issue a new one with `istiod-lite token`")]
    Expired(u64),
    #[error("{0}")]
    Kubernetes(String),
}

/// Turns a bearer token into a [`Caller`].
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, AuthError>>;
}

/// Authenticates a gRPC call (CA or xDS) by its `authorization: Bearer`
/// metadata.
pub async fn authenticate(
    auth: &dyn Authenticator,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Caller, tonic::Status> {
    use tonic::Status;
    let header = metadata
        .get("authorization")
        .ok_or_else(|| {
            Status::unauthenticated(
                "no authorization header: send `authorization: Bearer <token>` (ztunnel reads AUTH_TOKEN)",
            )
        })?
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization header is not ASCII"))?;
    let token = header
        .strip_prefix("Bearer ")
        .ok_or_else(|| Status::unauthenticated("authorization header must be `Bearer <token>`"))?;
    auth.authenticate(token)
        .await
        .map_err(|e| Status::unauthenticated(format!("token rejected: {e}")))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    #[serde(flatten)]
    caller: Caller,
    /// Expiry, seconds since the epoch.
    exp: u64,
}

/// Issues and verifies bootstrap tokens with a key kept in the state directory.
pub struct TokenIssuer {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenIssuer")
    }
}

impl TokenIssuer {
    /// Loads `<state_dir>/token-signing.key`, creating it (mode 0600) if absent.
    pub fn load_or_generate(state_dir: &Path) -> Result<Self, CaError> {
        let path = state_dir.join("token-signing.key");
        let io = |source| CaError::Io {
            path: path.clone(),
            source,
        };
        if !path.exists() {
            std::fs::create_dir_all(state_dir).map_err(io)?;
            let secret: [u8; 32] = {
                use ring::rand::{SecureRandom, SystemRandom};
                let mut b = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut b)
                    .map_err(|_| CaError::BadFile {
                        path: path.clone(),
                        reason: "no system randomness".into(),
                    })?;
                b
            };
            write_private(&path, &B64.encode(secret))?;
        }
        let meta = std::fs::metadata(&path).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CaError::LooseKeyPermissions { path, mode });
        }
        let encoded = std::fs::read_to_string(&path).map_err(io)?;
        let secret = B64.decode(encoded.trim()).map_err(|e| CaError::BadFile {
            path: path.clone(),
            reason: format!("not base64: {e}"),
        })?;
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    pub fn issue(&self, caller: &Caller, ttl: Duration) -> String {
        let exp = now_secs() + ttl.as_secs();
        let claims = Claims {
            caller: caller.clone(),
            exp,
        };
        let body = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{PREFIX}.{body}.{}", B64.encode(tag.as_ref()))
    }

    /// Whether `token` has the shape of ours (`v1.<claims>.<signature>`)
    /// rather than of a Kubernetes JWT (`eyJ...`).
    pub fn looks_like_bootstrap(token: &str) -> bool {
        token.trim().starts_with(&format!("{PREFIX}."))
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let mut parts = token.trim().split('.');
        let (Some(PREFIX), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected v1.<claims>.<signature>"));
        };
        let sig = B64
            .decode(sig)
            .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
        hmac::verify(&self.key, body.as_bytes(), &sig).map_err(|_| AuthError::BadSignature)?;
        let claims: Claims = serde_json::from_slice(
            &B64.decode(body)
                .map_err(|_| AuthError::Malformed("claims are not base64url"))?,
        )
        .map_err(|_| AuthError::Malformed("claims are not the expected JSON"))?;
        let now = now_secs();
        if claims.exp <= now {
            return Err(AuthError::Expired(now - claims.exp));
        }
        Ok(claims.caller)
    }
}

impl Authenticator for TokenIssuer {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move { self.verify(token) })
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            namespace: "istio-system".into(),
            service_account: "ztunnel".into(),
            node: Some("node-a".into()),
        }
    }

    #[test]
    fn issues_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_generate(dir.path()).unwrap();
        let token = issuer.issue(&caller(), Duration::from_secs(60));
        assert_eq!(issuer.verify(&token).unwrap(), caller());
        // A second load reads the same key.
        let again = TokenIssuer::load_or_generate(dir.path()).unwrap();
        assert_eq!(again.verify(&token).unwrap(), caller());
    }

    #[test]
    fn rejects_tampering_expiry_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_generate(dir.path()).unwrap();
        let token = issuer.issue(&caller(), Duration::from_secs(60));
        let (head, sig) = token.rsplit_once('.').unwrap();
        let forged_body = B64.encode(
            serde_json::to_vec(&Claims {
                caller: Caller {
                    service_account: "admin".into(),
                    ..caller()
                },
                exp: now_secs() + 60,
            })
            .unwrap(),
        );
        let forged = format!("v1.{forged_body}.{sig}");
        assert_eq!(issuer.verify(&forged), Err(AuthError::BadSignature));
        assert!(issuer.verify(&format!("{head}.AAAA")).is_err());
        assert!(matches!(
            issuer.verify("nonsense"),
            Err(AuthError::Malformed(_))
        ));
        let expired = issuer.issue(&caller(), Duration::ZERO);
        assert!(matches!(
            issuer.verify(&expired),
            Err(AuthError::Expired(_))
        ));
        let other_dir = tempfile::tempdir().unwrap();
        let other = TokenIssuer::load_or_generate(other_dir.path()).unwrap();
        assert_eq!(other.verify(&token), Err(AuthError::BadSignature));
    }
}

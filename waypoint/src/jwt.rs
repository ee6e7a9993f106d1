//! Istio `RequestAuthentication` at the waypoint: finds JWTs in a request,
//! verifies them against the configured issuers' keys, and hands the
//! verified claims to [`crate::policy`] (`requestPrincipals`,
//! `request.auth.*`).
//!
//! Semantics follow Istio's (Envoy `jwt_authn` with missing tokens
//! allowed): a request without a token passes unauthenticated — only an
//! AuthorizationPolicy can require one; a request with a token that fails
//! any check is refused (the caller answers 401 `Jwt verification fails`).
//!
//! Validators are compiled once per configuration push
//! ([`JwtValidator::new`]): JWKS parsed, header names checked, so the
//! request path only looks up and verifies.
//!
//! Keys are always inline: istiod-lite fetches `jwksUri` and copies the key
//! set into `jwks` (as istiod does). A rule that arrives with only
//! `jwksUri` has not been fetched yet; it is kept with no keys, so its
//! tokens fail verification until the keys arrive: fail closed, never open.
//!
//! **Architecture Invariant:** this module knows nothing of policies,
//! routes or sockets; it turns headers into verified claims and header
//! edits.

use std::collections::HashSet;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mesh_model::waypoint::Named;
use mesh_model::{JwtRule, RequestAuthenticationSpec};
use serde_json::Value;

use crate::policy::JwtClaims;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;
/// Where a token is looked for when a rule names no location: the
/// `Authorization` header with this prefix, and this query parameter.
const DEFAULT_PREFIX: &str = "Bearer ";
const DEFAULT_PARAM: &str = "access_token";
/// Claims Istio always treats as space-delimited lists (`scope` = "a b").
const DEFAULT_SPACE_DELIMITED: [&str; 2] = ["scope", "permission"];

/// Why a request's token was refused. Every variant means 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("no RequestAuthentication rule accepts issuer {0:?} from where the token was found")]
    UnknownIssuer(String),
    #[error("token of issuer {issuer:?} rejected: {reason}")]
    Rejected { issuer: String, reason: String },
}

/// The JWT rules that apply to one destination (the Gateway's and the
/// Service's), compiled.
#[derive(Debug, Default)]
pub struct JwtValidator {
    providers: Vec<Provider>,
}

#[derive(Debug)]
struct Provider {
    /// `namespace/name` of the RequestAuthentication, for logs.
    source: String,
    issuer: String,
    /// Empty: `aud` is not checked.
    audiences: Vec<String>,
    keys: Vec<Key>,
    locations: Vec<Location>,
    forward_original_token: bool,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, String)>,
    space_delimited: Vec<String>,
}

struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, if it names one: tokens must use exactly it.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Where a rule looks for its token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

/// One token found and verified.
struct Accepted<'a> {
    provider: &'a Provider,
    location: &'a Location,
    /// The token's payload segment, base64url as sent.
    payload: String,
    claims: JwtClaims,
}

impl JwtValidator {
    /// Compiles every `jwtRules[]` entry of `specs`. An error names the
    /// RequestAuthentication and the rule; the whole push is then refused.
    pub fn new<'a>(
        specs: impl IntoIterator<Item = &'a Named<RequestAuthenticationSpec>>,
    ) -> Result<Self, String> {
        let mut providers = Vec::new();
        for spec in specs {
            let source = format!("{}/{}", spec.namespace, spec.name);
            for (i, rule) in spec.spec.jwt_rules.iter().enumerate() {
                let p = Provider::new(&source, rule).map_err(|e| {
                    format!(
                        "RequestAuthentication {source}: jwtRules[{i}] (issuer {:?}): {e}",
                        rule.issuer
                    )
                })?;
                providers.push(p);
            }
        }
        Ok(Self { providers })
    }

    /// No rule: nothing to validate.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Verifies the request's tokens without changing it. `Ok(None)`: no
    /// token at all; otherwise every token found must verify, and the
    /// claims are the first one's.
    pub fn validate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<JwtClaims>, JwtError> {
        Ok(self
            .check(headers, query)?
            .into_iter()
            .next()
            .map(|a| a.claims))
    }

    /// [`Self::validate`], then the rules' header edits on success: the
    /// token header is removed unless `forwardOriginalToken`;
    /// `outputClaimToHeaders` and `outputPayloadToHeader` are set.
    ///
    /// Stricter than Envoy: every output header of every rule is first
    /// removed from the request, so a client cannot forge one by sending a
    /// token without the claim (or no token at all).
    pub fn authenticate(
        &self,
        headers: &mut HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<JwtClaims>, JwtError> {
        let accepted = self.check(headers, query)?;
        for p in &self.providers {
            for name in p.output_headers() {
                headers.remove(name);
            }
        }
        for a in &accepted {
            a.provider.apply(a, headers);
        }
        Ok(accepted.into_iter().next().map(|a| a.claims))
    }

    fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Vec<Accepted<'_>>, JwtError> {
        // Each location is read once, even if several rules name it.
        let mut found: Vec<(&Location, String)> = Vec::new();
        for loc in self.providers.iter().flat_map(|p| &p.locations) {
            if found.iter().any(|(l, _)| *l == loc) {
                continue;
            }
            if let Some(token) = loc.extract(headers, query) {
                found.push((loc, token));
            }
        }
        found
            .into_iter()
            .map(|(loc, token)| self.verify(loc, &token))
            .collect()
    }

    fn verify<'a>(&'a self, location: &'a Location, token: &str) -> Result<Accepted<'a>, JwtError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
        let payload = token
            .split('.')
            .nth(1)
            .ok_or_else(|| JwtError::Malformed("no payload".into()))?;
        // Unverified: only to pick the rule; the chosen rule verifies it.
        let unverified: Value = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| JwtError::Malformed("payload is not base64url JSON".into()))?;
        let issuer = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| JwtError::Malformed("no `iss` claim".into()))?;
        let mut candidates = self
            .providers
            .iter()
            .filter(|p| p.issuer == issuer && p.locations.contains(location))
            .peekable();
        if candidates.peek().is_none() {
            return Err(JwtError::UnknownIssuer(issuer.to_string()));
        }
        let mut reason = String::new();
        for provider in candidates {
            match provider.verify(token, &header) {
                Ok(claims) => {
                    return Ok(Accepted {
                        provider,
                        location,
                        payload: payload.to_string(),
                        claims,
                    });
                }
                Err(e) => reason = e,
            }
        }
        Err(JwtError::Rejected {
            issuer: issuer.to_string(),
            reason,
        })
    }
}

impl Provider {
    fn new(source: &str, rule: &JwtRule) -> Result<Self, String> {
        if rule.issuer.is_empty() {
            return Err("issuer is empty".into());
        }
        let keys = match (&rule.jwks, &rule.jwks_uri) {
            (Some(jwks), _) => parse_jwks(jwks)?,
            (None, Some(uri)) => {
                tracing::warn!(
                    request_authentication = %source, issuer = %rule.issuer, jwks_uri = %uri,
                    "the control plane has not fetched this key set yet; tokens of this \
                     issuer fail verification until it has (see istiod-lite's log)"
                );
                Vec::new()
            }
            (None, None) => return Err("neither jwks nor jwksUri is set".into()),
        };
        let mut locations = Vec::new();
        for h in &rule.from_headers {
            locations.push(Location::Header {
                name: header_name(&h.name)?,
                prefix: h.prefix.clone().unwrap_or_default(),
            });
        }
        locations.extend(rule.from_params.iter().cloned().map(Location::Param));
        locations.extend(rule.from_cookies.iter().cloned().map(Location::Cookie));
        if locations.is_empty() {
            locations = vec![
                Location::Header {
                    name: header::AUTHORIZATION,
                    prefix: DEFAULT_PREFIX.into(),
                },
                Location::Param(DEFAULT_PARAM.into()),
            ];
        }
        Ok(Self {
            source: source.to_string(),
            issuer: rule.issuer.clone(),
            audiences: rule.audiences.clone(),
            keys,
            locations,
            forward_original_token: rule.forward_original_token,
            payload_header: rule
                .output_payload_to_header
                .as_deref()
                .map(header_name)
                .transpose()?,
            claim_headers: rule
                .output_claim_to_headers
                .iter()
                .map(|c| Ok((header_name(&c.header)?, c.claim.clone())))
                .collect::<Result<_, String>>()?,
            space_delimited: DEFAULT_SPACE_DELIMITED
                .iter()
                .map(|s| s.to_string())
                .chain(rule.space_delimited_claims.iter().cloned())
                .collect(),
        })
    }

    /// Signature, `iss`, `exp`/`nbf` and `aud`.
    fn verify(&self, token: &str, header: &jsonwebtoken::Header) -> Result<JwtClaims, String> {
        if self.keys.is_empty() {
            return Err(format!("no keys for issuer (from {})", self.source));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        // Envoy requires no claim to be present; `exp`/`nbf` are checked
        // when they are.
        validation.required_spec_claims = HashSet::new();
        validation.validate_nbf = true;
        // Checked below: the library lets a token without `aud` through.
        validation.validate_aud = false;
        validation.set_issuer(&[&self.issuer]);
        let keys = self.keys.iter().filter(|k| match &header.kid {
            Some(kid) => k.kid.as_deref() == Some(kid.as_str()),
            None => true,
        });
        let mut reason = match &header.kid {
            Some(kid) => format!("no key with kid {kid:?}"),
            None => "no key".to_string(),
        };
        for k in keys {
            if k.alg.is_some_and(|a| a != header.alg) {
                reason = format!("key does not allow {:?}", header.alg);
                continue;
            }
            match jsonwebtoken::decode::<Value>(token, &k.key, &validation) {
                Ok(data) => {
                    let claims = self.claims(data.claims);
                    if !self.audiences.is_empty()
                        && !claims.audiences.iter().any(|a| self.audiences.contains(a))
                    {
                        return Err(format!("audiences {:?} not allowed", claims.audiences));
                    }
                    return Ok(claims);
                }
                Err(e) => reason = e.to_string(),
            }
        }
        Err(reason)
    }

    fn claims(&self, mut payload: Value) -> JwtClaims {
        if let Some(obj) = payload.as_object_mut() {
            for name in &self.space_delimited {
                if let Some(Value::String(s)) = obj.get(name)
                    && s.contains(' ')
                {
                    let items = s.split_whitespace().map(Value::from).collect();
                    obj.insert(name.clone(), Value::Array(items));
                }
            }
        }
        let text = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_string);
        let audiences = match payload.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        JwtClaims {
            issuer: text("iss").unwrap_or_default(),
            subject: text("sub").unwrap_or_default(),
            audiences,
            presenter: text("azp"),
            claims: payload,
        }
    }

    fn output_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.payload_header
            .iter()
            .chain(self.claim_headers.iter().map(|(h, _)| h))
    }

    fn apply(&self, accepted: &Accepted<'_>, headers: &mut HeaderMap) {
        if !self.forward_original_token
            && let Location::Header { name, .. } = accepted.location
        {
            headers.remove(name);
        }
        if let Some(name) = &self.payload_header
            && let Ok(v) = HeaderValue::from_str(&accepted.payload)
        {
            headers.insert(name.clone(), v);
        }
        for (name, claim) in &self.claim_headers {
            if let Some(v) = claim_header_value(&accepted.claims.claims, claim) {
                headers.insert(name.clone(), v);
            }
        }
    }
}

impl Location {
    fn extract(&self, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
        let token = match self {
            Location::Header { name, prefix } => headers
                .get(name)?
                .to_str()
                .ok()?
                .strip_prefix(prefix.as_str())?
                .trim()
                .to_string(),
            Location::Param(param) => query?
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k == param)?
                .1
                .to_string(),
            Location::Cookie(cookie) => headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| k == cookie)?
                .1
                .to_string(),
        };
        (!token.is_empty()).then_some(token)
    }
}

/// A claim (a top-level name, else a `.`-separated path) as a header
/// value: strings as they are, lists joined by commas, other scalars as
/// JSON text; objects are not output.
fn claim_header_value(claims: &Value, claim: &str) -> Option<HeaderValue> {
    let value = claims
        .get(claim)
        .or_else(|| claim.split('.').try_fold(claims, |v, k| v.get(k)))?;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) | Value::Null => return None,
        other => other.to_string(),
    };
    HeaderValue::from_str(&text).ok()
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))
}

/// The signing keys of a JWK Set; encryption keys are skipped.
fn parse_jwks(jwks: &str) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_str(jwks).map_err(|e| format!("jwks: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            Some(a) => match Algorithm::from_str(&a.to_string()) {
                Ok(a) => Some(a),
                // An encryption algorithm: not a signing key.
                Err(_) => continue,
            },
            None => None,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
            format!(
                "jwks: key {:?}: {e}",
                jwk.common.key_id.as_deref().unwrap_or("")
            )
        })?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err("jwks has no signing key".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;

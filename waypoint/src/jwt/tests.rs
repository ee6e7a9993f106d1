use std::net::IpAddr;

use http::HeaderMap;
use jsonwebtoken::{EncodingKey, Header};
use mesh_model::AuthorizationPolicySpec;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use super::*;
use crate::policy::{HttpAttributes, Policies, RequestAttributes};

const ISS: &str = "https://issuer.example";

/// A P-256 key pair made for the test: signs ES256 tokens, and is published
/// as a JWK with `kid`.
struct Signer {
    kid: &'static str,
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn new(kid: &'static str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Self {
            kid,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }

    fn sign(&self, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }

    fn jwks(&self) -> String {
        json!({ "keys": [self.jwk] }).to_string()
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(sub: &str) -> Value {
    json!({ "iss": ISS, "sub": sub, "aud": "orders", "exp": now() + 600, "azp": "web" })
}

/// A RequestAuthentication with one rule: `rule` merged over issuer and
/// inline JWKS.
fn request_authn(signer: &Signer, rule: Value) -> Named<RequestAuthenticationSpec> {
    let mut r = json!({ "issuer": ISS, "jwks": signer.jwks() });
    r.as_object_mut()
        .unwrap()
        .extend(rule.as_object().unwrap().clone());
    Named {
        namespace: "default".into(),
        name: "jwt".into(),
        spec: serde_json::from_value(json!({ "jwtRules": [r] })).unwrap(),
    }
}

fn validator(signer: &Signer, rule: Value) -> JwtValidator {
    JwtValidator::new(&[request_authn(signer, rule)]).unwrap()
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

#[test]
fn valid_token_yields_claims() {
    let s = Signer::new("k1");
    let v = validator(&s, json!({ "audiences": ["orders"] }));
    let got = v
        .validate(&bearer(&s.sign(claims("alice"))), None)
        .unwrap()
        .unwrap();
    assert_eq!(got.issuer, ISS);
    assert_eq!(got.subject, "alice");
    assert_eq!(got.audiences, vec!["orders".to_string()]);
    assert_eq!(got.presenter.as_deref(), Some("web"));
    assert_eq!(got.claims["sub"], "alice");
}

#[test]
fn no_token_is_not_an_error() {
    let s = Signer::new("k1");
    let v = validator(&s, json!({}));
    assert_eq!(v.validate(&HeaderMap::new(), None), Ok(None));
    // Another scheme in Authorization is no bearer token.
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic Zm9vOmJhcg=="),
    );
    assert_eq!(v.validate(&h, Some("a=b")), Ok(None));
}

#[test]
fn expired_token_is_rejected() {
    let s = Signer::new("k1");
    let v = validator(&s, json!({}));
    let mut c = claims("alice");
    c["exp"] = json!(now() - 3600);
    let err = v.validate(&bearer(&s.sign(c)), None).unwrap_err();
    assert!(matches!(err, JwtError::Rejected { .. }), "{err}");
    // Within the leeway it still passes.
    let mut c = claims("alice");
    c["exp"] = json!(now() - 10);
    assert!(v.validate(&bearer(&s.sign(c)), None).is_ok());
}

#[test]
fn not_yet_valid_token_is_rejected() {
    let s = Signer::new("k1");
    let v = validator(&s, json!({}));
    let mut c = claims("alice");
    c["nbf"] = json!(now() + 3600);
    assert!(v.validate(&bearer(&s.sign(c)), None).is_err());
}

#[test]
fn audience_must_be_listed() {
    let s = Signer::new("k1");
    let v = validator(&s, json!({ "audiences": ["billing"] }));
    assert!(v.validate(&bearer(&s.sign(claims("alice"))), None).is_err());
    // No `aud` at all does not pass a rule with audiences either.
    let mut c = claims("alice");
    c.as_object_mut().unwrap().remove("aud");
    assert!(v.validate(&bearer(&s.sign(c)), None).is_err());
    // A list with one allowed audience does.
    let mut c = claims("alice");
    c["aud"] = json!(["x", "billing"]);
    assert!(v.validate(&bearer(&s.sign(c)), None).is_ok());
}

#[test]
fn signature_of_another_key_is_rejected() {
    let s = Signer::new("k1");
    let v = validator(&s, json!({}));
    // Same kid, different key.
    let forger = Signer::new("k1");
    assert!(
        v.validate(&bearer(&forger.sign(claims("alice"))), None)
            .is_err()
    );
    // Unknown kid.
    let other = Signer::new("k2");
    assert!(
        v.validate(&bearer(&other.sign(claims("alice"))), None)
            .is_err()
    );
}

#[test]
fn unknown_issuer_is_rejected() {
    let s = Signer::new("k1");
    let v = validator(&s, json!({}));
    let mut c = claims("alice");
    c["iss"] = json!("https://elsewhere.example");
    assert_eq!(
        v.validate(&bearer(&s.sign(c)), None),
        Err(JwtError::UnknownIssuer("https://elsewhere.example".into()))
    );
}

#[test]
fn garbage_token_is_rejected() {
    let s = Signer::new("k1");
    let v = validator(&s, json!({}));
    assert!(matches!(
        v.validate(&bearer("not.a.jwt"), None),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn custom_header_and_prefix() {
    let s = Signer::new("k1");
    let v = validator(
        &s,
        json!({ "fromHeaders": [{ "name": "X-Jwt", "prefix": "Token " }] }),
    );
    let token = s.sign(claims("alice"));
    let mut h = HeaderMap::new();
    h.insert(
        "x-jwt",
        HeaderValue::from_str(&format!("Token {token}")).unwrap(),
    );
    assert_eq!(v.validate(&h, None).unwrap().unwrap().subject, "alice");
    // The default location is no longer read.
    assert_eq!(v.validate(&bearer("garbage"), None), Ok(None));
}

#[test]
fn token_from_query_params() {
    let s = Signer::new("k1");
    let token = s.sign(claims("alice"));
    let v = validator(&s, json!({ "fromParams": ["my_token"] }));
    let q = format!("a=1&my_token={token}");
    assert_eq!(
        v.validate(&HeaderMap::new(), Some(&q))
            .unwrap()
            .unwrap()
            .subject,
        "alice"
    );
    // Default: `access_token`.
    let v = validator(&s, json!({}));
    let q = format!("access_token={token}");
    assert!(v.validate(&HeaderMap::new(), Some(&q)).unwrap().is_some());
}

#[test]
fn token_from_cookies() {
    let s = Signer::new("k1");
    let token = s.sign(claims("alice"));
    let v = validator(&s, json!({ "fromCookies": ["session"] }));
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("a=b; session={token}")).unwrap(),
    );
    assert!(v.validate(&h, None).unwrap().is_some());
}

#[test]
fn token_header_is_stripped_unless_forwarded() {
    let s = Signer::new("k1");
    let token = s.sign(claims("alice"));
    let v = validator(&s, json!({}));
    let mut h = bearer(&token);
    assert!(v.authenticate(&mut h, None).unwrap().is_some());
    assert!(!h.contains_key(header::AUTHORIZATION));

    let v = validator(&s, json!({ "forwardOriginalToken": true }));
    let mut h = bearer(&token);
    assert!(v.authenticate(&mut h, None).unwrap().is_some());
    assert!(h.contains_key(header::AUTHORIZATION));
}

#[test]
fn claims_and_payload_are_output_to_headers() {
    let s = Signer::new("k1");
    let mut c = claims("alice");
    c["groups"] = json!(["dev", "ops"]);
    let token = s.sign(c);
    let v = validator(
        &s,
        json!({
            "outputClaimToHeaders": [
                { "header": "x-sub", "claim": "sub" },
                { "header": "x-groups", "claim": "groups" },
                { "header": "x-missing", "claim": "nope" },
            ],
            "outputPayloadToHeader": "x-jwt-payload",
        }),
    );
    let mut h = bearer(&token);
    // A client cannot forge an output header.
    h.insert("x-missing", HeaderValue::from_static("forged"));
    v.authenticate(&mut h, None).unwrap().unwrap();
    assert_eq!(h["x-sub"], "alice");
    assert_eq!(h["x-groups"], "dev,ops");
    assert!(!h.contains_key("x-missing"));
    let payload = URL_SAFE_NO_PAD
        .decode(h["x-jwt-payload"].as_bytes())
        .unwrap();
    let payload: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(payload["sub"], "alice");
}

#[test]
fn bad_token_leaves_headers_untouched() {
    let s = Signer::new("k1");
    let v = validator(&s, json!({}));
    let mut h = bearer("not.a.jwt");
    assert!(v.authenticate(&mut h, None).is_err());
    assert!(h.contains_key(header::AUTHORIZATION));
}

#[test]
fn space_delimited_claims_become_lists() {
    let s = Signer::new("k1");
    let mut c = claims("alice");
    c["scope"] = json!("read write");
    c["roles"] = json!("a b");
    let v = validator(&s, json!({ "spaceDelimitedClaims": ["roles"] }));
    let got = v.validate(&bearer(&s.sign(c)), None).unwrap().unwrap();
    assert_eq!(got.claims["scope"], json!(["read", "write"]));
    assert_eq!(got.claims["roles"], json!(["a", "b"]));
}

#[test]
fn jwks_uri_only_fails_closed() {
    let s = Signer::new("k1");
    let ra = Named {
        namespace: "default".into(),
        name: "remote".into(),
        spec: serde_json::from_value(json!({
            "jwtRules": [{ "issuer": ISS, "jwksUri": "https://issuer.example/jwks" }]
        }))
        .unwrap(),
    };
    let v = JwtValidator::new(&[ra]).unwrap();
    assert!(v.validate(&bearer(&s.sign(claims("alice"))), None).is_err());
    assert_eq!(v.validate(&HeaderMap::new(), None), Ok(None));
}

#[test]
fn invalid_configuration_names_the_request_authentication() {
    let s = Signer::new("k1");
    let bad = request_authn(&s, json!({ "jwks": "{not json" }));
    let err = JwtValidator::new(&[bad]).unwrap_err();
    assert!(err.contains("RequestAuthentication default/jwt"), "{err}");
    let bad = request_authn(&s, json!({ "fromHeaders": [{ "name": "bad header" }] }));
    assert!(JwtValidator::new(&[bad]).is_err());
}

#[test]
fn rules_of_several_request_authentications_combine() {
    let a = Signer::new("a");
    let b = Signer::new("b");
    let mut rb = request_authn(&b, json!({ "issuer": "https://b.example" }));
    rb.name = "b".into();
    let v = JwtValidator::new(&[request_authn(&a, json!({})), rb]).unwrap();
    assert!(v.validate(&bearer(&a.sign(claims("alice"))), None).is_ok());
    let mut c = claims("bob");
    c["iss"] = json!("https://b.example");
    assert_eq!(
        v.validate(&bearer(&b.sign(c)), None)
            .unwrap()
            .unwrap()
            .issuer,
        "https://b.example"
    );
}

#[test]
fn request_principals_policy_sees_verified_claims() {
    let s = Signer::new("k1");
    let v = validator(&s, json!({}));
    let policy: Named<AuthorizationPolicySpec> = Named {
        namespace: "default".into(),
        name: "require-jwt".into(),
        spec: serde_json::from_value(json!({
            "action": "ALLOW",
            "rules": [{ "from": [{ "source": { "requestPrincipals": [format!("{ISS}/alice")] } }] }],
        }))
        .unwrap(),
    };
    let policies = Policies::new(&[policy]);
    let decide = |headers: &HeaderMap| {
        let jwt = v.validate(headers, None).unwrap();
        let attrs = RequestAttributes {
            source_ip: IpAddr::from([10, 0, 0, 1]),
            source_principal: None,
            source_namespace: None,
            source_service_account: None,
            destination_ip: IpAddr::from([10, 0, 0, 2]),
            destination_port: 8080,
            http: Some(HttpAttributes {
                host: "orders",
                method: "GET",
                path: "/",
                headers,
                jwt: jwt.as_ref(),
            }),
        };
        policies.evaluate(&attrs).is_allowed()
    };
    assert!(decide(&bearer(&s.sign(claims("alice")))));
    assert!(!decide(&bearer(&s.sign(claims("mallory")))));
    assert!(!decide(&HeaderMap::new()));
}

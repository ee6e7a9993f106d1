//! The CustomResourceDefinitions of the `security.istio.io` kinds the mesh
//! reads, generated from the same Rust types that parse them, so the API
//! server accepts exactly what istiod-lite understands.
//!
//! `deploy/base/crds/security.istio.io.yaml` is this module's output, committed.
//! A test fails when the two differ; `UPDATE_CRDS=1 cargo test -p mesh-kube
//! crds` (or `cargo xtask crds`) writes the file again.
//!
//! The Gateway API CRDs are not ours: the install takes the standard ones
//! (see `deploy/README.md`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::schema::StructuralSchemaRewriter;
use mesh_model::{AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

/// Where the generated CRDs are committed, from the workspace root.
pub const CRD_FILE: &str = "deploy/base/crds/security.istio.io.yaml";

/// The spec's schema, as Kubernetes wants it: OpenAPI v3, every subschema
/// inline (no `$ref`), structural.
fn spec_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(StructuralSchemaRewriter)
        .into_generator();
    let mut schema =
        serde_json::to_value(generator.into_root_schema_for::<T>()).expect("a schema serializes");
    if let Value::Object(m) = &mut schema {
        m.remove("title");
        m.remove("$schema");
    }
    structural(&mut schema);
    schema
}

/// What JSON Schema allows and a CRD schema does not: `patternProperties`
/// (a map keyed by port number) becomes `additionalProperties`; defaults
/// (from `#[serde(default)]`, which the parser applies anyway) and `null`
/// among enum values go.
fn structural(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("default");
            if let Some(Value::Object(patterns)) = m.remove("patternProperties")
                && let Some((_, item)) = patterns.into_iter().next()
            {
                m.insert("additionalProperties".into(), item);
            }
            if m.get("additionalProperties") == Some(&Value::Bool(false)) {
                m.remove("additionalProperties");
            }
            if let Some(Value::Array(values)) = m.get_mut("enum") {
                values.retain(|x| !x.is_null());
            }
            m.values_mut().for_each(structural);
        }
        Value::Array(items) => items.iter_mut().for_each(structural),
        _ => {}
    }
}

struct Crd {
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    spec: Value,
    /// `kubectl get` columns beside NAME and AGE.
    columns: Value,
}

fn crd(c: Crd) -> Value {
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": c.spec,
            // Written by istiod-lite (conditions); kept as the API server gets it.
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
    });
    let version = |name: &str, storage: bool| {
        json!({
            "name": name,
            "served": true,
            "storage": storage,
            "schema": {"openAPIV3Schema": schema},
            "subresources": {"status": {}},
            "additionalPrinterColumns": c.columns,
        })
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.security.istio.io", c.plural),
            "labels": {"app.kubernetes.io/part-of": "ambient-mesh"},
        },
        "spec": {
            "group": "security.istio.io",
            "scope": "Namespaced",
            "names": {
                "kind": c.kind,
                "listKind": format!("{}List", c.kind),
                "plural": c.plural,
                "singular": c.singular,
                "shortNames": c.short_names,
                "categories": ["istio-io", "security-istio-io"],
            },
            // v1 is stored; v1beta1 is the same schema, still served for
            // YAML written against it.
            "versions": [version("v1", true), version("v1beta1", false)],
        },
    })
}

fn age() -> Value {
    json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
}

/// AuthorizationPolicy, PeerAuthentication and RequestAuthentication.
pub fn security_crds() -> Vec<Value> {
    vec![
        crd(Crd {
            kind: "AuthorizationPolicy",
            plural: "authorizationpolicies",
            singular: "authorizationpolicy",
            short_names: &["ap"],
            spec: spec_schema::<AuthorizationPolicySpec>(),
            columns: json!([
                {"name": "Action", "type": "string", "jsonPath": ".spec.action", "description": "ALLOW, DENY, AUDIT or CUSTOM."},
                age(),
            ]),
        }),
        crd(Crd {
            kind: "PeerAuthentication",
            plural: "peerauthentications",
            singular: "peerauthentication",
            short_names: &["pa"],
            spec: spec_schema::<PeerAuthenticationSpec>(),
            columns: json!([
                {"name": "Mode", "type": "string", "jsonPath": ".spec.mtls.mode", "description": "The mutual TLS mode."},
                age(),
            ]),
        }),
        crd(Crd {
            kind: "RequestAuthentication",
            plural: "requestauthentications",
            singular: "requestauthentication",
            short_names: &["ra"],
            spec: spec_schema::<RequestAuthenticationSpec>(),
            columns: json!([age()]),
        }),
    ]
}

/// The committed file's text: a header, then one YAML document per CRD.
pub fn render() -> String {
    let mut out = String::from(
        "# Generated from the mesh-model types by mesh-kube (crates/kube/src/crds.rs).\n\
         # Do not edit: run `cargo xtask crds` after changing the types.\n",
    );
    for c in security_crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&c).expect("a CRD serializes"));
    }
    out
}

/// Every CRD as the typed Kubernetes object (fails if one is not one).
pub fn typed() -> Result<Vec<CustomResourceDefinition>, serde_json::Error> {
    security_crds()
        .into_iter()
        .map(serde_json::from_value)
        .collect()
}

#[cfg(test)]
mod tests;

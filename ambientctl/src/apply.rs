//! `ambientctl apply -f FILE|-`: `kubectl apply` for the local mesh. Every
//! document is checked as istiod-lite would read it before anything is
//! written, so a bad file changes nothing; then each object is stored
//! (replacing one of the same kind, namespace and name) and reported as
//! kubectl does: `authorizationpolicy.security.istio.io/db-from-web created`.

use std::fmt::Write as _;

use mesh_model::{Parsed, parse_object};
use serde::Deserialize;
use serde_yaml::Value;

use crate::store::{ManifestStore, Objects, StoreError, str_at};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{source_name}: document {index} is not valid YAML: {error}")]
    Yaml {
        source_name: String,
        index: usize,
        error: serde_yaml::Error,
    },
    #[error("{source_name}: document {index}: {problem} (nothing was applied)")]
    Invalid {
        source_name: String,
        index: usize,
        problem: String,
    },
    #[error("{0}: no objects in it")]
    Empty(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies the documents of `text` (read from `source_name`).
pub fn apply(store: &ManifestStore, source_name: &str, text: &str) -> Result<String, ApplyError> {
    let mut objects = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = Value::deserialize(doc).map_err(|error| ApplyError::Yaml {
            source_name: source_name.into(),
            index,
            error,
        })?;
        if value.is_null() {
            continue;
        }
        let invalid = |problem: String| ApplyError::Invalid {
            source_name: source_name.into(),
            index,
            problem,
        };
        match parse_object(value.clone()) {
            Ok(Parsed::Object(..)) => objects.push(value),
            Ok(Parsed::Ignored { api_version, kind }) => {
                return Err(invalid(format!(
                    "the local mesh does not run {kind} ({api_version}) objects; it reads \
                     Namespace, Pod, Service, AuthorizationPolicy, PeerAuthentication, \
                     RequestAuthentication, Gateway, HTTPRoute and GRPCRoute"
                )));
            }
            Err(e) => return Err(invalid(e.to_string())),
        }
    }
    if objects.is_empty() {
        return Err(ApplyError::Empty(source_name.into()));
    }
    let mut out = String::new();
    for object in objects {
        let kind = str_at(&object, &["kind"]).unwrap_or_default().to_string();
        let api_version = str_at(&object, &["apiVersion"]).unwrap_or_default();
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let name = str_at(&object, &["metadata", "name"])
            .unwrap_or_default()
            .to_string();
        let namespace = str_at(&object, &["metadata", "namespace"]).unwrap_or("default");
        let before = store.get(&kind, namespace, &name)?;
        let verb = match &before {
            None => "created",
            Some(doc) if without_status(&doc.object) == without_status(&object) => "unchanged",
            Some(_) => "configured",
        };
        let resource = match group {
            "" => kind.to_lowercase(),
            g => format!("{}.{g}", kind.to_lowercase()),
        };
        if verb != "unchanged" {
            let mut object = object;
            // Status belongs to controllers; apply keeps what they wrote.
            if let (Some(before), Value::Mapping(m)) = (&before, &mut object)
                && let Some(status) = before.object.get("status")
            {
                m.insert("status".into(), status.clone());
            }
            store.apply(object)?;
        }
        let _ = writeln!(out, "{resource}/{name} {verb}");
    }
    Ok(out)
}

fn without_status(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Mapping(m) = &mut v {
        m.remove("status");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: db-from-web
  namespace: demo
spec:
  selector:
    matchLabels:
      app: db
  action: ALLOW
";

    #[test]
    fn objects_are_created_configured_or_unchanged_as_kubectl_says() {
        let dir = tempfile::tempdir().unwrap();
        let store = ManifestStore::open(dir.path()).unwrap();
        assert_eq!(
            apply(&store, "-", POLICY).unwrap(),
            "authorizationpolicy.security.istio.io/db-from-web created\n"
        );
        assert_eq!(
            apply(&store, "-", POLICY).unwrap(),
            "authorizationpolicy.security.istio.io/db-from-web unchanged\n"
        );
        let deny = POLICY.replace("ALLOW", "DENY");
        let two = format!("{deny}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: demo}}\n");
        assert_eq!(
            apply(&store, "p.yaml", &two).unwrap(),
            "authorizationpolicy.security.istio.io/db-from-web configured\nnamespace/demo created\n"
        );
        let stored = store
            .get("AuthorizationPolicy", "demo", "db-from-web")
            .unwrap()
            .unwrap();
        assert_eq!(str_at(&stored.object, &["spec", "action"]), Some("DENY"));
    }

    #[test]
    fn a_bad_document_names_itself_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = ManifestStore::open(dir.path()).unwrap();
        let bad = format!(
            "{POLICY}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: x}}\nspec: {{action: MAYBE}}\n"
        );
        let e = apply(&store, "p.yaml", &bad).unwrap_err().to_string();
        assert!(e.starts_with("p.yaml: document 2:"), "{e}");
        assert!(e.contains("MAYBE"), "{e}");
        assert!(store.list("AuthorizationPolicy").unwrap().is_empty());

        let e = apply(
            &store,
            "-",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not run Deployment"), "{e}");
        let e = apply(&store, "-", "a: [").unwrap_err().to_string();
        assert!(e.contains("not valid YAML"), "{e}");
        assert!(
            apply(&store, "-", "")
                .unwrap_err()
                .to_string()
                .contains("no objects")
        );
    }
}

//! `ambientctl namespace enroll|release NS`: the `istio.io/dataplane-mode`
//! label that puts a namespace's pods in the ambient mesh.

use crate::store::{Objects, StoreError};
use crate::waypoint::{DATAPLANE_MODE, set_label};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Labels `name` `istio.io/dataplane-mode=ambient`, creating the Namespace
/// when it is not there yet.
pub fn enroll(store: &dyn Objects, name: &str) -> Result<String, NamespaceError> {
    let mut object = match store.get("Namespace", "", name)? {
        Some(doc) => doc.object,
        None => {
            let mut metadata = serde_yaml::Mapping::new();
            metadata.insert("name".into(), name.into());
            let mut ns = serde_yaml::Mapping::new();
            ns.insert("apiVersion".into(), "v1".into());
            ns.insert("kind".into(), "Namespace".into());
            ns.insert("metadata".into(), metadata.into());
            ns.into()
        }
    };
    set_label(&mut object, DATAPLANE_MODE, Some("ambient"));
    store.apply(object)?;
    Ok(format!(
        "✅ namespace {name} labeled with \"{DATAPLANE_MODE}: ambient\"\n"
    ))
}

/// Removes the label: the namespace's pods leave the mesh.
pub fn release(store: &dyn Objects, name: &str) -> Result<String, NamespaceError> {
    let doc = store
        .get("Namespace", "", name)?
        .ok_or_else(|| NamespaceError::NotFound(name.to_string()))?;
    let mut object = doc.object;
    set_label(&mut object, DATAPLANE_MODE, None);
    store.apply(object)?;
    Ok(format!(
        "✅ namespace {name} released from the ambient mesh\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ManifestStore;

    #[test]
    fn enroll_creates_or_labels_and_release_removes_the_label() {
        let dir = tempfile::tempdir().unwrap();
        let store = ManifestStore::open(dir.path()).unwrap();
        assert_eq!(
            enroll(&store, "shop").unwrap(),
            "✅ namespace shop labeled with \"istio.io/dataplane-mode: ambient\"\n"
        );
        let ns = store.get("Namespace", "", "shop").unwrap().unwrap();
        assert_eq!(ns.label(DATAPLANE_MODE), Some("ambient"));
        // What was written is a Namespace our control plane reads.
        let text = std::fs::read_to_string(&ns.file).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert!(mesh_model::parse_object(doc).is_ok());

        release(&store, "shop").unwrap();
        let ns = store.get("Namespace", "", "shop").unwrap().unwrap();
        assert_eq!(ns.label(DATAPLANE_MODE), None);
        assert!(matches!(
            release(&store, "nope"),
            Err(NamespaceError::NotFound(_))
        ));
    }
}

use super::*;

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(CRD_FILE)
}

/// The drift check: the committed CRDs are what the types give.
#[test]
fn the_committed_crds_are_generated_from_the_types() {
    let fresh = render();
    let path = committed_path();
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is out of date with the mesh-model types: run `cargo xtask crds` and commit it",
        CRD_FILE
    );
}

#[test]
fn the_crds_are_kubernetes_objects_with_structural_inline_schemas() {
    let typed = typed().expect("CustomResourceDefinitions");
    let names: Vec<&str> = typed
        .iter()
        .map(|c| c.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "authorizationpolicies.security.istio.io",
            "peerauthentications.security.istio.io",
            "requestauthentications.security.istio.io"
        ]
    );
    for c in &typed {
        let stored: Vec<&str> = c
            .spec
            .versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(stored, ["v1"]);
    }
    let text = render();
    assert!(
        !text.contains("$ref"),
        "Kubernetes wants every schema inline"
    );
    for forbidden in [
        "$schema",
        "patternProperties",
        "additionalProperties: false",
        "default:",
        "- null",
    ] {
        assert!(
            !text.contains(forbidden),
            "{forbidden} is not allowed in a CRD schema"
        );
    }

    let ap = &security_crds()[0];
    let spec = &ap["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let actions = &spec["properties"]["action"]["enum"];
    for a in ["ALLOW", "DENY", "AUDIT", "CUSTOM"] {
        assert!(
            actions.as_array().unwrap().iter().any(|v| v == a),
            "{actions}"
        );
    }
    let source = &spec["properties"]["rules"]["items"]["properties"]["from"]["items"]["properties"]
        ["source"]["properties"];
    assert_eq!(source["principals"]["type"], "array", "{source}");
    assert_eq!(source["ipBlocks"]["items"]["type"], "string");
    assert_eq!(
        spec["properties"]["selector"]["properties"]["matchLabels"]["type"],
        "object"
    );
}

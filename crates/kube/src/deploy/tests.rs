use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value as Json;

use super::*;

/// Every YAML file under `deploy/`, by path under it.
fn files_on_disk(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if e.path().is_dir() {
            files_on_disk(&e.path(), &path, out);
        } else if name.ends_with(".yaml") {
            out.push(path);
        }
    }
}

#[test]
fn every_manifest_of_deploy_is_built_in() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut on_disk = Vec::new();
    files_on_disk(&root, "", &mut on_disk);
    on_disk.sort();
    let mut built_in: Vec<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
    built_in.sort();
    assert_eq!(on_disk, built_in, "add new deploy/ files to deploy::FILES");
}

/// Drops nulls, so that an object and its typed round trip compare.
fn without_nulls(v: Json) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Json::Array(a) => Json::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// Deserializes into `T` and back: a field `T` does not know (a typo) is
/// lost on the way and shows as a difference.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    object: &Json,
) -> Result<(), String> {
    let typed: T = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    let back = without_nulls(serde_json::to_value(&typed).unwrap());
    if back == without_nulls(object.clone()) {
        Ok(())
    } else {
        Err(format!("fields were lost:\n{}\nvs\n{back}", object))
    }
}

/// `kind/name` of an object, after checking it against its Kubernetes type.
fn typed(o: &Value) -> String {
    let json: Json = serde_json::to_value(o).unwrap();
    let kind = json["kind"].as_str().unwrap().to_string();
    let name = json["metadata"]["name"].as_str().unwrap().to_string();
    let checked = match kind.as_str() {
        "Namespace" => round_trip::<Namespace>(&json),
        "ServiceAccount" => round_trip::<ServiceAccount>(&json),
        "ClusterRole" => round_trip::<ClusterRole>(&json),
        "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(&json),
        "Role" => round_trip::<Role>(&json),
        "RoleBinding" => round_trip::<RoleBinding>(&json),
        "Deployment" => round_trip::<Deployment>(&json),
        "DaemonSet" => round_trip::<DaemonSet>(&json),
        "Service" => round_trip::<Service>(&json),
        "CustomResourceDefinition" => round_trip::<CustomResourceDefinition>(&json),
        other => Err(format!("no type checked for kind {other}")),
    };
    if let Err(e) = checked {
        panic!("{kind} {name}: {e}");
    }
    format!("{kind}/{name}")
}

#[test]
fn every_rendered_object_is_its_kubernetes_type_field_for_field() {
    let objects = render(&Values::default()).unwrap();
    let kinds: Vec<String> = objects.iter().map(typed).collect();
    assert_eq!(
        kinds,
        [
            "CustomResourceDefinition/authorizationpolicies.security.istio.io",
            "CustomResourceDefinition/peerauthentications.security.istio.io",
            "CustomResourceDefinition/requestauthentications.security.istio.io",
            "Namespace/istio-system",
            "ServiceAccount/istiod",
            "ClusterRole/istiod-lite",
            "ClusterRoleBinding/istiod-lite",
            "Role/istiod-lite",
            "RoleBinding/istiod-lite",
            "Deployment/istiod",
            "Service/istiod",
            "ServiceAccount/istio-cni",
            "ClusterRole/istio-cni",
            "ClusterRoleBinding/istio-cni",
            "DaemonSet/istio-cni-node",
            "ServiceAccount/ztunnel",
            "DaemonSet/ztunnel",
        ]
    );
}

fn env_of(objects: &[Value], kind: &str, name: &str, var: &str) -> String {
    let o = objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap();
    let env = o["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap();
    env.iter()
        .find(|e| e["name"] == var)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The acceptance check of the install: what `kubectl kustomize` makes of
/// `deploy/base` is, object for object, what `ambientctl install` renders
/// (kubectl orders by kind; we apply in file order, CRDs first), and each
/// object is its Kubernetes type.
#[test]
fn kubectl_kustomize_renders_what_install_applies() {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base");
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&base)
        .output()
        .expect("kubectl is needed for this test (.ci/install-packages installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        base.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut theirs: Vec<Value> =
        serde_yaml::Deserializer::from_str(std::str::from_utf8(&out.stdout).unwrap())
            .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
            .collect();
    let mut ours = kustomize("base").unwrap();
    let key = |o: &Value| typed(o);
    theirs.sort_by_key(key);
    ours.sort_by_key(key);
    assert_eq!(theirs.len(), 17);
    for (t, o) in theirs.iter().zip(&ours) {
        assert_eq!(t, o, "kubectl and our renderer differ on {}", typed(o));
    }
    assert_eq!(theirs.len(), ours.len());
}

#[test]
fn profiles_and_values_adjust_the_rendered_objects() {
    let default = render(&Values::default()).unwrap();
    assert_eq!(
        env_of(&default, "DaemonSet", "ztunnel", "INPOD_REDIRECTION"),
        "nftables"
    );
    let ebpf = render(&Values {
        profile: Profile::parse("ambient-ebpf").unwrap(),
        hub: "registry.example:5000/mesh".into(),
        tag: "dev".into(),
    })
    .unwrap();
    assert_eq!(
        env_of(&ebpf, "DaemonSet", "ztunnel", "INPOD_REDIRECTION"),
        "ebpf"
    );
    assert_eq!(
        env_of(&ebpf, "DaemonSet", "istio-cni-node", "REDIRECTION"),
        "ebpf"
    );
    let images: Vec<&str> = ebpf
        .iter()
        .filter_map(|o| o["spec"]["template"]["spec"]["containers"][0]["image"].as_str())
        .collect();
    assert_eq!(
        images,
        [
            "registry.example:5000/mesh/istiod-lite:dev",
            "registry.example:5000/mesh/cni:dev",
            "registry.example:5000/mesh/ztunnel:dev"
        ]
    );
    assert!(
        Profile::parse("minimal")
            .unwrap_err()
            .to_string()
            .contains("ambient-ebpf")
    );
    assert!(to_yaml(&default).starts_with("---\napiVersion: apiextensions.k8s.io/v1\n"));
}

#[test]
fn paths_resolve_like_kustomize() {
    assert_eq!(join("base", "../crds"), "crds");
    assert_eq!(join("base", "crds/a.yaml"), "base/crds/a.yaml");
    assert_eq!(join("base", "./ztunnel.yaml"), "base/ztunnel.yaml");
    assert_eq!(
        kustomize("nowhere").unwrap_err(),
        RenderError::Missing("nowhere/kustomization.yaml".into())
    );
}

#[tokio::test]
async fn apply_writes_every_object_by_server_side_apply_in_order() {
    use http::{Request, Response};
    use kube::client::Body;
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let server = tokio::spawn(async move {
        let mut paths = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            assert_eq!(request.method(), http::Method::PATCH);
            assert!(
                request
                    .uri()
                    .query()
                    .unwrap()
                    .contains("fieldManager=ambientctl")
            );
            paths.push(request.uri().path().to_string());
            let body = request.into_body().collect_bytes().await.unwrap();
            send.send_response(Response::new(Body::from(body.to_vec())));
        }
        paths
    });
    let objects = render(&Values::default()).unwrap();
    let mut components = Vec::new();
    apply(&client, &objects, "ambientctl", |c| components.push(c))
        .await
        .unwrap();
    drop(client);
    let paths = server.await.unwrap();
    assert_eq!(paths.len(), objects.len());
    assert_eq!(
        paths[0],
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/authorizationpolicies.security.istio.io"
    );
    assert!(paths.contains(&"/api/v1/namespaces/istio-system".to_string()));
    assert!(
        paths.contains(&"/apis/apps/v1/namespaces/istio-system/daemonsets/ztunnel".to_string())
    );
    assert!(
        paths.contains(&"/apis/rbac.authorization.k8s.io/v1/clusterroles/istiod-lite".to_string())
    );
    assert_eq!(components, ["Istio core", "Istiod", "CNI", "Ztunnel"]);
}

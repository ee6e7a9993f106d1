use super::*;
use crate::store::ManifestStore;

const GENERATED: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  labels:
    istio.io/waypoint-for: service
  name: waypoint
  namespace: default
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
";

#[test]
fn generate_prints_the_gateway_istio_would_accept() {
    let text =
        serde_yaml::to_string(&gateway("default", "waypoint", Some("service"), None)).unwrap();
    assert_eq!(text, GENERATED);
    // Our model runs Istio's waypoint checks (one HBONE listener on 15008,
    // a known waypoint-for): the generated Gateway passes them.
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    match mesh_model::parse_object(doc).unwrap() {
        mesh_model::Parsed::Object(key, _) => assert_eq!(key.name, "waypoint"),
        other => panic!("not an object: {other:?}"),
    }
    // Without --for there is no label at all.
    let plain = serde_yaml::to_string(&gateway("default", "waypoint", None, None)).unwrap();
    assert!(!plain.contains("labels"), "{plain}");
}

fn store_with(ns_labels: &str) -> (tempfile::TempDir, ManifestStore) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ns.yaml"),
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels: {ns_labels}\n"
        ),
    )
    .unwrap();
    let store = ManifestStore::open(dir.path()).unwrap();
    (dir, store)
}

fn apply_args<'a>() -> Apply<'a> {
    Apply {
        namespace: "default",
        name: "waypoint",
        traffic: None,
        revision: None,
        enroll_namespace: true,
        overwrite: false,
        wait: None,
    }
}

#[test]
fn apply_writes_the_gateway_and_enrolls_the_namespace() {
    let (_dir, store) = store_with("{istio.io/dataplane-mode: ambient}");
    let mut out = String::new();
    apply(&store, &apply_args(), &mut out).unwrap();
    assert_eq!(
        out,
        "✅ waypoint default/waypoint applied\n✅ namespace default labeled with \"istio.io/use-waypoint: waypoint\"\n"
    );
    let ns = store.get("Namespace", "", "default").unwrap().unwrap();
    assert_eq!(ns.label(USE_WAYPOINT), Some("waypoint"));
    assert!(
        store
            .get("Gateway", "default", "waypoint")
            .unwrap()
            .is_some()
    );

    assert_eq!(
        list(&store, Some("default")).unwrap(),
        "NAME         REVISION     TRAFFIC TYPE     PROGRAMMED\nwaypoint     default      none             False\n"
    );
}

#[test]
fn apply_warns_instead_of_replacing_another_enrolled_waypoint() {
    let (_dir, store) = store_with("{istio.io/use-waypoint: other}");
    let mut out = String::new();
    apply(&store, &apply_args(), &mut out).unwrap();
    assert!(out.contains("is not enrolled in ambient"), "{out}");
    assert!(
        out.contains("already has an enrolled Waypoint. Consider adding the --overwrite flag"),
        "{out}"
    );
    let ns = store.get("Namespace", "", "default").unwrap().unwrap();
    assert_eq!(ns.label(USE_WAYPOINT), Some("other"));

    let mut out = String::new();
    apply(
        &store,
        &Apply {
            overwrite: true,
            ..apply_args()
        },
        &mut out,
    )
    .unwrap();
    let ns = store.get("Namespace", "", "default").unwrap().unwrap();
    assert_eq!(ns.label(USE_WAYPOINT), Some("waypoint"));
}

#[test]
fn apply_refuses_none_and_unknown_namespaces_and_wait_times_out_unprogrammed() {
    let (_dir, store) = store_with("{}");
    let mut out = String::new();
    let none = apply(
        &store,
        &Apply {
            name: "none",
            ..apply_args()
        },
        &mut out,
    );
    assert!(matches!(none, Err(WaypointError::ReservedName)));
    let missing = apply(
        &store,
        &Apply {
            namespace: "nope",
            ..apply_args()
        },
        &mut out,
    );
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("namespace nope not found")
    );
    let wait = Apply {
        wait: Some(Duration::from_millis(300)),
        ..apply_args()
    };
    let e = apply(&store, &wait, &mut out).unwrap_err().to_string();
    assert!(
        e.contains("timed out") && e.contains("default/waypoint"),
        "{e}"
    );
}

#[test]
fn status_lists_conditions_and_delete_reports_each_name() {
    let (dir, store) = store_with("{}");
    std::fs::write(
        dir.path().join("gw.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, namespace: default, labels: {istio.io/waypoint-for: service}}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\nstatus:\n  conditions:\n  - {type: Programmed, status: \"True\", reason: Programmed, message: ''}\n",
    )
    .unwrap();
    assert_eq!(
        status(&store, Some("default"), None, None).unwrap(),
        "NAME         STATUS     TYPE           REASON         MESSAGE\nwaypoint     True       Programmed     Programmed\n"
    );
    assert_eq!(
        list(&store, None).unwrap(),
        "NAMESPACE     NAME         REVISION     TRAFFIC TYPE     PROGRAMMED\ndefault       waypoint     default      service          True\n"
    );
    let out = delete(
        &store,
        "default",
        &["waypoint".into(), "ghost".into()],
        false,
    )
    .unwrap();
    assert_eq!(
        out,
        "waypoint default/waypoint deleted\nwaypoint default/ghost not found\n"
    );
    assert!(matches!(
        delete(&store, "default", &[], false),
        Err(WaypointError::NothingToDelete)
    ));
    assert_eq!(list(&store, None).unwrap(), "No waypoints found.\n");
}

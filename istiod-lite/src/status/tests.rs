use super::*;
use crate::translate::tests::model_of;
use crate::translate::waypoint::tests::{ATTACHED, apps};
use crate::translate::{TranslateConfig, translate};

fn conditions(
    s: &Statuses,
    kind: StatusKind,
    ns: &str,
    name: &str,
) -> (String, bool, String, String) {
    let c = &s[&StatusKey {
        kind,
        namespace: ns.into(),
        name: name.into(),
    }][0];
    (
        c.type_.clone(),
        c.status,
        c.reason.clone(),
        c.message.clone(),
    )
}

const HTTP_AT_ZTUNNEL: &str = "
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only-at-ztunnel, namespace: apps}
spec:
  selector: {matchLabels: {app: other}}
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: v1
kind: Service
metadata: {name: lonely, namespace: solo, labels: {istio.io/use-waypoint: missing}}
spec: {clusterIP: 10.96.9.9, selector: {app: lonely}, ports: [{port: 80}]}
";

#[test]
fn policies_and_services_say_where_they_are_enforced_or_why_not() {
    let model = model_of(&format!("{}{ATTACHED}{HTTP_AT_ZTUNNEL}", apps(None)));
    let t = translate(&model, &TranslateConfig::default());
    let s = desired(&model, &t);

    assert_eq!(
        conditions(&s, StatusKind::AuthorizationPolicy, "apps", "l4"),
        (
            "ZtunnelAccepted".into(),
            true,
            "Accepted".into(),
            "attached to ztunnel".into()
        )
    );
    let (type_, ok, reason, message) = conditions(
        &s,
        StatusKind::AuthorizationPolicy,
        "apps",
        "get-only-at-ztunnel",
    );
    assert_eq!(
        (type_.as_str(), ok, reason.as_str()),
        ("ZtunnelAccepted", false, "UnsupportedValue")
    );
    assert!(
        message.contains("ztunnel does not support HTTP attributes"),
        "{message}"
    );

    for bound in ["echo-l7", "gw-policy"] {
        assert_eq!(
            conditions(&s, StatusKind::AuthorizationPolicy, "apps", bound),
            (
                "WaypointAccepted".into(),
                true,
                "Accepted".into(),
                "bound to apps/waypoint".into()
            ),
            "{bound}"
        );
    }
    let (type_, ok, reason, _) = conditions(
        &s,
        StatusKind::AuthorizationPolicy,
        "shop",
        "echo-elsewhere",
    );
    assert_eq!(
        (type_.as_str(), ok, reason.as_str()),
        ("WaypointAccepted", false, "TargetNotFound")
    );

    assert_eq!(
        conditions(&s, StatusKind::Service, "apps", "echo"),
        (
            "istio.io/WaypointBound".into(),
            true,
            "Bound".into(),
            "bound to apps/waypoint".into()
        )
    );
    let (_, ok, reason, message) = conditions(&s, StatusKind::Service, "solo", "lonely");
    assert_eq!((ok, reason.as_str()), (false, "WaypointIsNotReady"));
    assert!(
        message.starts_with("waypoint solo/missing is not ready"),
        "{message}"
    );
    assert!(
        !s.keys()
            .any(|k| k.kind == StatusKind::Service && k.name == "waypoint"),
        "Services that ask for no waypoint get no condition"
    );
}

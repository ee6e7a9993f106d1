use super::*;
use crate::Kind;

const POLICY_V1: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-curl, namespace: apps}
spec:
  rules:
  - from: [{source: {principals: [cluster.local/ns/apps/sa/curl]}}]
";

const POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: web, namespace: apps}
status: {podIP: 10.0.0.2}
";

fn policy_principals(dir: &ManifestDir) -> Vec<String> {
    let m = dir.model();
    m.authorization_policies[&("apps".to_string(), "allow-curl".to_string())]
        .spec
        .rules[0]
        .from[0]
        .source
        .as_ref()
        .unwrap()
        .principals
        .clone()
}

#[test]
fn reads_multi_document_files_and_ignores_other_kinds() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("all.yaml"),
        format!("{POD}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\n---\n{POLICY_V1}---\n"),
    )
    .unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "not a manifest").unwrap();
    let mut dir = ManifestDir::new(tmp.path());
    let report = dir.scan().unwrap();
    assert!(
        report.changed && report.errors.is_empty(),
        "{:?}",
        report.errors
    );
    let m = dir.model();
    assert_eq!(m.pods.len(), 1);
    assert_eq!(m.authorization_policies.len(), 1);
    // Nothing changed: nothing re-read, nothing published.
    let again = dir.scan().unwrap();
    assert!(!again.changed && again.touched.is_empty());
}

#[test]
fn a_yaml_syntax_error_keeps_the_previous_policy_and_names_file_and_object() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("policy.yaml");
    std::fs::write(&file, POLICY_V1).unwrap();
    let mut dir = ManifestDir::new(tmp.path());
    dir.scan().unwrap();

    std::fs::write(&file, "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-curl, namespace: apps\nspec: [\n").unwrap();
    let report = dir.scan().unwrap();
    assert!(!report.changed);
    let msg = report.errors[0].to_string();
    assert!(msg.contains("policy.yaml"), "{msg}");
    assert!(msg.contains("not valid YAML at line"), "{msg}");
    assert!(
        msg.contains("keeping the last good version of AuthorizationPolicy apps/allow-curl"),
        "{msg}"
    );
    assert_eq!(policy_principals(&dir), ["cluster.local/ns/apps/sa/curl"]);

    // Fixed: the new version applies.
    std::fs::write(&file, POLICY_V1.replace("sa/curl", "sa/wget")).unwrap();
    let report = dir.scan().unwrap();
    assert!(report.changed && report.errors.is_empty());
    assert_eq!(policy_principals(&dir), ["cluster.local/ns/apps/sa/wget"]);
}

#[test]
fn an_invalid_object_keeps_its_last_good_version_while_others_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("mesh.yaml");
    std::fs::write(&file, format!("{POLICY_V1}---\n{POD}")).unwrap();
    let mut dir = ManifestDir::new(tmp.path());
    dir.scan().unwrap();

    // A typo in the policy (`principal`), and a change to the pod.
    let broken = POLICY_V1.replace("principals:", "principal:");
    std::fs::write(
        &file,
        format!("{broken}---\n{}", POD.replace("10.0.0.2", "10.0.0.9")),
    )
    .unwrap();
    let report = dir.scan().unwrap();
    assert!(report.changed, "the pod change applies");
    let e = &report.errors[0];
    assert_eq!(e.document, Some(1));
    assert_eq!(
        e.error.object.as_ref().map(|k| k.kind),
        Some(Kind::AuthorizationPolicy)
    );
    assert_eq!(
        e.error.field.as_deref(),
        Some("spec.rules[0].from[0].source.principal")
    );
    assert!(
        e.error.problem.contains("unknown field `principal`"),
        "{}",
        e.error.problem
    );
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{} (document 1): AuthorizationPolicy apps/allow-curl: spec.rules[0].from[0].source.principal:", file.display())), "{msg}");
    assert_eq!(policy_principals(&dir), ["cluster.local/ns/apps/sa/curl"]);
    let m = dir.model();
    assert_eq!(
        m.pods[&("apps".into(), "web".into())]
            .status
            .pod_ip
            .as_deref(),
        Some("10.0.0.9")
    );
}

#[test]
fn semantic_errors_name_the_field() {
    let cases = [
        (
            "spec: {rules: [{from: [{source: {}}]}]}",
            "spec.rules[0].from[0].source",
            "must not be empty",
        ),
        (
            "spec: {rules: [{to: [{operation: {ports: [http]}}]}]}",
            "spec.rules[0].to[0].operation.ports[0]",
            "not a port",
        ),
        (
            "spec: {rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]}",
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "prefix length 33",
        ),
        (
            "spec: {rules: [{when: [{key: source.ip}]}]}",
            "spec.rules[0].when[0]",
            "at least one of values or notValues",
        ),
        (
            "spec: {rules: [{when: [{key: source.ipp, values: [x]}]}]}",
            "spec.rules[0].when[0].key",
            "unknown condition key",
        ),
        (
            "spec: {rules: [{from: [{source: {serviceAccounts: [a], principals: [b]}}]}]}",
            "spec.rules[0].from[0].source",
            "cannot be combined",
        ),
        (
            "spec: {action: CUSTOM}",
            "spec.provider",
            "required when action is CUSTOM",
        ),
        (
            "spec: {action: MAYBE}",
            "spec.action",
            "unknown variant `MAYBE`",
        ),
        (
            "spec: {selector: {matchLabels: {a: b}}, targetRefs: [{kind: Service, name: x}]}",
            "spec",
            "only one of selector",
        ),
    ];
    for (spec, field, problem) in cases {
        let doc = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p}}\n{spec}\n"
        );
        let v: serde_yaml::Value = serde_yaml::from_str(&doc).unwrap();
        let e = parse_object(v).expect_err(spec);
        assert_eq!(e.field.as_deref(), Some(field), "{spec}: {e}");
        assert!(e.problem.contains(problem), "{spec}: {e}");
        assert_eq!(
            e.object.as_ref().unwrap().to_string(),
            "AuthorizationPolicy default/p"
        );
    }
    let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: {portLevelMtls: {80: {mode: STRICT}}}\n";
    let e = parse_object(serde_yaml::from_str(pa).unwrap()).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("spec.portLevelMtls"));
    let nameless = "apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\n";
    let e = parse_object(serde_yaml::from_str(nameless).unwrap()).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("metadata.name"));
}

#[test]
fn removing_a_file_or_object_removes_it_from_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.yaml");
    std::fs::write(&a, format!("{POLICY_V1}---\n{POD}")).unwrap();
    let mut dir = ManifestDir::new(tmp.path());
    dir.scan().unwrap();
    std::fs::write(&a, POD).unwrap();
    assert!(dir.scan().unwrap().changed);
    assert!(dir.model().authorization_policies.is_empty());
    std::fs::remove_file(&a).unwrap();
    assert!(dir.scan().unwrap().changed);
    assert_eq!(dir.model(), Model::default());
}

#[tokio::test]
async fn the_error_log_clears_when_a_file_is_fixed() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("p.yaml");
    std::fs::write(&file, "kind: [").unwrap();
    let mut dir = ManifestDir::new(tmp.path());
    let (tx, _rx) = watch::channel(Arc::new(Model::default()));
    let log = ErrorLog::default();
    let report = dir.scan().unwrap();
    publish(&dir, report, &tx, &log);
    assert_eq!(log.lock().unwrap().len(), 1);
    std::fs::write(&file, POD).unwrap();
    let report = dir.scan().unwrap();
    publish(&dir, report, &tx, &log);
    assert!(log.lock().unwrap().is_empty());
    assert_eq!(tx.borrow().pods.len(), 1);
}

#[test]
fn an_error_before_the_object_is_named_keeps_everything_the_file_had() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("p.yaml");
    std::fs::write(&file, format!("{POD}---\n{POLICY_V1}")).unwrap();
    let mut dir = ManifestDir::new(tmp.path());
    dir.scan().unwrap();
    for broken in [
        POLICY_V1.replace("namespace: apps}", "namespace: 123}"),
        POLICY_V1.replace("kind: AuthorizationPolicy", "kind: AuthorizationPolicys"),
        POLICY_V1.replace("name: allow-curl,", "name: Allow_Curl,"),
    ] {
        std::fs::write(&file, format!("{POD}---\n{broken}")).unwrap();
        let report = dir.scan().unwrap();
        assert_eq!(report.errors.len(), 1, "{broken}");
        assert_eq!(report.errors[0].document, Some(2));
        assert_eq!(
            policy_principals(&dir),
            ["cluster.local/ns/apps/sa/curl"],
            "{broken}"
        );
    }
}

#[test]
fn parse_manifest_numbers_documents_and_refuses_deep_nesting() {
    let docs = parse_manifest(&format!("{POD}---\n---\nkind: [x]\n")).unwrap();
    let numbers: Vec<usize> = docs.iter().map(|d| d.number).collect();
    assert_eq!(numbers, [1, 3]);
    assert!(matches!(docs[0].parsed, Ok(Parsed::Object(..))));
    assert!(docs[1].parsed.is_err());
    // Far deeper than the YAML reader's limit: an error, not a stack overflow.
    for deep in [
        "[".repeat(10_000),
        "- ".repeat(10_000) + "b",
        "{a: ".repeat(10_000),
    ] {
        let e = parse_manifest(&deep).unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
    }
}

//! The `ambientctl` binary as users run it: arguments in, text and exit
//! code out.

use std::process::{Command, Output};

fn ambientctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ambientctl"))
        .args(args)
        .env_remove("AMBIENT_MANIFESTS")
        .output()
        .expect("run ambientctl")
}

fn text(o: &Output) -> (bool, String, String) {
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn waypoint_generate_needs_no_mesh_and_refuses_none() {
    let (ok, out, _) = text(&ambientctl(&["waypoint", "generate", "-n", "default"]));
    assert!(ok);
    assert!(
        out.starts_with("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"),
        "{out}"
    );
    assert!(out.contains("gatewayClassName: istio-waypoint"), "{out}");
    let (ok, _, err) = text(&ambientctl(&["waypoint", "generate", "--name", "none"]));
    assert!(!ok);
    assert!(err.contains("'none' is a reserved value"), "{err}");
}

#[test]
fn enroll_apply_list_delete_against_a_manifest_directory() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().to_str().unwrap();
    let (ok, out, err) = text(&ambientctl(&[
        "--manifests",
        m,
        "namespace",
        "enroll",
        "shop",
    ]));
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "✅ namespace shop labeled with \"istio.io/dataplane-mode: ambient\"\n"
    );
    let (ok, out, err) = text(&ambientctl(&[
        "--manifests",
        m,
        "waypoint",
        "apply",
        "-n",
        "shop",
        "--enroll-namespace",
    ]));
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "✅ waypoint shop/waypoint applied\n✅ namespace shop labeled with \"istio.io/use-waypoint: waypoint\"\n"
    );
    let (ok, out, _) = text(&ambientctl(&["--manifests", m, "waypoint", "list", "-A"]));
    assert!(ok);
    assert!(
        out.starts_with("NAMESPACE     NAME         REVISION"),
        "{out}"
    );
    let (ok, out, _) = text(&ambientctl(&[
        "--manifests",
        m,
        "waypoint",
        "delete",
        "-n",
        "shop",
        "--all",
    ]));
    assert!(ok);
    assert_eq!(out, "waypoint shop/waypoint deleted\n");
}

#[test]
fn without_a_mesh_the_error_says_how_to_get_one() {
    let (ok, _, err) = text(&ambientctl(&[
        "--manifests",
        "/nonexistent/dir",
        "waypoint",
        "list",
    ]));
    assert!(!ok);
    assert!(err.contains("/nonexistent/dir is not a directory"), "{err}");
    let (ok, _, err) = text(&ambientctl(&[
        "ztunnel-config",
        "workloads",
        "--admin",
        "127.0.0.1:1",
    ]));
    assert!(!ok);
    assert!(
        err.contains("cannot reach the ztunnel admin endpoint 127.0.0.1:1"),
        "{err}"
    );
}

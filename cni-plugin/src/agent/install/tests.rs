use super::*;

fn entry() -> Entry {
    Entry {
        agent_socket: "/var/run/mesh-cni/plugin.sock".into(),
        excluded_namespaces: vec!["kube-system".into()],
    }
}

fn kindnet() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/10-kindnet.conflist");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn our_entry_goes_last_once_and_comes_out_cleanly() {
    let original = kindnet();
    let chained = chain(&original, &entry()).unwrap();
    let types: Vec<&str> = chained["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["ptp", "portmap", "mesh-cni"]);
    assert_eq!(chained["cniVersion"], "0.3.1", "the list keeps its version");
    assert_eq!(
        chained["plugins"][2]["agentSocket"],
        "/var/run/mesh-cni/plugin.sock"
    );
    // Installing again replaces rather than duplicates.
    let twice = chain(&chained, &entry()).unwrap();
    assert_eq!(twice, chained);
    let mut without_ours = chained.clone();
    without_ours["plugins"].as_array_mut().unwrap().pop();
    assert_eq!(without_ours, original, "the rest is left as it was");
}

#[test]
fn a_single_plugin_conf_becomes_a_list_around_it() {
    let conf = json!({"cniVersion": "0.4.0", "name": "bridge-net", "type": "bridge", "bridge": "cni0",
        "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}});
    let chained = chain(&conf, &entry()).unwrap();
    assert_eq!(chained["name"], "bridge-net");
    assert_eq!(chained["cniVersion"], "0.4.0");
    assert_eq!(chained["plugins"][0]["type"], "bridge");
    assert_eq!(chained["plugins"][0]["bridge"], "cni0");
    assert!(chained["plugins"][0].get("name").is_none());
    assert_eq!(chained["plugins"][1]["type"], "mesh-cni");

    assert!(
        chain(&json!({"cniVersion": "1.0.0"}), &entry())
            .unwrap_err()
            .contains("plugin `type`")
    );
    assert!(
        chain(&json!({"plugins": {}}), &entry())
            .unwrap_err()
            .contains("not a list")
    );
}

#[test]
fn install_copies_the_binary_and_chains_the_first_config_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf) = (dir.path().join("bin"), dir.path().join("net.d"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    let binary = dir.path().join("mesh-cni-build");
    std::fs::write(&binary, b"\x7fELF binary").unwrap();

    // No network yet: a clear error, nothing written.
    let e = install(&binary, &bin, &conf, &entry())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no network config"), "{e}");

    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/10-kindnet.conflist"),
        conf.join("10-kindnet.conflist"),
    )
    .unwrap();
    std::fs::write(conf.join("99-other.conf"), r#"{"type": "bridge"}"#).unwrap();
    let written = install(&binary, &bin, &conf, &entry()).unwrap();
    assert_eq!(written, conf.join("10-kindnet.conflist"));
    assert_eq!(
        std::fs::read(bin.join("mesh-cni")).unwrap(),
        b"\x7fELF binary"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(bin.join("mesh-cni"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let chained: Value = serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
    assert_eq!(chained["plugins"][2]["type"], "mesh-cni");
    let other = std::fs::read_to_string(conf.join("99-other.conf")).unwrap();
    assert_eq!(
        other, r#"{"type": "bridge"}"#,
        "only the primary config is touched"
    );

    // Again (an agent restart): still one entry of ours.
    install(&binary, &bin, &conf, &entry()).unwrap();
    let again: Value = serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
    assert_eq!(again, chained);

    std::fs::write(conf.join("10-kindnet.conflist"), "{").unwrap();
    let e = install(&binary, &bin, &conf, &entry())
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a CNI network config"), "{e}");
}

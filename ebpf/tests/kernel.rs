//! The programs in a real kernel, without the rest of the mesh: they load
//! with settings, attach to an interface inside a network namespace, a
//! second load replaces the first in place, detaching removes them, and a
//! refused object says why. Needs root (fails loudly otherwise).

use std::process::Command;

use mesh_ebpf::{
    Counter, EbpfError, MeshConfig, Programs, REDIRECT_OBJECT, REJECTED_OBJECT, Settings,
};
use mesh_netns::Netns;

fn settings() -> MeshConfig {
    Settings {
        inpod_mark: 0x539,
        redirect_mark: 0x111,
        mark_mask: 0xfff,
        probe_v4: "169.254.7.127".parse().unwrap(),
        probe_v6: "fd16:9254:7127:1337:ffff:ffff:ffff:ffff".parse().unwrap(),
        outbound_port: 15001,
        inbound_plaintext_port: 15006,
        hbone_port: 15008,
    }
    .into()
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace with one interface (a veth pair's end), removed on drop.
struct Scratch(String);

impl Scratch {
    fn new() -> Self {
        assert_eq!(
            sh(&["id", "-u"]).trim(),
            "0",
            "the eBPF kernel tests need root (sudo cargo test -p mesh-ebpf)"
        );
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("mebpf{}x{n}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&[
            "ip", "-n", &name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        sh(&["ip", "-n", &name, "link", "set", "eth0", "up"]);
        Self(name)
    }

    fn netns(&self) -> Netns {
        Netns::open(format!("/var/run/netns/{}", self.0)).unwrap()
    }

    /// Our filters as tc shows them: (direction, program name, id).
    fn filters(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for direction in ["ingress", "egress"] {
            let json = sh(&[
                "ip", "netns", "exec", &self.0, "tc", "-j", "filter", "show", "dev", "eth0",
                direction,
            ]);
            let all: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap_or_default();
            for f in all {
                if let (Some(name), Some(id)) = (
                    f["options"]["bpf_name"].as_str(),
                    f["options"]["prog"]["id"].as_u64(),
                ) {
                    out.push((direction.to_string(), name.to_string(), id));
                }
            }
        }
        out
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn attach_replace_and_detach_in_a_namespace() {
    let scratch = Scratch::new();
    let netns = scratch.netns();

    let mut first = Programs::load(REDIRECT_OBJECT, settings()).expect("the verifier accepts");
    let first_ids = first.kernel_ids().programs;
    netns.run(|| first.attach("eth0")).unwrap().unwrap();
    let attached = scratch.filters();
    let names: Vec<(&str, &str)> = attached
        .iter()
        .map(|(d, n, _)| (d.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        names,
        [("ingress", "mesh_ingress"), ("egress", "mesh_egress")]
    );
    assert!(
        attached
            .iter()
            .all(|(_, _, id)| first_ids.contains(&(*id as u32)))
    );

    // A second load (a restarted agent) replaces the filters in place:
    // still one per direction, now the new programs.
    let mut second = Programs::load(REDIRECT_OBJECT, settings()).unwrap();
    let second_ids = second.kernel_ids().programs;
    netns.run(|| second.attach("eth0")).unwrap().unwrap();
    let replaced = scratch.filters();
    assert_eq!(replaced.len(), 2, "{replaced:?}");
    assert!(
        replaced
            .iter()
            .all(|(_, _, id)| second_ids.contains(&(*id as u32)))
    );

    // Dropping the loader does not detach: the filters belong to the
    // interface.
    drop(second);
    assert_eq!(scratch.filters(), replaced);

    assert!(netns.run(|| mesh_ebpf::detach("eth0")).unwrap().unwrap());
    assert!(scratch.filters().is_empty());
    assert!(!netns.run(|| mesh_ebpf::detach("eth0")).unwrap().unwrap());

    // The counters read, all zero on an interface nobody used.
    let counters = first.counters().unwrap();
    assert_eq!(counters.len(), Counter::ALL.len());
}

#[test]
fn a_refused_program_is_named_with_the_verifiers_reason() {
    let _root = Scratch::new();
    let err = match Programs::load(REJECTED_OBJECT, settings()) {
        Err(e) => e,
        Ok(_) => panic!("the verifier must refuse the reject object"),
    };
    assert!(
        matches!(
            err,
            EbpfError::Load {
                program: "mesh_ingress",
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("verifier") && text.contains("outside of the packet"),
        "{text}"
    );
}

#[test]
fn an_object_that_is_not_one_says_so() {
    let err = match Programs::load(b"not an ELF object", settings()) {
        Err(e) => e,
        Ok(_) => panic!("garbage must not load"),
    };
    assert!(matches!(err, EbpfError::Object(_)), "{err:?}");
}

/// reliability.md R6, full map: the programs keep no per-connection state
/// (connection tracking is the kernel's); their maps are fixed-size arrays
/// (the counters, the settings), which cannot fill. A map that can fill (a
/// hash, an LRU, a ring buffer) would need the spec's path for a full map
/// (drop the packet and count it): this test fails when one appears, so
/// that path comes with it.
#[test]
fn the_programs_keep_no_map_that_can_fill() {
    let _root = Scratch::new();
    let programs = Programs::load(REDIRECT_OBJECT, settings()).unwrap();
    let maps = programs.kernel_ids().maps;
    assert!(!maps.is_empty(), "the counters at least");
    for id in maps {
        let shown = sh(&["bpftool", "-j", "map", "show", "id", &id.to_string()]);
        let map: serde_json::Value = serde_json::from_str(&shown).expect("bpftool JSON");
        let kind = map["type"].as_str().unwrap_or_default();
        assert!(
            kind == "array" || kind == "percpu_array",
            "map {} is a {kind}, which can fill: {shown}",
            map["name"]
        );
    }
}

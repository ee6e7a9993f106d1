//! In-pod redirection with the tc programs of `mesh-ebpf`: attached to
//! every interface of the pod (inside its namespace), with
//! `accept_local` set there so packets the programs turn back into the pod
//! (source: the pod's own address) are accepted.
//!
//! The programs are loaded while at least one pod is captured and let go
//! when none is; the filters themselves outlive the agent (see mesh-ebpf's
//! invariant), so a restarted agent finds and replaces them.

use std::collections::BTreeMap;
use std::path::Path;

use mesh_ebpf::{EGRESS_PROGRAM, INGRESS_PROGRAM, KernelIds, MeshConfig, Programs, Settings};
use mesh_netns::Netns;
use serde::Serialize;
use tracing::{info, warn};

use super::{
    CONN_MARK, HBONE_PORT, INBOUND_PLAINTEXT_PORT, INPOD_MARK, MARK_MASK, OUTBOUND_PORT,
    PROBE_SNAT_V4, PROBE_SNAT_V6, RedirectError, run,
};

pub struct EbpfRedirect {
    object: Vec<u8>,
    /// Where the object came from, for messages.
    source: String,
    config: MeshConfig,
    loaded: Option<Programs>,
    startup_error: Option<String>,
}

/// The eBPF part of the agent's status.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EbpfStatus {
    pub object: String,
    /// Kernel ids while programs are loaded (some pod is captured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded: Option<KernelIds>,
    pub counters: BTreeMap<&'static str, u64>,
}

impl EbpfRedirect {
    /// Reads `object` (the built-in programs when `None`) and loads it
    /// once, to find out now whether this kernel can run it.
    pub fn new(object: Option<&Path>) -> Self {
        let settings = Settings {
            inpod_mark: INPOD_MARK,
            redirect_mark: CONN_MARK,
            mark_mask: MARK_MASK,
            probe_v4: PROBE_SNAT_V4.parse().expect("a valid address"),
            probe_v6: PROBE_SNAT_V6.parse().expect("a valid address"),
            outbound_port: OUTBOUND_PORT,
            inbound_plaintext_port: INBOUND_PLAINTEXT_PORT,
            hbone_port: HBONE_PORT,
        };
        let (bytes, source) = match object {
            None => (
                Ok(mesh_ebpf::REDIRECT_OBJECT.to_vec()),
                "built-in".to_string(),
            ),
            Some(p) => (std::fs::read(p), p.display().to_string()),
        };
        let mut me = Self {
            object: Vec::new(),
            source,
            config: settings.into(),
            loaded: None,
            startup_error: None,
        };
        match bytes {
            Ok(b) => me.object = b,
            Err(e) => {
                me.startup_error = Some(format!("reading the object {}: {e}", me.source));
                return me;
            }
        }
        // Nothing stays loaded while no pod is captured.
        match Programs::load(&me.object, me.config) {
            Ok(_) => info!(object = %me.source, "eBPF redirection programs load on this kernel"),
            Err(e) => me.startup_error = Some(e.to_string()),
        }
        me
    }

    pub fn startup_error(&self) -> Option<&str> {
        self.startup_error.as_deref()
    }

    pub fn status(&self) -> EbpfStatus {
        let counters = self
            .loaded
            .as_ref()
            .and_then(|p| p.counters().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|(c, n)| (c.key(), n))
            .collect();
        EbpfStatus {
            object: self.source.clone(),
            loaded: self.loaded.as_ref().map(Programs::kernel_ids),
            counters,
        }
    }

    pub fn install(&mut self, netns: &Netns) -> Result<String, RedirectError> {
        if self.loaded.is_none() {
            let programs = Programs::load(&self.object, self.config)
                .map_err(|e| RedirectError::Ebpf(format!("{e} (object: {})", self.source)))?;
            self.loaded = Some(programs);
        }
        let programs = self.loaded.as_mut().expect("loaded above");
        netns.run(|| -> Result<(), RedirectError> {
            let interfaces = interfaces()?;
            if interfaces.is_empty() {
                return Err(RedirectError::Ebpf(
                    "the pod has no network interface to attach to (is its sandbox being torn down?)"
                        .into(),
                ));
            }
            for interface in interfaces {
                allow_local_source(&interface)?;
                programs
                    .attach(&interface)
                    .map_err(|e| RedirectError::Ebpf(e.to_string()))?;
            }
            Ok(())
        })??;
        listing(netns)?.ok_or_else(|| {
            RedirectError::Ebpf("no program is attached right after attaching them".into())
        })
    }

    pub fn unload(&mut self) {
        if self.loaded.take().is_some() {
            info!("no pod is captured; the eBPF programs are unloaded");
        }
    }
}

/// Our filters on the pod's interfaces, one line each with the program's
/// kernel id, or `None` when there is none of them.
pub fn listing(netns: &Netns) -> Result<Option<String>, RedirectError> {
    let mut lines = Vec::new();
    for interface in netns.run(interfaces)?? {
        for direction in ["ingress", "egress"] {
            for (name, id) in ours(&filters(netns, &interface, direction)?) {
                lines.push(format!("{interface} {direction} {name} id {id}"));
            }
        }
        let local = netns.run(|| sysctl(&interface, "accept_local"))??;
        lines.push(format!("{interface} accept_local {local}"));
    }
    let any = lines.iter().any(|l| l.contains(" id "));
    Ok(any.then(|| lines.join("\n")))
}

/// Detaches our programs from every interface of the pod and puts
/// `accept_local` back.
pub fn remove(netns: &Netns) -> Result<(), RedirectError> {
    let interfaces = netns.run(interfaces)??;
    for interface in &interfaces {
        netns
            .run(|| mesh_ebpf::detach(interface))?
            .map_err(|e| RedirectError::Ebpf(e.to_string()))?;
        let _ = netns.run(|| set_sysctl(interface, "accept_local", "0"));
        // The clsact qdisc goes too when nothing else uses it.
        let empty = ["ingress", "egress"]
            .iter()
            .all(|d| filters(netns, interface, d).is_ok_and(|f| f.is_empty()));
        if empty {
            let _ = run(
                netns,
                "tc",
                &["qdisc", "del", "dev", interface, "clsact"],
                None,
            );
        }
    }
    Ok(())
}

/// The pod's interfaces other than loopback (in the calling thread's
/// namespace).
fn interfaces() -> Result<Vec<String>, RedirectError> {
    let all = nix::net::if_::if_nameindex()
        .map_err(|e| RedirectError::Ebpf(format!("listing the pod's interfaces: {e}")))?;
    Ok(all
        .iter()
        .map(|i| i.name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect())
}

/// Packets the egress program turns back carry the pod's own address as
/// source; the kernel drops those as martians unless `accept_local` is
/// set. Strict reverse-path filtering would drop them too: loose is used.
fn allow_local_source(interface: &str) -> Result<(), RedirectError> {
    set_sysctl(interface, "accept_local", "1")?;
    let strict = |scope: &str| sysctl(scope, "rp_filter").is_ok_and(|v| v == "1");
    if strict("all") || strict(interface) {
        warn!(
            interface,
            "strict rp_filter in the pod; setting it to loose (2) for redirection"
        );
        set_sysctl(interface, "rp_filter", "2")?;
    }
    Ok(())
}

/// `net.ipv4.conf.<scope>.<key>` of the calling thread's namespace.
fn sysctl(scope: &str, key: &str) -> Result<String, RedirectError> {
    let path = format!("/proc/sys/net/ipv4/conf/{scope}/{key}");
    std::fs::read_to_string(&path)
        .map(|v| v.trim().to_string())
        .map_err(|e| RedirectError::Ebpf(format!("reading {path}: {e}")))
}

fn set_sysctl(scope: &str, key: &str, value: &str) -> Result<(), RedirectError> {
    let path = format!("/proc/sys/net/ipv4/conf/{scope}/{key}");
    std::fs::write(&path, value).map_err(|e| RedirectError::Ebpf(format!("writing {path}: {e}")))
}

/// The filters on one side of an interface (`tc -j filter show`).
fn filters(
    netns: &Netns,
    interface: &str,
    direction: &str,
) -> Result<Vec<serde_json::Value>, RedirectError> {
    let out = run(
        netns,
        "tc",
        &["-j", "filter", "show", "dev", interface, direction],
        None,
    )?;
    Ok(
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f.get("options").is_some())
            .collect(),
    )
}

/// Our programs among the filters: (name, kernel id).
fn ours(filters: &[serde_json::Value]) -> Vec<(String, u64)> {
    filters
        .iter()
        .filter_map(|f| {
            let options = f.get("options")?;
            let name = options.get("bpf_name")?.as_str()?;
            let id = options.get("prog")?.get("id")?.as_u64()?;
            [EGRESS_PROGRAM, INGRESS_PROGRAM]
                .iter()
                .any(|ours| name == *ours || name.starts_with(&format!("{ours}:")))
                .then(|| (name.to_string(), id))
        })
        .collect()
}

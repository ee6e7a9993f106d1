//! How an enrolled pod's traffic reaches ztunnel's listeners inside the
//! pod, chosen per node (`--redirection`):
//!
//! - [`nftables`]: a table of rules in the pod (nat REDIRECT);
//! - [`ebpf`]: tc programs on the pod's interfaces (`bpf_sk_assign`).
//!
//! Both share the contract of `../shared/spec/dataplane.md` §5 (marks,
//! ports, the probe address) and the policy route: packets carrying the
//! 0x111 mark are delivered by the pod's own stack (table 100).

pub mod ebpf;
pub mod nftables;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use mesh_netns::Netns;
use serde::Serialize;

use super::config::Redirection;

/// The mark ztunnel sets on every socket it creates in a pod.
pub const INPOD_MARK: u32 = 0x539;
/// The connmark (and, restored, packet mark) of ztunnel-originated
/// connections toward the application; in eBPF mode, the mark of packets
/// turned back into the pod.
pub const CONN_MARK: u32 = 0x111;
pub const MARK_MASK: u32 = 0xfff;
pub const ROUTE_TABLE: u32 = 100;
pub const RULE_PRIORITY: u32 = 32764;
pub const PROBE_SNAT_V4: &str = "169.254.7.127";
pub const PROBE_SNAT_V6: &str = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff";
pub const OUTBOUND_PORT: u16 = 15001;
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
pub const HBONE_PORT: u16 = 15008;

#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    #[error("{0}")]
    Netns(#[from] mesh_netns::NetnsError),
    #[error(
        "running `{command}` in the pod's network namespace: {source} (is nftables/iproute2 installed?)"
    )]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed in the pod's network namespace: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("eBPF redirection: {0}")]
    Ebpf(String),
    #[error("setting {setting} in the pod's network namespace: {source}")]
    Sysctl {
        setting: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The node's redirection.
pub enum Redirector {
    Nftables,
    Ebpf(Box<ebpf::EbpfRedirect>),
}

/// What the status file says about the redirection.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirectionStatus {
    pub mode: Redirection,
    /// Why the mode cannot capture pods (enrolled pods are refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ebpf: Option<ebpf::EbpfStatus>,
}

impl Redirector {
    /// The redirection for `mode`. For eBPF the programs are loaded once
    /// here, so a kernel that cannot run them is reported at start.
    pub fn new(mode: Redirection, ebpf_object: Option<&Path>) -> Self {
        match mode {
            Redirection::Nftables => Self::Nftables,
            Redirection::Ebpf => Self::Ebpf(Box::new(ebpf::EbpfRedirect::new(ebpf_object))),
        }
    }

    /// Why this redirection cannot capture pods, if it cannot.
    pub fn startup_error(&self) -> Option<&str> {
        match self {
            Self::Nftables => None,
            Self::Ebpf(e) => e.startup_error(),
        }
    }

    pub fn status(&self) -> RedirectionStatus {
        match self {
            Self::Nftables => RedirectionStatus {
                mode: Redirection::Nftables,
                error: None,
                ebpf: None,
            },
            Self::Ebpf(e) => RedirectionStatus {
                mode: Redirection::Ebpf,
                error: e.startup_error().map(str::to_string),
                ebpf: Some(e.status()),
            },
        }
    }

    /// Captures the pod in `netns`, replacing an earlier capture. Returns
    /// the capture as installed, to compare with [`Self::listing`] later.
    pub fn install(&mut self, netns: &Netns) -> Result<String, RedirectError> {
        allow_listener_handover(netns)?;
        // The route first: once redirection exists, replies must find it.
        install_route(netns)?;
        match self {
            Self::Nftables => nftables::install(netns),
            Self::Ebpf(e) => e.install(netns),
        }
    }

    /// The pod's capture as it is now, or `None` when none is in place.
    pub fn listing(&self, netns: &Netns) -> Result<Option<String>, RedirectError> {
        match self {
            Self::Nftables => nftables::listing(netns),
            Self::Ebpf(_) => ebpf::listing(netns),
        }
    }

    /// Removes the pod's capture and the route (releasing the pod).
    pub fn remove(&mut self, netns: &Netns) -> Result<(), RedirectError> {
        let removed = match self {
            Self::Nftables => nftables::remove(netns),
            Self::Ebpf(_) => ebpf::remove(netns),
        };
        remove_route(netns);
        removed
    }

    /// No pod is captured: let go of what only captured pods need.
    pub fn idle(&mut self) {
        if let Self::Ebpf(e) = self {
            e.unload();
        }
    }
}

/// A ztunnel that is replaced binds its listeners beside the old one's
/// (`SO_REUSEPORT`). When the old one closes them, connections already
/// handed to its listeners but not yet accepted would be reset; with
/// `tcp_migrate_req` the kernel moves them to the new ztunnel's listener
/// instead, so no new connection fails during an upgrade.
fn allow_listener_handover(netns: &Netns) -> Result<(), RedirectError> {
    const SETTING: &str = "net.ipv4.tcp_migrate_req";
    // /proc/sys/net is the namespace of the thread that opens the file.
    netns
        .run(|| std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1"))?
        .map_err(|source| RedirectError::Sysctl {
            setting: SETTING,
            source,
        })
}

/// The policy route: marked packets are delivered by the pod's own stack.
fn install_route(netns: &Netns) -> Result<(), RedirectError> {
    delete_route_rules(netns);
    let rule = format!(
        "rule add fwmark {CONN_MARK:#x}/{MARK_MASK:#x} lookup {ROUTE_TABLE} priority {RULE_PRIORITY}"
    );
    ip(netns, &format!("-4 {rule}"))?;
    ip(
        netns,
        &format!("-4 route replace local 0.0.0.0/0 dev lo table {ROUTE_TABLE}"),
    )?;
    // IPv6 only where the pod has it on lo.
    if ip(
        netns,
        &format!("-6 route replace local ::/0 dev lo table {ROUTE_TABLE}"),
    )
    .is_ok()
    {
        ip(netns, &format!("-6 {rule}"))?;
    }
    Ok(())
}

fn remove_route(netns: &Netns) {
    delete_route_rules(netns);
    for v in ["-4", "-6"] {
        let _ = ip(netns, &format!("{v} route flush table {ROUTE_TABLE}"));
    }
}

/// Removes our policy-routing rule if present (there is at most one).
fn delete_route_rules(netns: &Netns) {
    for v in ["-4", "-6"] {
        let _ = ip(netns, &format!("{v} rule del priority {RULE_PRIORITY}"));
    }
}

/// `ip` with a whitespace-separated command line, inside `netns`.
fn ip(netns: &Netns, command: &str) -> Result<Output, RedirectError> {
    let args: Vec<&str> = command.split_whitespace().collect();
    run(netns, "ip", &args, None)
}

/// Runs `program args` inside `netns` (the child inherits the namespace of
/// the thread that spawns it), feeding it `stdin`.
fn run(
    netns: &Netns,
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<Output, RedirectError> {
    let command = format!("{program} {}", args.join(" "));
    let spawn = netns.run(|| {
        Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    })?;
    let failed = |source| RedirectError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = spawn.map_err(failed)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).map_err(failed)?;
    }
    let out = child.wait_with_output().map_err(failed)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(RedirectError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

//! In-pod redirection with native nftables, equivalent to
//! `../shared/spec/dataplane.md` §5.2: inbound TCP (except HBONE on 15008)
//! to ztunnel's 15006, outbound TCP to 15001, with ztunnel's own sockets
//! (mark 0x539) and the replies on connections it opened with the client's
//! address (connmark 0x111, routed back to it through table 100) exempt,
//! and kubelet probes (SNATed to 169.254.7.127 on the node) never captured.
//!
//! Everything lives in one table, `inet mesh-ambient`, replaced in a single
//! nft transaction: a pod has all of the rules or none of them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use mesh_netns::Netns;

/// The mark ztunnel sets on every socket it creates in a pod.
pub const INPOD_MARK: u32 = 0x539;
/// The connmark (and, restored, packet mark) of ztunnel-originated
/// connections toward the application.
pub const CONN_MARK: u32 = 0x111;
pub const MARK_MASK: u32 = 0xfff;
pub const ROUTE_TABLE: u32 = 100;
pub const RULE_PRIORITY: u32 = 32764;
pub const PROBE_SNAT_V4: &str = "169.254.7.127";
pub const PROBE_SNAT_V6: &str = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff";
pub const OUTBOUND_PORT: u16 = 15001;
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
pub const HBONE_PORT: u16 = 15008;
pub const TABLE: &str = "mesh-ambient";

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
}

/// The ruleset: one atomic transaction that replaces the table.
pub fn ruleset() -> String {
    let m = format!("meta mark & {MARK_MASK:#x}");
    format!(
        "table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
	chain prerouting-mangle {{
		type filter hook prerouting priority mangle; policy accept;
		{m} == {INPOD_MARK:#x} ct mark set ct mark & {keep:#x} | {CONN_MARK:#x}
	}}
	chain output-mangle {{
		type route hook output priority mangle; policy accept;
		ct mark & {MARK_MASK:#x} == {CONN_MARK:#x} meta mark set ct mark
	}}
	chain prerouting-nat {{
		type nat hook prerouting priority dstnat; policy accept;
		meta l4proto tcp ip saddr {PROBE_SNAT_V4} accept
		meta l4proto tcp ip6 saddr {PROBE_SNAT_V6} accept
		meta l4proto tcp ip daddr != 127.0.0.1 tcp dport != {HBONE_PORT} {m} != {INPOD_MARK:#x} redirect to :{INBOUND_PLAINTEXT_PORT}
		meta l4proto tcp ip6 daddr != ::1 tcp dport != {HBONE_PORT} {m} != {INPOD_MARK:#x} redirect to :{INBOUND_PLAINTEXT_PORT}
	}}
	chain output-nat {{
		type nat hook output priority -100; policy accept;
		meta l4proto tcp ip daddr {PROBE_SNAT_V4} accept
		meta l4proto tcp ip6 daddr {PROBE_SNAT_V6} accept
		meta l4proto tcp {m} == {CONN_MARK:#x} accept
		oifname \"lo\" ip daddr != 127.0.0.1 accept
		oifname \"lo\" ip6 daddr != ::1 accept
		meta l4proto tcp ip daddr != 127.0.0.1 {m} != {INPOD_MARK:#x} redirect to :{OUTBOUND_PORT}
		meta l4proto tcp ip6 daddr != ::1 {m} != {INPOD_MARK:#x} redirect to :{OUTBOUND_PORT}
	}}
}}
",
        keep = !MARK_MASK,
    )
}

/// Installs the rules and the policy route in `netns`, replacing any
/// earlier version. Returns the table as nft lists it, to compare later.
pub fn install(netns: &Netns) -> Result<String, RedirectError> {
    // The route first: once the rules exist, replies must find it.
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
    run(netns, "nft", &["-f", "-"], Some(ruleset().as_bytes()))?;
    listing(netns)?.ok_or_else(|| RedirectError::Failed {
        command: "nft list table".into(),
        stderr: "the table is missing right after it was installed".into(),
    })
}

/// The table as installed now, or `None` when it is gone.
pub fn listing(netns: &Netns) -> Result<Option<String>, RedirectError> {
    match run(netns, "nft", &["list", "table", "inet", TABLE], None) {
        Ok(out) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
        Err(RedirectError::Failed { stderr, .. }) if stderr.contains("No such file") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the rules and the route (releasing the pod).
pub fn remove(netns: &Netns) -> Result<(), RedirectError> {
    let table_gone = match run(netns, "nft", &["delete", "table", "inet", TABLE], None) {
        Ok(_) => Ok(()),
        Err(RedirectError::Failed { stderr, .. }) if stderr.contains("No such file") => Ok(()),
        Err(e) => Err(e),
    };
    delete_route_rules(netns);
    for v in ["-4", "-6"] {
        let _ = ip(netns, &format!("{v} route flush table {ROUTE_TABLE}"));
    }
    table_gone
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_carries_the_contract() {
        let r = ruleset();
        // Replacing the table is one transaction: add, delete, define.
        assert!(r.starts_with("table inet mesh-ambient\ndelete table inet mesh-ambient\n"));
        for needle in [
            "meta mark & 0xfff == 0x539 ct mark set ct mark & 0xfffff000 | 0x111",
            "ct mark & 0xfff == 0x111 meta mark set ct mark",
            "ip saddr 169.254.7.127 accept",
            "tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006",
            "meta l4proto tcp meta mark & 0xfff == 0x111 accept",
            "oifname \"lo\" ip daddr != 127.0.0.1 accept",
            "ip daddr != 127.0.0.1 meta mark & 0xfff != 0x539 redirect to :15001",
        ] {
            assert!(r.contains(needle), "missing {needle:?} in\n{r}");
        }
    }
}

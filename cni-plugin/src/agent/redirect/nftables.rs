//! In-pod redirection with native nftables, equivalent to
//! `../shared/spec/dataplane.md` §5.2: inbound TCP (except HBONE on 15008)
//! to ztunnel's 15006, outbound TCP to 15001, with ztunnel's own sockets
//! (mark 0x539) and the replies on connections it opened with the client's
//! address (connmark 0x111, routed back to it through table 100) exempt,
//! and kubelet probes (SNATed to 169.254.7.127 on the node) never captured.
//!
//! Everything lives in one table, `inet mesh-ambient`, replaced in a single
//! nft transaction: a pod has all of the rules or none of them.

use mesh_netns::Netns;

use super::{
    CONN_MARK, HBONE_PORT, INBOUND_PLAINTEXT_PORT, INPOD_MARK, MARK_MASK, OUTBOUND_PORT,
    PROBE_SNAT_V4, PROBE_SNAT_V6, RedirectError, run,
};

pub const TABLE: &str = "mesh-ambient";

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

/// Installs the rules in `netns`, replacing any earlier version. Returns
/// the table as nft lists it, to compare later.
pub fn install(netns: &Netns) -> Result<String, RedirectError> {
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

/// Removes the table (releasing the pod).
pub fn remove(netns: &Netns) -> Result<(), RedirectError> {
    match run(netns, "nft", &["delete", "table", "inet", TABLE], None) {
        Ok(_) => Ok(()),
        Err(RedirectError::Failed { stderr, .. }) if stderr.contains("No such file") => Ok(()),
        Err(e) => Err(e),
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

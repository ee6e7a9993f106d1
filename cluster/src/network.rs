//! The cluster's wiring on the host: a bridge with the API server's
//! address, and one network namespace per node with an uplink to it.
//! Pod routes are host-gw style: every node, and the host, route each
//! node's pod range to that node's address on the bridge.

use crate::config::{BRIDGE, BRIDGE_PREFIX_LEN, HOST_IP, Node, PREFIX};
use crate::host::{CommandError, ip, ip_in, run};

/// The bridge, idempotently.
pub fn bridge_up() -> Result<(), CommandError> {
    if ip(&["link", "show", BRIDGE]).is_err() {
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    }
    ip(&[
        "addr",
        "replace",
        &format!("{HOST_IP}/{BRIDGE_PREFIX_LEN}"),
        "dev",
        BRIDGE,
    ])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    Ok(())
}

/// The node's namespace and uplink, idempotently (a restarted node
/// simulator finds them made).
pub fn node_up(node: &Node) -> Result<(), CommandError> {
    let exists = ip(&["netns", "list"])?
        .lines()
        .any(|line| line.split_whitespace().next() == Some(node.netns.as_str()));
    if !exists {
        ip(&["netns", "add", &node.netns])?;
    }
    // The uplink is made whole or again: a host end left from a namespace
    // that was just deleted (its peer goes asynchronously) is removed.
    if ip_in(&node.netns, &["link", "show", "eth0"]).is_err() {
        let _ = ip(&["link", "del", &node.veth]);
        ip(&[
            "link",
            "add",
            &node.veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &node.netns,
        ])?;
    }
    ip(&["link", "set", &node.veth, "master", BRIDGE, "up"])?;
    ip_in(&node.netns, &["link", "set", "lo", "up"])?;
    ip_in(
        &node.netns,
        &[
            "addr",
            "replace",
            &format!("{}/{BRIDGE_PREFIX_LEN}", node.ip),
            "dev",
            "eth0",
        ],
    )?;
    ip_in(&node.netns, &["link", "set", "eth0", "up"])?;
    // Pods on the node's bridge reach Services through kube-proxy's rules
    // also when the endpoint is on the same bridge (the reply must pass
    // conntrack), as on a kubeadm node with br_netfilter.
    sysctl_in(&node.netns, "net.bridge.bridge-nf-call-iptables=1")?;
    ip_in(
        &node.netns,
        &["route", "replace", "default", "via", &HOST_IP.to_string()],
    )?;
    // A node forwards between its pods and the bridge.
    sysctl_in(&node.netns, "net.ipv4.ip_forward=1")?;
    Ok(())
}

/// `sysctl -w setting` inside a network namespace.
fn sysctl_in(netns: &str, setting: &str) -> Result<(), CommandError> {
    run("ip", &["netns", "exec", netns, "sysctl", "-qw", setting]).map(drop)
}

/// Routes `cidr` (a node's pod range) to `via` (that node), on the host
/// or, with `netns`, inside another node.
pub fn pod_route(netns: Option<&str>, cidr: &str, via: &str) -> Result<(), CommandError> {
    let args = ["route", "replace", cidr, "via", via];
    match netns {
        Some(netns) => ip_in(netns, &args).map(drop),
        None => ip(&args).map(drop),
    }
}

/// Removes every node and pod namespace (killing what still runs in
/// them) and the bridge, whoever made them: the
/// veths go with their namespaces, the host's pod routes with the bridge.
/// Returns what was removed.
pub fn teardown() -> Vec<String> {
    let mut removed = Vec::new();
    let prefix = format!("{PREFIX}-");
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if !name.starts_with(&prefix) {
                continue;
            }
            // Pods' processes left by a node that died go with their
            // namespace: a namespace is removed only when nothing runs in it.
            for pid in ip(&["netns", "pids", name]).unwrap_or_default().lines() {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    removed.push(format!("process {pid} in {name}"));
                }
            }
            if ip(&["netns", "del", name]).is_ok() {
                removed.push(format!("network namespace {name}"));
            }
        }
    }
    if ip(&["link", "show", BRIDGE]).is_ok() && ip(&["link", "del", BRIDGE]).is_ok() {
        removed.push(format!("bridge {BRIDGE}"));
    }
    removed
}

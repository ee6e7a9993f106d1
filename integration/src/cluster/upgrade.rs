//! Replacing a node's ztunnel the way a DaemonSet rollout does: the new one
//! starts beside the old (its pod listeners join the old ones through
//! `SO_REUSEPORT`, the node agent sends it the snapshot), becomes ready,
//! and only then is the old one told to drain.

use super::Cluster;
use super::host::Proc;

/// Where a ztunnel's node-level endpoints listen. In Kubernetes each
/// ztunnel pod has a network namespace of its own; here both share the
/// node's, so the second one needs other ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZtunnelPorts {
    pub admin: u16,
    pub stats: u16,
    pub readiness: u16,
}

impl ZtunnelPorts {
    /// ztunnel's defaults.
    pub const STANDARD: Self = Self {
        admin: 15000,
        stats: 15020,
        readiness: 15021,
    };
    /// The other set, for a ztunnel started beside one on the standard ports.
    pub const SPARE: Self = Self {
        admin: 15100,
        stats: 15120,
        readiness: 15121,
    };

    /// The port of this set standing for the standard `port`.
    pub fn instead_of(self, port: u16) -> u16 {
        match port {
            p if p == Self::STANDARD.admin => self.admin,
            p if p == Self::STANDARD.stats => self.stats,
            p if p == Self::STANDARD.readiness => self.readiness,
            p => p,
        }
    }

    fn other(self) -> Self {
        if self == Self::STANDARD {
            Self::SPARE
        } else {
            Self::STANDARD
        }
    }

    pub(super) fn env(self) -> [(&'static str, String); 3] {
        [
            ("ADMIN_ADDR", format!("127.0.0.1:{}", self.admin)),
            ("STATS_ADDR", format!("[::]:{}", self.stats)),
            ("READINESS_ADDR", format!("[::]:{}", self.readiness)),
        ]
    }
}

impl Cluster {
    /// Starts a second ztunnel on `node`, beside the running one, and waits
    /// until it is ready: it has its xDS state and has taken every pod of
    /// the node agent's snapshot.
    pub fn start_successor_ztunnel(&mut self, node: &str) {
        let i = self.node_index(node);
        assert!(
            self.nodes[i].successor.is_none(),
            "{node} already has a second ztunnel"
        );
        let ports = self.nodes[i].ztunnel_ports.other();
        let proc = self.spawn_ztunnel(i, ports);
        self.nodes[i].successor = Some((proc, ports));
        self.wait_for(&format!("the second ztunnel on {node} is ready"), |c| {
            let url = format!("http://127.0.0.1:{}/healthz/ready", ports.readiness);
            super::curl_status_in(&c.node(node).netns, &[&url]).status == 200
        });
    }

    /// The pid of the second ztunnel on `node`.
    pub fn successor_ztunnel_pid(&self, node: &str) -> u32 {
        self.node(node)
            .successor
            .as_ref()
            .map(|(p, _)| p.pid())
            .unwrap_or_else(|| panic!("no second ztunnel runs on {node}"))
    }

    /// Makes the second ztunnel the node's ztunnel, once the first has
    /// exited: from then on `ztunnel_http`, `signal_ztunnel` and the rest
    /// address it.
    pub fn promote_successor_ztunnel(&mut self, node: &str) {
        let i = self.node_index(node);
        let (proc, ports): (Proc, _) = self.nodes[i]
            .successor
            .take()
            .unwrap_or_else(|| panic!("no second ztunnel runs on {node}"));
        self.nodes[i].ztunnel = Some(proc);
        self.nodes[i].ztunnel_ports = ports;
    }
}

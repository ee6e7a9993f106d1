//! What the CNI plugin and the node agent say to each other over the
//! agent's unix stream socket: one JSON [`PluginEvent`] per connection, one
//! JSON [`AgentReply`] back, each a single line.
//!
//! The agent decides enrollment when it can be reached; the plugin decides
//! itself (from the same model) only to know whether an unreachable agent
//! must fail the pod's creation.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the agent listens unless the network config says otherwise.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/mesh-cni/plugin.sock";

/// The CNI operation the plugin is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Add,
    Del,
    Check,
}

/// One pod sandbox event, as the container runtime described it to the plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginEvent {
    pub command: Command,
    pub container_id: String,
    /// `CNI_NETNS`: a path to the pod's network namespace. Empty on a DEL
    /// whose namespace is already gone.
    pub netns: PathBuf,
    pub pod_name: String,
    pub pod_namespace: String,
    /// `K8S_POD_UID` when the runtime passes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The addresses the earlier plugins in the chain gave the pod.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
}

/// The agent's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AgentReply {
    /// The pod is in the mesh and captured (ADD), released (DEL), or its
    /// capture is intact (CHECK).
    Captured,
    /// The pod is not in the mesh; nothing was done to it.
    NotEnrolled,
    /// The pod is in the mesh and could not be captured: the plugin fails.
    Error { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_stable() {
        let e = PluginEvent {
            command: Command::Add,
            container_id: "c1".into(),
            netns: "/var/run/netns/p1".into(),
            pod_name: "web".into(),
            pod_namespace: "apps".into(),
            pod_uid: None,
            ips: vec!["10.244.1.5".parse().unwrap()],
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"command":"ADD","containerId":"c1","netns":"/var/run/netns/p1","podName":"web","podNamespace":"apps","ips":["10.244.1.5"]}"#
        );
        let r = AgentReply::Error {
            message: "ztunnel is not connected".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"error":{"message":"ztunnel is not connected"}}"#
        );
        assert_eq!(
            serde_json::to_string(&AgentReply::Captured).unwrap(),
            r#""captured""#
        );
    }
}

//! The capture of enrolled pods for ztunnel.
//!
//! - [`plugin`]: the chained CNI plugin `mesh-cni`, run by the container
//!   runtime for every pod sandbox; it asks the node agent to capture
//!   enrolled pods and fails closed when it cannot.
//! - [`agent`]: the node agent `cni-agent`: in-pod nftables redirection, the
//!   ZDS server ztunnel connects to, and reconciliation with the model.
//! - [`protocol`]: what the plugin and the agent say to each other.

pub mod agent;
pub mod plugin;
pub mod protocol;

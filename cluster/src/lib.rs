//! The local Kubernetes cluster: Kubernetes' own control-plane components
//! built from their published modules (`cargo xtask cluster build`) and run
//! as processes on this machine, with nodes simulated in network
//! namespaces. `up`, `down` and `status` are in [`lifecycle`]; the node
//! simulator is [`node`].

pub mod addons;
pub mod api;
pub mod cni;
pub mod config;
pub mod control_plane;
pub mod host;
pub mod kubeconfig;
pub mod lifecycle;
pub mod network;
pub mod node;
pub mod pki;
pub mod processes;

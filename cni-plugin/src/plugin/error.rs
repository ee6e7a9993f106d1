//! Everything that fails a plugin run, with the CNI error code the runtime
//! sees and a hint for the operator.

use std::path::PathBuf;

use mesh_model::enrollment::Enrollment;

use super::client::AgentError;
use super::enrollment::{Undecided, describe};
use super::invocation::{EnvError, PodRef};
use super::netconf::ConfigError;

/// The CNI spec's well-known error codes we use.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Our own failures (the value libcni's `ErrInternal` uses).
    pub const INTERNAL: u32 = 999;
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the network config from stdin: {0}")]
    Stdin(std::io::Error),
    /// The agent answered that it could not capture an enrolled pod.
    #[error("pod {pod} is in the mesh but could not be captured: {message}")]
    CaptureFailed { pod: PodRef, message: String },
    /// The agent is unreachable and the pod is in the mesh.
    #[error(
        "pod {pod} is in the mesh ({}) but the node agent at {} is unreachable: \
         {agent}; refusing to start it without capture",
        describe(*.reason), .socket.display()
    )]
    AgentUnreachable {
        pod: PodRef,
        reason: Enrollment,
        socket: PathBuf,
        agent: AgentError,
    },
    /// The agent is unreachable and we cannot tell whether the pod is in
    /// the mesh.
    #[error(
        "pod {pod} may be in the mesh, but the node agent at {} is unreachable: {agent}, \
         and {undecided}; refusing to start it without capture",
        .socket.display()
    )]
    Undecided {
        pod: PodRef,
        socket: PathBuf,
        agent: AgentError,
        /// Boxed: the rarest variant should not make every `Result` large.
        undecided: Box<Undecided>,
    },
}

impl PluginError {
    /// The `code` of the CNI error result.
    pub fn code(&self) -> u32 {
        match self {
            PluginError::Env(_) => code::INVALID_ENVIRONMENT,
            PluginError::Config(e) => match e {
                ConfigError::Syntax(_) => code::DECODING_FAILURE,
                ConfigError::UnsupportedVersion(_) | ConfigError::CheckUnsupported(_) => {
                    code::INCOMPATIBLE_VERSION
                }
                ConfigError::Invalid { .. }
                | ConfigError::NoPrevResult
                | ConfigError::BadPrevResult(_) => code::INVALID_NETWORK_CONFIG,
            },
            PluginError::Stdin(_) => code::IO_FAILURE,
            PluginError::CaptureFailed { .. }
            | PluginError::AgentUnreachable { .. }
            | PluginError::Undecided { .. } => code::INTERNAL,
        }
    }

    /// The `details` of the CNI error result: what the operator can do.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            PluginError::Config(ConfigError::NoPrevResult) => {
                "list mesh-cni after the plugin that sets up the pod's interface and addresses \
                 in the conflist's `plugins`"
                    .into()
            }
            PluginError::CaptureFailed { .. } => {
                "the node agent (cni-agent) on this node logs why; the runtime retries the pod"
                    .into()
            }
            PluginError::AgentUnreachable { socket, .. } => format!(
                "check that the node agent (cni-agent) on this node is running and listening \
                 on {}; the runtime retries the pod",
                socket.display()
            ),
            PluginError::Undecided { undecided, .. }
                if matches!(**undecided, Undecided::NoManifestDir) =>
            {
                "start the node agent (cni-agent) on this node, or set `manifestDir` in the \
                  mesh-cni network config so pods outside the mesh can start without it"
                    .into()
            }
            PluginError::Undecided { .. } => {
                "start the node agent (cni-agent) on this node, or repair `manifestDir`".into()
            }
            PluginError::Env(_) | PluginError::Config(_) | PluginError::Stdin(_) => return None,
        })
    }
}

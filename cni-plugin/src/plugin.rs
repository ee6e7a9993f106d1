//! The chained CNI plugin `mesh-cni` (CNI spec 1.0.0; configs 0.3.0 to
//! 1.0.0). The container runtime runs it after the plugin that gives a pod
//! its interface and addresses; it asks the node agent to capture the pod
//! and passes the previous result through unchanged.
//!
//! - ADD: the agent captures enrolled pods. An agent error fails the pod.
//!   An unreachable agent fails the pod only if it is in the mesh, decided
//!   from `manifestDir` ([`enrollment`]); pods outside the mesh are never
//!   disturbed, pods in it never run uncaptured (fail closed).
//! - CHECK: the same question, without output.
//! - DEL: best effort; it always succeeds, as the runtime needs it to.
//! - Sandboxes that are not Kubernetes pods (no `K8S_POD_*` in `CNI_ARGS`)
//!   pass through without contacting the agent.
//!
//! **Architecture Invariant:** the plugin reads no process state. The
//! binary collects the environment and stdin and hands them to [`run`];
//! everything else is a function of those two, so tests drive the plugin
//! with explicit maps and bytes.

mod client;
mod enrollment;
mod error;
mod invocation;
mod netconf;
mod result;

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::{debug, info, warn};

pub use client::{AgentClient, AgentError, DEFAULT_AGENT_TIMEOUT};
pub use enrollment::Undecided;
pub use error::{PluginError, code};
pub use invocation::{CniCommand, EnvError, Invocation, PodRef};
pub use netconf::{
    ConfigError, NetConf, SPEC_VERSION, SUPPORTED_VERSIONS, peek_log_level, peek_version,
};
pub use result::{Output, version_info};

use crate::protocol::{AgentReply, Command, PluginEvent};

/// Runs the plugin with the default agent timeout: the binary's entry point.
pub fn run(env: &BTreeMap<String, String>, stdin: &[u8]) -> Output {
    Plugin::default().run(env, stdin)
}

/// The plugin, with the settings that are not part of the network config.
#[derive(Clone, Debug)]
pub struct Plugin {
    /// How long to wait for the agent, connect to reply, before deciding
    /// without it.
    pub agent_timeout: Duration,
}

impl Default for Plugin {
    fn default() -> Self {
        Self {
            agent_timeout: DEFAULT_AGENT_TIMEOUT,
        }
    }
}

impl Plugin {
    /// One invocation: `env` holds the `CNI_*` variables, `stdin` the
    /// network config.
    pub fn run(&self, env: &BTreeMap<String, String>, stdin: &[u8]) -> Output {
        match self.execute(env, stdin) {
            Ok(stdout) => Output::success(stdout),
            Err(error) => {
                warn!("{error}");
                let version = netconf::peek_version(stdin)
                    .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
                    .unwrap_or_else(|| SPEC_VERSION.to_string());
                Output::failure(&version, &error)
            }
        }
    }

    fn execute(&self, env: &BTreeMap<String, String>, stdin: &[u8]) -> Result<String, PluginError> {
        let invocation = Invocation::from_env(env)?;
        match invocation.command {
            CniCommand::Version => Ok(version_info()),
            CniCommand::Add => self.add(&invocation, &NetConf::parse(stdin)?),
            CniCommand::Check => {
                self.check(&invocation, &NetConf::parse(stdin)?)?;
                Ok(String::new())
            }
            CniCommand::Del => {
                self.del(&invocation, &NetConf::parse(stdin)?);
                Ok(String::new())
            }
        }
    }

    fn add(&self, invocation: &Invocation, conf: &NetConf) -> Result<String, PluginError> {
        let result = conf.pass_through()?;
        let Some(pod) = &invocation.pod else {
            debug!(container = %invocation.container_id, "not a Kubernetes pod; passing it through");
            return Ok(result);
        };
        let event = event(Command::Add, invocation, pod, conf.pod_ips()?);
        self.ask(conf, pod, &event)?;
        Ok(result)
    }

    fn check(&self, invocation: &Invocation, conf: &NetConf) -> Result<(), PluginError> {
        conf.ensure_check_supported()?;
        conf.prev_result()?;
        let Some(pod) = &invocation.pod else {
            return Ok(());
        };
        let event = event(Command::Check, invocation, pod, conf.pod_ips()?);
        self.ask(conf, pod, &event)
    }

    /// DEL never fails on the agent's account: the runtime retries a failed
    /// DEL forever, and the pod is going away regardless.
    fn del(&self, invocation: &Invocation, conf: &NetConf) {
        let Some(pod) = &invocation.pod else {
            return;
        };
        let ips = conf.pod_ips().unwrap_or_else(|e| {
            warn!(%pod, "ignoring prevResult on DEL: {e}");
            Vec::new()
        });
        let event = event(Command::Del, invocation, pod, ips);
        let agent = AgentClient::new(&conf.agent_socket, self.agent_timeout);
        match agent.send(&event) {
            Ok(AgentReply::Error { message }) => {
                warn!(%pod, "the node agent could not release the pod: {message}; DEL succeeds anyway")
            }
            Ok(reply) => debug!(%pod, ?reply, "released"),
            Err(e) => warn!(
                %pod, socket = %conf.agent_socket.display(),
                "the node agent is unreachable: {e}; DEL succeeds anyway"
            ),
        }
    }

    /// ADD and CHECK: the agent's verdict, or our own when it cannot be
    /// reached.
    fn ask(&self, conf: &NetConf, pod: &PodRef, event: &PluginEvent) -> Result<(), PluginError> {
        let agent = AgentClient::new(&conf.agent_socket, self.agent_timeout);
        match agent.send(event) {
            Ok(AgentReply::Captured) => {
                info!(%pod, command = ?event.command, "captured");
                Ok(())
            }
            Ok(AgentReply::NotEnrolled) => {
                debug!(%pod, command = ?event.command, "not in the mesh");
                Ok(())
            }
            Ok(AgentReply::Error { message }) => Err(PluginError::CaptureFailed {
                pod: pod.clone(),
                message,
            }),
            Err(agent) => decide_without_agent(conf, pod, agent),
        }
    }
}

/// Starts the pod only if it is certainly outside the mesh.
fn decide_without_agent(
    conf: &NetConf,
    pod: &PodRef,
    agent: AgentError,
) -> Result<(), PluginError> {
    let socket = conf.agent_socket.clone();
    match enrollment::decide(pod, conf.manifest_dir.as_deref(), &conf.excluded_namespaces) {
        Ok(e) if e.is_ambient() => Err(PluginError::AgentUnreachable {
            pod: pod.clone(),
            reason: e,
            socket,
            agent,
        }),
        Ok(e) => {
            warn!(
                %pod, socket = %socket.display(),
                "the node agent is unreachable ({agent}); the pod is not in the mesh ({}), \
                 so it starts without capture",
                enrollment::describe(e)
            );
            Ok(())
        }
        Err(undecided) => Err(PluginError::Undecided {
            pod: pod.clone(),
            socket,
            agent,
            undecided: Box::new(undecided),
        }),
    }
}

fn event(
    command: Command,
    invocation: &Invocation,
    pod: &PodRef,
    ips: Vec<std::net::IpAddr>,
) -> PluginEvent {
    PluginEvent {
        command,
        container_id: invocation.container_id.clone(),
        netns: invocation.netns.clone(),
        pod_name: pod.name.clone(),
        pod_namespace: pod.namespace.clone(),
        pod_uid: invocation.pod_uid.clone(),
        ips,
    }
}

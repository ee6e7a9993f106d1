//! What the container runtime tells the plugin through the environment:
//! the command, the sandbox, and (in `CNI_ARGS`) which Kubernetes pod it is.
//!
//! **Architecture Invariant:** nothing here reads the process environment;
//! [`Invocation::from_env`] takes the variables as a map, so the plugin runs
//! the same under test as under the runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

pub const CNI_COMMAND: &str = "CNI_COMMAND";
pub const CNI_CONTAINERID: &str = "CNI_CONTAINERID";
pub const CNI_NETNS: &str = "CNI_NETNS";
pub const CNI_ARGS: &str = "CNI_ARGS";
// `CNI_IFNAME` and `CNI_PATH` are not read: the plugin neither creates an
// interface nor delegates to other plugins.

/// The `CNI_ARGS` keys the Kubernetes runtimes (containerd, CRI-O) set.
pub const K8S_POD_NAME: &str = "K8S_POD_NAME";
pub const K8S_POD_NAMESPACE: &str = "K8S_POD_NAMESPACE";
pub const K8S_POD_UID: &str = "K8S_POD_UID";

/// A problem with the environment the runtime gave us (CNI error code 4).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{key} is not set; the container runtime must set it for {command}")]
    Missing {
        key: &'static str,
        command: &'static str,
    },
    #[error("CNI_COMMAND={0:?} is not one of ADD, DEL, CHECK, VERSION")]
    UnknownCommand(String),
    #[error("CNI_ARGS={args:?}: {problem}")]
    Args { args: String, problem: String },
}

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Version,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Version => "VERSION",
        }
    }
}

/// A Kubernetes pod, as `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One run of the plugin, as the environment describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub command: CniCommand,
    /// `CNI_CONTAINERID`; empty for VERSION.
    pub container_id: String,
    /// `CNI_NETNS`; empty for VERSION, and for a DEL whose namespace is gone.
    pub netns: PathBuf,
    /// The pod, when `CNI_ARGS` names one; `None` for sandboxes that are not
    /// Kubernetes pods, which the plugin passes through untouched.
    pub pod: Option<PodRef>,
    /// `K8S_POD_UID`, when the runtime passes it.
    pub pod_uid: Option<String>,
}

impl Invocation {
    /// Reads the `CNI_*` variables from `env`. VERSION needs nothing but
    /// `CNI_COMMAND`; ADD and CHECK need a container and a network namespace;
    /// DEL needs a container only.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, EnvError> {
        let get = |key: &str| env.get(key).map(String::as_str).filter(|v| !v.is_empty());
        let command = match get(CNI_COMMAND) {
            Some("ADD") => CniCommand::Add,
            Some("DEL") => CniCommand::Del,
            Some("CHECK") => CniCommand::Check,
            Some("VERSION") => CniCommand::Version,
            Some(other) => return Err(EnvError::UnknownCommand(other.to_string())),
            None => {
                return Err(EnvError::Missing {
                    key: CNI_COMMAND,
                    command: "any command",
                });
            }
        };
        let mut invocation = Invocation {
            command,
            container_id: String::new(),
            netns: PathBuf::new(),
            pod: None,
            pod_uid: None,
        };
        if command == CniCommand::Version {
            return Ok(invocation);
        }
        let require = |key: &'static str| {
            get(key).ok_or(EnvError::Missing {
                key,
                command: command.as_str(),
            })
        };
        invocation.container_id = require(CNI_CONTAINERID)?.to_string();
        invocation.netns = match command {
            CniCommand::Del => get(CNI_NETNS).unwrap_or_default().into(),
            _ => require(CNI_NETNS)?.into(),
        };
        let args = parse_args(get(CNI_ARGS).unwrap_or_default())?;
        let arg = |key: &str| args.get(key).copied().filter(|v| !v.is_empty());
        invocation.pod = match (arg(K8S_POD_NAMESPACE), arg(K8S_POD_NAME)) {
            (Some(namespace), Some(name)) => Some(PodRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(EnvError::Args {
                    args: get(CNI_ARGS).unwrap_or_default().to_string(),
                    problem: format!(
                        "names a pod only half: {K8S_POD_NAME} and {K8S_POD_NAMESPACE} \
                         must be set together"
                    ),
                });
            }
        };
        invocation.pod_uid = arg(K8S_POD_UID).map(str::to_string);
        Ok(invocation)
    }
}

/// `CNI_ARGS`: `K=V` pairs separated by `;`. Empty segments (a trailing
/// `;`) are tolerated; a segment without `=` is an error.
fn parse_args(args: &str) -> Result<BTreeMap<&str, &str>, EnvError> {
    let mut out = BTreeMap::new();
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(EnvError::Args {
                args: args.to_string(),
                problem: format!("{pair:?} is not a KEY=VALUE pair"),
            });
        };
        out.insert(k, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_a_kubernetes_add() {
        let inv = Invocation::from_env(&env(&[
            (CNI_COMMAND, "ADD"),
            (CNI_CONTAINERID, "c1"),
            (CNI_NETNS, "/var/run/netns/p1"),
            (
                CNI_ARGS,
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=apps;K8S_POD_NAME=web;\
                 K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u-1",
            ),
        ]))
        .unwrap();
        assert_eq!(inv.command, CniCommand::Add);
        assert_eq!(inv.container_id, "c1");
        assert_eq!(inv.netns, PathBuf::from("/var/run/netns/p1"));
        assert_eq!(inv.pod.unwrap().to_string(), "apps/web");
        assert_eq!(inv.pod_uid.as_deref(), Some("u-1"));
    }

    #[test]
    fn version_needs_only_the_command() {
        let inv = Invocation::from_env(&env(&[(CNI_COMMAND, "VERSION")])).unwrap();
        assert_eq!(inv.command, CniCommand::Version);
    }

    #[test]
    fn del_tolerates_a_missing_netns() {
        let inv =
            Invocation::from_env(&env(&[(CNI_COMMAND, "DEL"), (CNI_CONTAINERID, "c1")])).unwrap();
        assert_eq!(inv.netns, PathBuf::new());
        assert_eq!(inv.pod, None);
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "CNI_COMMAND is not set"),
            (&[(CNI_COMMAND, "GC")], "CNI_COMMAND=\"GC\" is not one of"),
            (
                &[(CNI_COMMAND, "ADD"), (CNI_CONTAINERID, "c1")],
                "CNI_NETNS is not set; the container runtime must set it for ADD",
            ),
            (
                &[(CNI_COMMAND, "CHECK"), (CNI_NETNS, "/n")],
                "CNI_CONTAINERID is not set",
            ),
            (
                &[
                    (CNI_COMMAND, "ADD"),
                    (CNI_CONTAINERID, "c1"),
                    (CNI_NETNS, "/n"),
                    (CNI_ARGS, "K8S_POD_NAME=web;oops"),
                ],
                "\"oops\" is not a KEY=VALUE pair",
            ),
            (
                &[
                    (CNI_COMMAND, "ADD"),
                    (CNI_CONTAINERID, "c1"),
                    (CNI_NETNS, "/n"),
                    (CNI_ARGS, "K8S_POD_NAME=web"),
                ],
                "must be set together",
            ),
        ];
        for (vars, want) in cases {
            let err = Invocation::from_env(&env(vars)).unwrap_err().to_string();
            assert!(err.contains(want), "{vars:?}: {err}");
        }
    }
}

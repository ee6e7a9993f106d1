//! The network configuration the runtime writes on stdin: the standard CNI
//! fields, the result of the plugins before us (`prevResult`), and ours.
//!
//! Unknown fields are ignored: runtimes add `runtimeConfig`, `args` and
//! whatever the conflist carries for other plugins.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::protocol::DEFAULT_AGENT_SOCKET;

/// The spec version our results are written in.
pub const SPEC_VERSION: &str = "1.0.0";
/// The config versions we accept. All of them put the addresses in
/// `prevResult.ips[].address`.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// CHECK came with 0.4.0.
const CHECK_VERSIONS: [&str; 2] = ["0.4.0", "1.0.0"];

/// The namespaces never captured unless the config says otherwise.
pub const DEFAULT_EXCLUDED_NAMESPACES: [&str; 1] = ["kube-system"];

/// A network config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON at all (CNI error code 6).
    #[error("the network config on stdin is not valid JSON: {0}")]
    Syntax(serde_json::Error),
    /// JSON, but a field has the wrong shape (CNI error code 7).
    #[error("the network config on stdin is invalid: {}{error}", field_prefix(.path))]
    Invalid {
        /// Where in the config, e.g. `excludedNamespaces`; `.` for the top.
        path: String,
        error: serde_json::Error,
    },
    #[error(
        "cniVersion {0:?} is not supported; mesh-cni supports {versions}",
        versions = SUPPORTED_VERSIONS.join(", ")
    )]
    UnsupportedVersion(String),
    #[error("CHECK is not defined for cniVersion {0:?}; it needs 0.4.0 or later")]
    CheckUnsupported(String),
    #[error("mesh-cni must run chained after a plugin that assigns addresses (no prevResult)")]
    NoPrevResult,
    #[error("prevResult is not what a CNI plugin returns: {0}")]
    BadPrevResult(String),
}

fn field_prefix(path: &str) -> String {
    if path == "." {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// Our plugin's entry in the conflist.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub plugin_type: String,
    /// What the plugins before us returned; required for ADD and CHECK.
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// Where the node agent listens.
    #[serde(default = "default_agent_socket")]
    pub agent_socket: PathBuf,
    /// The local mesh's manifest directory. Read only when the agent cannot
    /// be reached, to tell pods outside the mesh (started anyway) from pods
    /// in it (refused, since they would run uncaptured).
    #[serde(default)]
    pub manifest_dir: Option<PathBuf>,
    #[serde(default = "default_excluded_namespaces")]
    pub excluded_namespaces: Vec<String>,
    /// A tracing filter for our stderr diagnostics (`info` by default).
    #[serde(default)]
    pub log_level: Option<String>,
}

fn default_agent_socket() -> PathBuf {
    DEFAULT_AGENT_SOCKET.into()
}

fn default_excluded_namespaces() -> Vec<String> {
    DEFAULT_EXCLUDED_NAMESPACES.map(String::from).to_vec()
}

/// The fields of `prevResult` we read.
#[derive(Deserialize)]
struct PrevResult {
    #[serde(default)]
    ips: Vec<IpConfig>,
}

#[derive(Deserialize)]
struct IpConfig {
    address: String,
}

impl NetConf {
    /// Decodes stdin and checks that we speak its `cniVersion`.
    pub fn parse(stdin: &[u8]) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_slice(stdin).map_err(ConfigError::Syntax)?;
        // serde would read an array positionally (`["1.0.0", "name", ...]`);
        // a network config is an object (found by the cni_config fuzz
        // target, docs/fuzzing.md F2).
        if !value.is_object() {
            return Err(ConfigError::Invalid {
                path: ".".into(),
                error: serde::de::Error::custom("a network config must be a JSON object"),
            });
        }
        let conf: NetConf = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Invalid {
                path,
                error: e.into_inner(),
            }
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(ConfigError::UnsupportedVersion(conf.cni_version));
        }
        Ok(conf)
    }

    /// Fails unless the config's version defines CHECK.
    pub fn ensure_check_supported(&self) -> Result<(), ConfigError> {
        if CHECK_VERSIONS.contains(&self.cni_version.as_str()) {
            Ok(())
        } else {
            Err(ConfigError::CheckUnsupported(self.cni_version.clone()))
        }
    }

    pub fn prev_result(&self) -> Result<&Value, ConfigError> {
        self.prev_result.as_ref().ok_or(ConfigError::NoPrevResult)
    }

    /// What a chained plugin that changes nothing returns: `prevResult`,
    /// in the config's version.
    pub fn pass_through(&self) -> Result<String, ConfigError> {
        let mut result = self.prev_result()?.clone();
        let Some(fields) = result.as_object_mut() else {
            return Err(ConfigError::BadPrevResult("not a JSON object".into()));
        };
        fields.insert("cniVersion".into(), Value::from(self.cni_version.as_str()));
        Ok(result.to_string())
    }

    /// The pod's addresses: `prevResult.ips[].address` without the prefix
    /// length. None when there is no `prevResult` (a DEL may lack one).
    pub fn pod_ips(&self) -> Result<Vec<IpAddr>, ConfigError> {
        let Some(prev) = &self.prev_result else {
            return Ok(Vec::new());
        };
        let prev = PrevResult::deserialize(prev)
            .map_err(|e| ConfigError::BadPrevResult(format!("ips: {e}")))?;
        prev.ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let addr = ip.address.split_once('/').map_or(&*ip.address, |(a, _)| a);
                addr.parse().map_err(|_| {
                    ConfigError::BadPrevResult(format!(
                        "ips[{i}].address {:?} is not an address in CIDR form",
                        ip.address
                    ))
                })
            })
            .collect()
    }
}

/// The `cniVersion` of a config we may not be able to parse, so that even
/// its error is written in a version the runtime reads.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    peek(stdin, "cniVersion")
}

/// The `logLevel` of a config, read before logging is set up.
pub fn peek_log_level(stdin: &[u8]) -> Option<String> {
    peek(stdin, "logLevel")
}

fn peek(stdin: &[u8], field: &str) -> Option<String> {
    let value: Value = serde_json::from_slice(stdin).ok()?;
    value.get(field)?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"k8s","type":"mesh-cni",
                 "runtimeConfig":{"portMappings":[]},"somethingElse":1}"#,
        )
        .unwrap();
        assert_eq!(conf.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
        assert_eq!(conf.excluded_namespaces, vec!["kube-system".to_string()]);
        assert_eq!(conf.manifest_dir, None);
        assert!(matches!(conf.prev_result(), Err(ConfigError::NoPrevResult)));
    }

    #[test]
    fn pod_ips_drop_the_prefix_length() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","prevResult":{"ips":[
                 {"address":"10.244.1.5/24","gateway":"10.244.1.1"},
                 {"address":"fd00::5/64"}]}}"#,
        )
        .unwrap();
        let ips: Vec<String> = conf
            .pod_ips()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ips, ["10.244.1.5", "fd00::5"]);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (b"{\"cniVersion\":", "not valid JSON: EOF"),
            (
                br#"{"cniVersion":"1.0.0","excludedNamespaces":"kube-system"}"#,
                "invalid: excludedNamespaces: invalid type: string",
            ),
            (br#"{"name":"k8s"}"#, "invalid: missing field `cniVersion`"),
            (
                br#"{"cniVersion":"0.2.0"}"#,
                "cniVersion \"0.2.0\" is not supported",
            ),
            // F2: serde would have read this positionally as a config.
            (
                br#"["0.4.0","co","DD",8.3]"#,
                "invalid: a network config must be a JSON object",
            ),
        ];
        for (stdin, want) in cases {
            let err = NetConf::parse(stdin).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{}: {err}",
                String::from_utf8_lossy(stdin)
            );
        }
        let conf =
            NetConf::parse(br#"{"cniVersion":"1.0.0","prevResult":{"ips":[{"address":"x/24"}]}}"#)
                .unwrap();
        let err = conf.pod_ips().unwrap_err().to_string();
        assert!(err.contains("ips[0].address \"x/24\""), "{err}");
    }

    #[test]
    fn check_needs_0_4_0() {
        let old = NetConf::parse(br#"{"cniVersion":"0.3.1"}"#).unwrap();
        assert!(old.ensure_check_supported().is_err());
        let new = NetConf::parse(br#"{"cniVersion":"0.4.0"}"#).unwrap();
        assert!(new.ensure_check_supported().is_ok());
    }
}

//! What the plugin prints on stdout and how it exits: a result, version
//! information, or a CNI error. Nothing else may reach stdout; diagnostics
//! go to stderr.

use serde::Serialize;

use super::error::PluginError;
use super::netconf::{SPEC_VERSION, SUPPORTED_VERSIONS};

/// The outcome of one run, for the binary to print and exit with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Exactly what goes to stdout; may be empty (DEL, CHECK).
    pub stdout: String,
    /// The process exit code: 0 on success, 1 with a CNI error on stdout.
    pub exit_code: u8,
}

impl Output {
    pub fn success(stdout: String) -> Self {
        Self {
            stdout,
            exit_code: 0,
        }
    }

    /// The CNI error result for `error`, written in `cni_version`.
    pub fn failure(cni_version: &str, error: &PluginError) -> Self {
        let result = ErrorResult {
            cni_version,
            code: error.code(),
            msg: error.to_string(),
            details: error.hint(),
        };
        Self {
            stdout: serde_json::to_string(&result)
                .expect("an error result of strings and a number always serializes"),
            exit_code: 1,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorResult<'a> {
    cni_version: &'a str,
    code: u32,
    msg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionResult {
    cni_version: &'static str,
    supported_versions: [&'static str; SUPPORTED_VERSIONS.len()],
}

/// The answer to VERSION.
pub fn version_info() -> String {
    serde_json::to_string(&VersionResult {
        cni_version: SPEC_VERSION,
        supported_versions: SUPPORTED_VERSIONS,
    })
    .expect("version information of static strings always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::netconf::ConfigError;

    #[test]
    fn version_info_is_exact() {
        assert_eq!(
            version_info(),
            r#"{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}"#
        );
    }

    #[test]
    fn errors_carry_code_msg_and_details() {
        let out = Output::failure("0.4.0", &PluginError::Config(ConfigError::NoPrevResult));
        assert_eq!(out.exit_code, 1);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["code"], 7);
        assert_eq!(
            v["msg"],
            "mesh-cni must run chained after a plugin that assigns addresses (no prevResult)"
        );
        assert!(v["details"].as_str().unwrap().contains("conflist"));
    }
}

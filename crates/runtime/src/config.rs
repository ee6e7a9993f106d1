//! What every binary's `config.rs` shares: the error that names the setting,
//! the value and the reason, and the exit code for it.

/// Exit code for an invalid configuration (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key} = {value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable (or flag) that holds the bad value.
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

/// Builds a [`ConfigError`] for `key`.
pub fn invalid(key: &'static str, value: &str, reason: impl ToString) -> ConfigError {
    ConfigError {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// A PEM setting that is either the PEM itself or a file holding it (a
/// root certificate, typically).
pub fn pem_or_file(key: &'static str, setting: String) -> Result<String, ConfigError> {
    if setting.contains("-----BEGIN") {
        return Ok(setting);
    }
    std::fs::read_to_string(&setting).map_err(|e| {
        invalid(
            key,
            &setting,
            format!("cannot read the root certificate: {e} (try `istiod-lite root-cert`)"),
        )
    })
}

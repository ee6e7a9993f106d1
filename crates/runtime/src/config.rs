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

/// An address setting that may be turned off: `none` or empty is `None`,
/// unset is `default`, anything else must parse as `IP:port`.
pub fn optional_addr(
    key: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    match value {
        Some("none" | "") => Ok(None),
        v => {
            let text = v.unwrap_or(default);
            text.parse()
                .map(Some)
                .map_err(|e| invalid(key, text, format!("{e} (an IP:port, or none)")))
        }
    }
}

/// A runtime worker-thread count: unset is `None` (one per core), anything
/// else must be a whole number of at least 1.
pub fn worker_threads(
    key: &'static str,
    value: Option<&str>,
) -> Result<Option<usize>, ConfigError> {
    match value {
        None => Ok(None),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| invalid(key, v, "must be 1 or more")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_are_one_or_more_and_unset_means_per_core() {
        assert_eq!(worker_threads("W", None).unwrap(), None);
        assert_eq!(worker_threads("W", Some("2")).unwrap(), Some(2));
        for bad in ["0", "-1", "two", ""] {
            let e = worker_threads("W", Some(bad)).unwrap_err();
            assert_eq!((e.key, e.value.as_str()), ("W", bad));
        }
    }
}

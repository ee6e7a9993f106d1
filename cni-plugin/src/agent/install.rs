//! Installing the plugin on a Kubernetes node, as the node agent's
//! DaemonSet does at start: `mesh-cni` is copied into the node's CNI
//! binary directory, and an entry for it is appended to the plugin list of
//! the node's primary network config (the first `*.conflist`, `*.conf` or
//! `*.json` by name, as the container runtime picks it). A `.conf` holding a single
//! plugin is turned into a `.conflist` around it.
//!
//! Both writes are atomic (a temporary file, then a rename), so the runtime
//! never reads half a file. Installing again replaces our entry rather
//! than adding a second one. The entry stays when the agent stops: while
//! the agent is away the plugin refuses enrolled pods (they would run
//! uncaptured) and lets the others start.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Our entry's `type`, and the binary's name.
pub const PLUGIN_TYPE: &str = "mesh-cni";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no network config in {0} (*.conflist or *.conf): the node's network plugin must be \
         installed first; the agent retries"
    )]
    NoNetwork(PathBuf),
    #[error("{path} is not a CNI network config: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// What our entry says.
#[derive(Clone, Debug)]
pub struct Entry {
    pub agent_socket: PathBuf,
    pub excluded_namespaces: Vec<String>,
}

impl Entry {
    fn to_json(&self) -> Value {
        json!({
            "type": PLUGIN_TYPE,
            "agentSocket": self.agent_socket,
            "excludedNamespaces": self.excluded_namespaces,
        })
    }
}

/// `config` (a conflist, or a single-plugin conf) with our entry last, in
/// place of any earlier one of ours.
pub fn chain(config: &Value, entry: &Entry) -> Result<Value, String> {
    let mut list = as_conflist(config)?;
    let plugins = list["plugins"]
        .as_array_mut()
        .expect("as_conflist made it a list");
    plugins.retain(|p| p["type"] != PLUGIN_TYPE);
    plugins.push(entry.to_json());
    Ok(list)
}

fn as_conflist(config: &Value) -> Result<Value, String> {
    let Value::Object(m) = config else {
        return Err("not a JSON object".into());
    };
    if let Some(plugins) = m.get("plugins") {
        if !plugins.is_array() {
            return Err("`plugins` is not a list".into());
        }
        return Ok(config.clone());
    }
    let Some(kind) = m.get("type").and_then(Value::as_str) else {
        return Err("neither a `plugins` list nor a plugin `type`".into());
    };
    // A single-plugin .conf: the list keeps its name and version.
    let mut plugin = m.clone();
    let name = plugin.remove("name").unwrap_or_else(|| json!(kind));
    let version = plugin
        .remove("cniVersion")
        .unwrap_or_else(|| json!("1.0.0"));
    Ok(json!({"cniVersion": version, "name": name, "plugins": [Value::Object(plugin)]}))
}

/// The node's primary network config: the first by name.
pub fn primary_config(conf_dir: &Path) -> Result<PathBuf, InstallError> {
    let read = |source| InstallError::Read {
        path: conf_dir.to_path_buf(),
        source,
    };
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .map_err(read)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "conflist" || x == "conf" || x == "json")
        })
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| InstallError::NoNetwork(conf_dir.to_path_buf()))
}

/// Writes `bytes` with `mode` to a temporary file beside `path`, then
/// renames it over `path`: readers see the old file or the whole new one,
/// never a half-written or not-yet-executable one.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    let write = |source| InstallError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("mesh-cni")
    ));
    std::fs::write(&tmp, bytes).map_err(write)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(write)?;
    std::fs::rename(&tmp, path).map_err(write)
}

/// Copies `binary` into `bin_dir` and chains `entry` into the primary
/// config of `conf_dir`. Returns the config file written (a `.conf` is
/// replaced by a `.conflist` of the same stem).
pub fn install(
    binary: &Path,
    bin_dir: &Path,
    conf_dir: &Path,
    entry: &Entry,
) -> Result<PathBuf, InstallError> {
    let bytes = std::fs::read(binary).map_err(|source| InstallError::Read {
        path: binary.to_path_buf(),
        source,
    })?;
    write_atomically(&bin_dir.join(PLUGIN_TYPE), &bytes, 0o755)?;

    let path = primary_config(conf_dir)?;
    let config = read_config(&path)?;
    let chained = chain(&config, entry).map_err(|problem| InstallError::Invalid {
        path: path.clone(),
        problem,
    })?;
    let out = path.with_extension("conflist");
    write_atomically(
        &out,
        serde_json::to_vec_pretty(&chained)
            .unwrap_or_default()
            .as_slice(),
        0o644,
    )?;
    if out != path {
        let _ = std::fs::remove_file(&path);
    }
    Ok(out)
}

fn read_config(path: &Path) -> Result<Value, InstallError> {
    let text = std::fs::read(path).map_err(|source| InstallError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| InstallError::Invalid {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

#[cfg(test)]
mod tests;

//! Log set-up: `RUST_LOG`-style filters, text by default, JSON on request,
//! and a filter that can be changed while the process runs (the admin
//! endpoint's `/logging`, as `istioctl zc log --level` uses it).

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// The filter when none is given.
pub const DEFAULT_FILTER: &str = "info";

struct Live {
    handle: reload::Handle<EnvFilter, Registry>,
    /// What the process started with; `reset` goes back to it.
    initial: String,
    current: Mutex<String>,
}

static LIVE: OnceLock<Live> = OnceLock::new();

/// Why a new filter was refused.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(
        "invalid log filter {filter:?}: {reason} (expected a level such as `debug`, or `target=level,...`)"
    )]
    Invalid { filter: String, reason: String },
    #[error("logging was not set up by mesh_runtime::logging::init")]
    NotInitialized,
}

/// Installs the global subscriber. `filter` defaults to `info`; one that
/// does not parse falls back to `info` with a warning.
pub fn init(filter: Option<&str>, json: bool) {
    let wanted = filter.unwrap_or(DEFAULT_FILTER);
    let (env, bad) = match EnvFilter::try_new(wanted) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e.to_string())),
    };
    let initial = if bad.is_some() {
        DEFAULT_FILTER
    } else {
        wanted
    };
    let (layer, handle) = reload::Layer::new(env);
    // Colours only for a terminal: log files and `kubectl logs` get plain
    // text that grep and log shippers can read.
    use std::io::IsTerminal;
    let format = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal());
    let format = if json {
        format.json().boxed()
    } else {
        format.boxed()
    };
    if tracing_subscriber::registry()
        .with(layer)
        .with(format)
        .try_init()
        .is_ok()
    {
        let _ = LIVE.set(Live {
            handle,
            initial: initial.to_string(),
            current: Mutex::new(initial.to_string()),
        });
    }
    if let Some(reason) = bad {
        tracing::warn!(filter = wanted, %reason, "invalid log filter; using {DEFAULT_FILTER}");
    }
}

fn live() -> Result<&'static Live, FilterError> {
    LIVE.get().ok_or(FilterError::NotInitialized)
}

/// The filter in force.
pub fn current_filter() -> Result<String, FilterError> {
    let live = live()?;
    Ok(live
        .current
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone())
}

/// Replaces the filter, e.g. `debug` or `info,access=debug`.
pub fn set_filter(filter: &str) -> Result<(), FilterError> {
    let invalid = |reason: String| FilterError::Invalid {
        filter: filter.to_string(),
        reason,
    };
    if filter.trim().is_empty() {
        return Err(invalid("empty".into()));
    }
    let parsed = EnvFilter::try_new(filter).map_err(|e| invalid(e.to_string()))?;
    let live = live()?;
    live.handle
        .reload(parsed)
        .map_err(|e| invalid(e.to_string()))?;
    *live.current.lock().unwrap_or_else(|e| e.into_inner()) = filter.to_string();
    Ok(())
}

/// Goes back to the filter the process started with.
pub fn reset_filter() -> Result<(), FilterError> {
    let initial = live()?.initial.clone();
    set_filter(&initial)
}

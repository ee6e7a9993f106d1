//! Log set-up: `RUST_LOG`-style filters, text by default, JSON on request.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `filter` defaults to `info`.
pub fn init(filter: Option<&str>, json: bool) {
    let filter =
        EnvFilter::try_new(filter.unwrap_or("info")).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

use std::process::ExitCode;

use waypoint::app::Waypoint;
use waypoint::config::{Config, EXIT_CONFIG};

fn main() -> ExitCode {
    // LOG_FORMAT=json as Istio's logAsJson sets it.
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json");
    mesh_runtime::logging::init(std::env::var("RUST_LOG").ok().as_deref(), json);
    let config = match Config::from_env(|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("waypoint: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(
        gateway = %format!("{}/{}", config.gateway_namespace, config.gateway_name),
        identity = %config.identity,
        xds = %config.xds.target.address,
        inbound = %config.inbound_addr,
        "effective configuration"
    );
    mesh_runtime::signal::serve(
        "waypoint",
        config.worker_threads,
        Waypoint::start(config),
        |wp: Waypoint| async move { wp.shutdown().await },
    )
}

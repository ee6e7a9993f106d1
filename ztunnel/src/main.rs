use std::process::ExitCode;

use ztunnel::app::Ztunnel;
use ztunnel::config::{Config, EXIT_CONFIG};

fn main() -> ExitCode {
    // LOG_FORMAT=json as Istio's logAsJson sets it.
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json");
    mesh_runtime::logging::init(std::env::var("RUST_LOG").ok().as_deref(), json);
    let config = match Config::from_env(|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ztunnel: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(
        node = %config.node_name,
        mode = ?config.proxy_mode,
        ca = %config.ca.target.address,
        outbound = %config.outbound_addr,
        inbound = ?config.inbound_addrs,
        "effective configuration"
    );
    mesh_runtime::signal::serve(
        "ztunnel",
        config.worker_threads,
        Ztunnel::start(config),
        |zt: Ztunnel| async move { zt.shutdown().await },
    )
}

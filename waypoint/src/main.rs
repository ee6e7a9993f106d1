use std::process::ExitCode;

use waypoint::app::Waypoint;
use waypoint::config::{Config, EXIT_CONFIG};

fn main() -> ExitCode {
    mesh_runtime::logging::init(std::env::var("RUST_LOG").ok().as_deref(), false);
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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("waypoint: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = rt.block_on(async {
        let wp = Waypoint::start(config).await?;
        let signal = mesh_runtime::signal::shutdown().await?;
        tracing::info!(signal, "draining");
        wp.shutdown().await;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waypoint: {e:#}");
            ExitCode::FAILURE
        }
    }
}

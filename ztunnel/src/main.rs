use std::process::ExitCode;

use ztunnel::app::Ztunnel;
use ztunnel::config::{Config, EXIT_CONFIG};

fn main() -> ExitCode {
    mesh_runtime::logging::init(std::env::var("RUST_LOG").ok().as_deref(), false);
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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ztunnel: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = rt.block_on(async {
        let zt = Ztunnel::start(config).await?;
        let signal = mesh_runtime::signal::shutdown().await?;
        tracing::info!(signal, "draining");
        zt.shutdown().await;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ztunnel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

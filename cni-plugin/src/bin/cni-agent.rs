//! `cni-agent`: the node agent. Flags and environment are parsed by
//! [`cni_plugin::agent::Config`]; everything else is in [`cni_plugin::agent`].

use std::process::ExitCode;

use clap::Parser;
use cni_plugin::agent::{Agent, Config};

fn main() -> ExitCode {
    mesh_runtime::logging::init(std::env::var("RUST_LOG").ok().as_deref(), false);
    let config = Config::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cni-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = rt.block_on(async {
        let agent = Agent::start(config).await?;
        let signal = mesh_runtime::signal::shutdown().await?;
        tracing::info!(signal, "stopping");
        agent.shutdown().await;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cni-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

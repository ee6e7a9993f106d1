//! `cni-agent`: the node agent. Flags and environment are parsed by
//! [`cni_plugin::agent::Config`]; everything else is in [`cni_plugin::agent`].

use std::process::ExitCode;

use clap::Parser;
use cni_plugin::agent::{Agent, Config};

fn main() -> ExitCode {
    mesh_runtime::logging::init(std::env::var("RUST_LOG").ok().as_deref(), false);
    let config = Config::parse();
    mesh_runtime::signal::serve(
        "cni-agent",
        Some(2),
        Agent::start(config),
        |agent: Agent| async move { agent.shutdown().await },
    )
}

//! `ambientctl`: the mesh's CLI. See `cli.rs` for the commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use ambientctl::cli::{Cli, Command, DEMO_MANIFESTS, NamespaceCommand, WaypointCommand};
use ambientctl::store::ManifestStore;
use ambientctl::{namespace, waypoint, ztunnel_config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The local mesh's manifest directory.
fn store(cli: &Cli) -> anyhow::Result<ManifestStore> {
    if cli.kubeconfig.is_some() {
        bail!(
            "Kubernetes clusters are not supported by this build yet; use the local mesh \
             (--manifests DIR, or the demo's default)"
        );
    }
    let dir = cli
        .manifests
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEMO_MANIFESTS));
    if cli.manifests.is_none() && !dir.is_dir() {
        bail!(
            "no mesh found: {DEMO_MANIFESTS} does not exist. Start the local mesh with \
             `cargo xtask demo`, or give --manifests DIR"
        );
    }
    Ok(ManifestStore::open(&dir)?)
}

fn duration(flag: &str, v: &str) -> anyhow::Result<Duration> {
    mesh_core::duration::parse(v).with_context(|| format!("--{flag} {v:?}"))
}

fn run(cli: Cli) -> anyhow::Result<String> {
    match &cli.command {
        Command::Namespace { command } => {
            let store = store(&cli)?;
            Ok(match command {
                NamespaceCommand::Enroll { namespace } => namespace::enroll(&store, namespace)?,
                NamespaceCommand::Release { namespace } => namespace::release(&store, namespace)?,
            })
        }
        Command::Waypoint(args) => {
            waypoint::check_name(&args.name)?;
            let ns = args.namespace.as_str();
            if let WaypointCommand::Generate { traffic, revision } = &args.command {
                let gw = waypoint::gateway(ns, &args.name, traffic.as_deref(), revision.as_deref());
                return Ok(serde_yaml::to_string(&gw)?);
            }
            let store = store(&cli)?;
            Ok(match &args.command {
                WaypointCommand::Generate { .. } => unreachable!("handled above"),
                WaypointCommand::Apply {
                    traffic,
                    revision,
                    enroll_namespace,
                    overwrite,
                    wait,
                    waypoint_timeout,
                } => {
                    let timeout = duration("waypoint-timeout", waypoint_timeout)?;
                    let mut out = String::new();
                    let applied = waypoint::apply(
                        &store,
                        &waypoint::Apply {
                            namespace: ns,
                            name: &args.name,
                            traffic: traffic.as_deref(),
                            revision: revision.as_deref(),
                            enroll_namespace: *enroll_namespace,
                            overwrite: *overwrite,
                            wait: wait.then_some(timeout),
                        },
                        &mut out,
                    );
                    // What was done is shown even when waiting then fails.
                    print!("{out}");
                    applied?;
                    String::new()
                }
                WaypointCommand::List { all_namespaces } => {
                    waypoint::list(&store, (!all_namespaces).then_some(ns))?
                }
                WaypointCommand::Delete { names, all } => {
                    waypoint::delete(&store, ns, names, *all)?
                }
                WaypointCommand::Status {
                    all_namespaces,
                    wait,
                    waypoint_timeout,
                } => {
                    let timeout = duration("waypoint-timeout", waypoint_timeout)?;
                    let scope = (!all_namespaces).then_some(ns);
                    let one = (!all_namespaces).then_some(args.name.as_str());
                    waypoint::status(&store, scope, one, wait.then_some(timeout))?
                }
            })
        }
        Command::ZtunnelConfig(args) => {
            let dump = match &args.file {
                Some(f) => ztunnel_config::read_file(f)?,
                None => ztunnel_config::fetch(&args.admin)?,
            };
            let filter = ztunnel_config::Filter {
                namespace: args.workload_namespace.clone(),
                node: args.workload_node.clone(),
                address: args.address.clone(),
                direction: args.direction,
                raw: args.raw,
            };
            Ok(ztunnel_config::render(
                &dump,
                args.section,
                args.output,
                &filter,
            ))
        }
    }
}

//! `ambientctl`: the mesh's CLI. See `cli.rs` for the commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use ambientctl::cli::{
    Cli, Command, DEMO_MANIFESTS, DemoCommand, NamespaceCommand, WaypointCommand,
};
use ambientctl::cluster::Cluster;
use ambientctl::store::{ManifestStore, Objects};
use ambientctl::{apply, demo, install, namespace, precheck, waypoint, ztunnel_config};

/// Where a ztunnel's admin endpoint listens in its own network namespace.
const DEFAULT_ADMIN: &str = "127.0.0.1:15000";
const ADMIN_PORT: u16 = 15000;

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

/// The cluster to act on, when there is one: `--kubeconfig`, or
/// `KUBECONFIG` (`Some(None)`), unless `--manifests` names a local mesh.
fn cluster_config(cli: &Cli) -> Option<Option<PathBuf>> {
    if cli.manifests.is_some() {
        return None;
    }
    match &cli.kubeconfig {
        Some(path) => Some(Some(path.clone())),
        None => std::env::var_os("KUBECONFIG")
            .is_some_and(|v| !v.is_empty())
            .then_some(None),
    }
}

/// Where namespaces and waypoints are read and written: the cluster, or
/// the local mesh's manifest directory.
fn objects(cli: &Cli) -> anyhow::Result<Box<dyn Objects>> {
    match cluster_config(cli) {
        Some(kubeconfig) => Ok(Box::new(Cluster::connect(kubeconfig.as_deref())?)),
        None => Ok(Box::new(store(cli)?)),
    }
}

/// The local mesh's manifest directory.
fn store(cli: &Cli) -> anyhow::Result<ManifestStore> {
    if cluster_config(cli).is_some() {
        bail!(
            "on a Kubernetes cluster, apply YAML with `kubectl apply -f`; this command \
             writes to the local mesh (--manifests DIR, or the demo's default)"
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
            let store = objects(&cli)?;
            Ok(match command {
                NamespaceCommand::Enroll { namespace } => namespace::enroll(&*store, namespace)?,
                NamespaceCommand::Release { namespace } => namespace::release(&*store, namespace)?,
            })
        }
        Command::Waypoint(args) => {
            waypoint::check_name(&args.name)?;
            let ns = args.namespace.as_str();
            if let WaypointCommand::Generate { traffic, revision } = &args.command {
                let gw = waypoint::gateway(ns, &args.name, traffic.as_deref(), revision.as_deref());
                return Ok(serde_yaml::to_string(&gw)?);
            }
            let store = objects(&cli)?;
            let store = &*store;
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
                        store,
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
                    waypoint::list(store, (!all_namespaces).then_some(ns))?
                }
                WaypointCommand::Delete { names, all } => waypoint::delete(store, ns, names, *all)?,
                WaypointCommand::Status {
                    all_namespaces,
                    wait,
                    waypoint_timeout,
                } => {
                    let timeout = duration("waypoint-timeout", waypoint_timeout)?;
                    let scope = (!all_namespaces).then_some(ns);
                    let one = (!all_namespaces).then_some(args.name.as_str());
                    waypoint::status(store, scope, one, wait.then_some(timeout))?
                }
            })
        }
        Command::ZtunnelConfig(args) => {
            if args.section == ztunnel_config::Section::Log {
                if args.file.is_some() {
                    bail!("`ztunnel-config log` asks a running ztunnel; -f reads a saved dump");
                }
                return on_admin(&cli, args, |addr| {
                    ztunnel_config::log(addr, args.level.as_deref(), args.reset)
                });
            }
            let dump = match &args.file {
                Some(f) => ztunnel_config::read_file(f)?,
                None => on_admin(&cli, args, ztunnel_config::fetch)?,
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
        Command::Apply { file } => {
            let store = store(&cli)?;
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
            };
            Ok(apply::apply(&store, file, &text)?)
        }
        Command::Demo { command } => {
            let mut out = String::new();
            match command {
                DemoCommand::Up => {
                    demo::up(&mut out)?;
                }
                DemoCommand::Down => demo::down(&mut out)?,
                DemoCommand::Check => match cluster_config(&cli) {
                    Some(kubeconfig) => demo::check_cluster(kubeconfig.as_deref())?,
                    None => demo::check()?,
                },
                DemoCommand::Exec { pod, command } => demo::exec(pod, command)?,
            }
            Ok(out)
        }
        Command::Install {
            set,
            dry_run,
            readiness_timeout,
            ..
        } => {
            let values = install::values(set)?;
            if *dry_run {
                return Ok(install::dry_run(&values)?);
            }
            Ok(install::install(
                &values,
                cli.kubeconfig.as_deref(),
                *readiness_timeout,
            )?)
        }
        Command::Precheck => {
            let report = precheck::run(&precheck::Host::this_machine());
            if report.ok() {
                Ok(report.render())
            } else {
                print!("{}", report.render());
                bail!("the checks above failed")
            }
        }
    }
}

/// Runs `ask` against the chosen ztunnel's admin endpoint: `--admin`, or
/// the local mesh's ztunnel (TARGET, `--node`) inside its node's network
/// namespace, or 127.0.0.1:15000 when no local mesh runs.
fn on_admin<T>(
    cli: &Cli,
    args: &ambientctl::cli::ZtunnelConfigArgs,
    ask: impl Fn(&str) -> Result<T, ztunnel_config::DumpError>,
) -> anyhow::Result<T> {
    if let Some(addr) = &args.admin {
        return Ok(ask(addr)?);
    }
    if let Some(kubeconfig) = cluster_config(cli) {
        // As istioctl: a port forward to the ztunnel pod's admin port.
        let cluster = Cluster::connect(kubeconfig.as_deref())?;
        let (ns, pod) = cluster.ztunnel(args.target.as_deref(), args.node.as_deref())?;
        let local = cluster.forward(&ns, &pod, ADMIN_PORT)?;
        return ask(&local).with_context(|| format!("asking ztunnel {ns}/{pod}"));
    }
    match demo::running() {
        Some(mesh) => {
            let z = mesh.ztunnel(args.target.as_deref(), args.node.as_deref())?;
            let netns = format!("/var/run/netns/{}", z.netns);
            Ok(mesh_netns::Netns::open(&netns)
                .and_then(|ns| ns.run(|| ask(&z.admin)))
                .with_context(|| format!("entering {} ({netns})", z.name))??)
        }
        None if args.target.is_some() || args.node.is_some() => {
            bail!(
                "no local mesh is running to find that ztunnel in; start it with \
                 `ambientctl demo up`, or give --admin HOST:PORT"
            )
        }
        None => Ok(ask(DEFAULT_ADMIN)?),
    }
}

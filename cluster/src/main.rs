use std::process::ExitCode;

use clap::Parser;
use mesh_cluster::config::{Cli, Command, Layout, Node};
use mesh_cluster::{lifecycle, node};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Enter(args) = cli.command {
        // Becomes the container's program: no runtime, no threads.
        let Err(e) = node::enter(args);
        eprintln!("cluster enter: {e:#}");
        return ExitCode::from(127);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the runtime starts");
    let layout = Layout::new(&cli.state, &cli.bin);
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => {
                let exe = std::env::current_exe()?;
                let started = lifecycle::up(&layout, &args, &exe).await.map_err(|e| {
                    e.context(format!(
                        "what was started is left for inspection (logs in {}); `cluster down` removes it",
                        layout.logs().display()
                    ))
                })?;
                println!(
                    "cluster up: API server ready in {:.1} s, {} nodes Ready in {:.1} s, cluster DNS in {:.1} s",
                    started.api_ready.as_secs_f64(),
                    args.nodes,
                    started.nodes_ready.as_secs_f64(),
                    started.dns_ready.as_secs_f64()
                );
                println!("export KUBECONFIG={}", layout.kubeconfig("admin").display());
                Ok(())
            }
            Command::Down => {
                for line in lifecycle::down(&layout)? {
                    println!("removed {line}");
                }
                Ok(())
            }
            Command::Status => {
                for line in lifecycle::status(&layout).await? {
                    println!("{line}");
                }
                Ok(())
            }
            Command::Node(args) => {
                let refresh = args.token_refresh.map(std::time::Duration::from_secs);
                node::run(&layout, Node::new(args.index), refresh).await
            }
            Command::Enter(_) => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e:#}");
            ExitCode::FAILURE
        }
    }
}

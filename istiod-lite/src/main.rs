use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use istiod_lite::app::{Istiod, load_ca};
use istiod_lite::ca::{Caller, TokenIssuer};
use istiod_lite::config::{Cli, Command, CommonArgs, Config, EXIT_CONFIG};
use mesh_runtime::signal::{Ending, Signals};

fn main() -> ExitCode {
    let cli = Cli::parse();
    mesh_runtime::logging::init(std::env::var("RUST_LOG").ok().as_deref(), false);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("istiod-lite: {e:#}");
            if e.downcast_ref::<istiod_lite::config::ConfigError>()
                .is_some()
            {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The configuration the one-shot commands load the CA with.
fn local_config(common: &CommonArgs) -> anyhow::Result<Config> {
    let mut config = Config::local(common.state_dir.clone());
    config.ca_certs_dir = common.ca_certs_dir.clone();
    config.trust_domain = common.trust_domain()?;
    Ok(config)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::from_args(&args)?;
            tracing::info!(?config, "effective configuration");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let ending = rt.block_on(async {
                let mut signals = Signals::register()?;
                let istiod = Istiod::start(config).await?;
                let signal = signals.first().await;
                tracing::info!(signal, "draining");
                anyhow::Ok(signals.drain(istiod.shutdown()).await)
            })?;
            if let Ending::CutShort(second) = ending {
                // As every daemon of the mesh (`mesh_runtime::signal`).
                mesh_runtime::signal::warn_cut_short(second);
                rt.shutdown_background();
                anyhow::bail!("the drain was cut short by a second {second}");
            }
            Ok(())
        }
        Command::Token(args) => {
            let ttl = mesh_core::duration::parse(&args.ttl)?;
            let issuer = TokenIssuer::load_or_generate(&args.common.state_dir)?;
            let token = issuer.issue(
                &Caller {
                    namespace: args.namespace,
                    service_account: args.service_account,
                    node: args.node,
                },
                ttl.max(Duration::from_secs(1)),
            );
            println!("{token}");
            Ok(())
        }
        Command::RootCert(common) => {
            print!("{}", load_ca(&local_config(&common)?)?.root_pem());
            Ok(())
        }
        Command::Crl(args) => {
            let next_update = mesh_core::duration::parse(&args.next_update)?;
            let ca = load_ca(&local_config(&args.common)?)?;
            print!("{}", ca.revocation_list(&args.serials, next_update)?);
            Ok(())
        }
    }
}

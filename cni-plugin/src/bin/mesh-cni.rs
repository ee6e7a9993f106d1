//! `mesh-cni`: the chained CNI plugin. The container runtime runs it with
//! `CNI_*` variables and the network config on stdin; it prints a result or
//! a CNI error on stdout and logs to stderr. All the logic is in
//! [`cni_plugin::plugin`]; this file only gathers the process's inputs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;

use cni_plugin::plugin::{self, Output, PluginError, SPEC_VERSION};

fn main() -> ExitCode {
    // The plugin reads only `CNI_*`; the runtime passes values as bytes, and
    // a lossy conversion keeps a strange path visible in errors rather than
    // making the variable look unset.
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("CNI_")
                .then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect();

    let mut stdin = Vec::new();
    let output = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => {
            init_logging(plugin::peek_log_level(&stdin).as_deref());
            plugin::run(&env, &stdin)
        }
        Err(e) => Output::failure(SPEC_VERSION, &PluginError::Stdin(e)),
    };

    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(output.stdout.as_bytes())
        .and_then(|()| stdout.flush())
    {
        eprintln!("mesh-cni: cannot write the result to stdout: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::from(output.exit_code)
}

/// Logs go to stderr: stdout belongs to the CNI result.
fn init_logging(level: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_new(level.unwrap_or("info"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

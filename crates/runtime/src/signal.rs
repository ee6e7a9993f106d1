//! Waiting for the signals that ask a process to stop, and the life of a
//! long-running binary around them.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

/// Set by [`quit`]: an orderly stop asked for from inside the process.
static QUIT: Notify = Notify::const_new();

/// Asks the process to stop as SIGTERM would (the admin endpoint's
/// `/quitquitquit`). Remembered if nothing waits yet.
pub fn quit() {
    QUIT.notify_one();
}

/// Resolves on SIGTERM, SIGINT or [`quit`].
pub async fn shutdown() -> std::io::Result<&'static str> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = QUIT.notified() => "/quitquitquit",
    })
}

/// Runs a daemon: a multi-threaded runtime (`workers` threads, default one
/// per core), `start`, then on SIGTERM or SIGINT `stop` (which drains).
/// A failure is printed as `<name>: <error>` and exits 1.
pub fn serve<T, E, Stop>(
    name: &str,
    workers: Option<usize>,
    start: impl Future<Output = Result<T, E>>,
    stop: impl FnOnce(T) -> Stop,
) -> ExitCode
where
    E: Display + From<std::io::Error>,
    Stop: Future<Output = ()>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), E> = rt.block_on(async {
        let running = start.await?;
        let signal = shutdown().await?;
        tracing::info!(signal, "draining");
        stop(running).await;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

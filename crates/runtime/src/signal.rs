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
/// A second SIGTERM or SIGINT during the drain cuts it short: the process
/// exits at once with status 1, leaving the next start to recover (the
/// kernel closes every socket it held). A failure is printed as
/// `<name>: <error>` and exits 1.
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
    let result: Result<Ending, E> = rt.block_on(async {
        // Registered before anything runs, so no signal is missed between
        // the first and the second.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let running = start.await?;
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = QUIT.notified() => "/quitquitquit",
        };
        tracing::info!(signal = first, "draining");
        tokio::select! {
            () = stop(running) => Ok(Ending::Drained),
            _ = term.recv() => Ok(Ending::CutShort("SIGTERM")),
            _ = int.recv() => Ok(Ending::CutShort("SIGINT")),
        }
    });
    match result {
        Ok(Ending::Drained) => ExitCode::SUCCESS,
        Ok(Ending::CutShort(second)) => {
            tracing::warn!(
                signal = second,
                "a second signal during the drain; exiting now without waiting for connections to finish"
            );
            // Tasks still running (the drain's, connections') are not
            // waited for; exiting closes their sockets.
            rt.shutdown_background();
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How a daemon's life ended.
enum Ending {
    Drained,
    /// A second signal arrived during the drain.
    CutShort(&'static str),
}

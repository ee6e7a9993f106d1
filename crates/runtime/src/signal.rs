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

/// The signals that stop a daemon, registered once (before it starts) so
/// that none is missed between the first and the second.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

/// How a daemon's drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Drained,
    /// A second SIGTERM or SIGINT arrived during the drain.
    CutShort(&'static str),
}

impl Signals {
    pub fn register() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the first: SIGTERM, SIGINT or [`quit`].
    pub async fn first(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = QUIT.notified() => "/quitquitquit",
        }
    }

    /// Runs `drain` until it ends, or until a second SIGTERM or SIGINT cuts
    /// it short (the caller then exits without waiting for the rest).
    pub async fn drain(&mut self, drain: impl Future<Output = ()>) -> Ending {
        tokio::select! {
            () = drain => Ending::Drained,
            _ = self.term.recv() => Ending::CutShort("SIGTERM"),
            _ = self.int.recv() => Ending::CutShort("SIGINT"),
        }
    }
}

/// Logs a drain cut short by a second signal.
pub fn warn_cut_short(second: &str) {
    tracing::warn!(
        signal = second,
        "a second signal during the drain; exiting now without waiting for connections to finish"
    );
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
        let mut signals = Signals::register()?;
        let running = start.await?;
        let first = signals.first().await;
        tracing::info!(signal = first, "draining");
        Ok(signals.drain(stop(running)).await)
    });
    match result {
        Ok(Ending::Drained) => ExitCode::SUCCESS,
        Ok(Ending::CutShort(second)) => {
            warn_cut_short(second);
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

//! Graceful shutdown.
//!
//! A [`DrainTrigger`] starts a drain; every long-lived task holds a
//! [`DrainWatcher`] clone. The trigger's [`DrainTrigger::drain`] completes when
//! every watcher has been dropped, i.e. when every task has finished. Tasks
//! learn of the drain from [`DrainWatcher::signaled`] and decide how to wind
//! down; [`run_with_drain`] gives them a graceful phase and a hard deadline.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// How a drain should proceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainMode {
    /// Stop accepting, let open work finish until the deadline.
    Graceful,
    /// Stop everything now.
    Immediate,
}

/// Starts a drain and waits for every watcher to finish.
pub struct DrainTrigger {
    signal: watch::Sender<Option<DrainMode>>,
    done: mpsc::Receiver<()>,
}

/// Held by every task that must finish before the process may exit.
#[derive(Clone)]
pub struct DrainWatcher {
    signal: watch::Receiver<Option<DrainMode>>,
    // Never sent on: its only job is to be dropped, which is how the trigger
    // learns that this task has finished.
    _done: mpsc::Sender<()>,
}

/// A [`DrainWatcher`] that the drain does not wait for: held by what lives
/// as long as a server does (a service cloned into every connection), it
/// hands each piece of work a watcher of its own.
#[derive(Clone)]
pub struct WeakDrainWatcher {
    signal: watch::Receiver<Option<DrainMode>>,
    done: mpsc::WeakSender<()>,
}

impl WeakDrainWatcher {
    /// A watcher the drain waits for, unless the drain has started (work
    /// that begins then is refused) or finished.
    pub fn upgrade(&self) -> Option<DrainWatcher> {
        if self.signal.borrow().is_some() {
            return None;
        }
        Some(DrainWatcher {
            signal: self.signal.clone(),
            _done: self.done.upgrade()?,
        })
    }
}

pub fn new() -> (DrainTrigger, DrainWatcher) {
    let (signal_tx, signal_rx) = watch::channel(None);
    let (done_tx, done_rx) = mpsc::channel(1);
    (
        DrainTrigger {
            signal: signal_tx,
            done: done_rx,
        },
        DrainWatcher {
            signal: signal_rx,
            _done: done_tx,
        },
    )
}

impl DrainTrigger {
    /// Signals every watcher and waits until all of them are gone.
    pub async fn drain(mut self, mode: DrainMode) {
        let _ = self.signal.send(Some(mode));
        // recv returns None once every sender (every watcher) is dropped.
        while self.done.recv().await.is_some() {}
    }

    /// Signals every watcher without waiting.
    pub fn start(&self, mode: DrainMode) {
        let _ = self.signal.send(Some(mode));
    }
}

impl DrainWatcher {
    /// Resolves when a drain starts, with its mode. If the trigger is dropped
    /// without draining, that counts as an immediate drain.
    pub async fn signaled(&self) -> DrainMode {
        let mut rx = self.signal.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(mode) => mode.unwrap_or(DrainMode::Immediate),
            Err(_) => DrainMode::Immediate,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.signal.borrow().is_some()
    }

    /// A handle that the drain does not wait for ([`WeakDrainWatcher`]).
    pub fn downgrade(&self) -> WeakDrainWatcher {
        WeakDrainWatcher {
            signal: self.signal.clone(),
            done: self._done.downgrade(),
        }
    }
}

/// Runs `work` until it finishes, or until a drain starts and then either the
/// deadline passes (graceful) or at once (immediate); in those cases `work` is
/// dropped, which closes whatever it owns. The watcher is held throughout so
/// the drain waits for this.
///
/// `work` is boxed here: an async fn keeps its arguments beside the locals
/// it moves them into, so taking a connection's future by value would hold
/// it twice for the connection's whole life (half of ztunnel's memory per
/// idle connection, reliability.md E2).
pub fn run_with_drain<F>(
    watcher: DrainWatcher,
    deadline: Duration,
    work: F,
) -> impl Future<Output = Option<F::Output>>
where
    F: Future,
{
    let mut work = Box::pin(work);
    async move {
        let drained = async {
            let mode = watcher.signaled().await;
            if mode == DrainMode::Graceful {
                tokio::time::sleep(deadline).await;
            }
        };
        let out = tokio::select! {
            out = work.as_mut() => Some(out),
            _ = drained => None,
        };
        drop(watcher);
        out
    }
}

/// Accepts on `listener` until a drain starts, running `handle` for each
/// connection in its own task under the drain (graceful phase of
/// `deadline`, then closed). The peer is given in its canonical form
/// (`crate::socket`).
pub async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: tokio::net::TcpListener,
    drain: DrainWatcher,
    deadline: Duration,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr, DrainWatcher) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = drain.signaled() => {
                tracing::debug!(listener = name, "stopped accepting");
                return;
            }
        };
        match accepted {
            Ok((tcp, peer)) => {
                let peer = mesh_core::address::canonical(peer);
                let conn = handle(tcp, peer, drain.clone());
                tokio::spawn(run_with_drain(drain.clone(), deadline, conn));
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[tokio::test]
    async fn the_drain_waits_for_upgraded_watchers_not_for_weak_ones() {
        let (trigger, watcher) = new();
        let weak = watcher.downgrade();
        let work = weak.upgrade().expect("no drain yet");
        drop(watcher);
        trigger.start(DrainMode::Graceful);
        assert!(weak.upgrade().is_none(), "no new work once draining");
        let draining = tokio::spawn(trigger.drain(DrainMode::Graceful));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !draining.is_finished(),
            "the upgraded watcher holds the drain"
        );
        drop(work);
        tokio::time::timeout(Duration::from_secs(2), draining)
            .await
            .expect("the weak watcher does not hold the drain")
            .unwrap();
    }

    #[tokio::test]
    async fn a_dual_stack_listener_hands_over_ipv4_peers_as_ipv4() {
        let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_trigger, watcher) = new();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(accept_loop(
            "test",
            listener,
            watcher,
            Duration::from_secs(1),
            move |tcp, peer, _| {
                let seen_tx = seen_tx.clone();
                async move {
                    let local = crate::socket::local(&tcp).unwrap();
                    let _ = seen_tx.send((peer, local, crate::socket::peer(&tcp).unwrap()));
                }
            },
        ));
        let client = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (peer, local, read_peer) = seen.recv().await.unwrap();
        let from = crate::socket::local(&client).unwrap();
        assert!(from.is_ipv4());
        assert_eq!(
            peer, from,
            "the handler is given 127.0.0.1, not ::ffff:127.0.0.1"
        );
        assert_eq!(read_peer, from);
        assert_eq!(local, SocketAddr::from(([127, 0, 0, 1], port)));
    }

    #[tokio::test]
    async fn drain_waits_for_watchers_then_completes() {
        let (trigger, watcher) = new();
        let w2 = watcher.clone();
        let task = tokio::spawn(async move {
            let mode = w2.signaled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(w2);
            mode
        });
        drop(watcher);
        tokio::time::timeout(Duration::from_secs(2), trigger.drain(DrainMode::Graceful))
            .await
            .expect("drain completes once watchers drop");
        assert_eq!(task.await.unwrap(), DrainMode::Graceful);
    }

    #[tokio::test]
    async fn work_is_cut_at_the_deadline() {
        let (trigger, watcher) = new();
        let w = watcher.clone();
        let task = tokio::spawn(run_with_drain(w, Duration::from_millis(100), async {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }));
        drop(watcher);
        let started = tokio::time::Instant::now();
        trigger.drain(DrainMode::Graceful).await;
        assert!(task.await.unwrap().is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn finished_work_returns_its_output() {
        let (_trigger, watcher) = new();
        let out = run_with_drain(watcher, Duration::from_secs(1), async { 7 }).await;
        assert_eq!(out, Some(7));
    }
}

//! The wall clock certificate renewal follows.
//!
//! Certificates are dated in wall time, but tokio's timers run on the
//! monotonic clock, which stands still while the machine is suspended (or
//! a VM paused): a renewal timer set for "in 12 hours" fires 12 hours of
//! running time later, however long the machine slept, possibly after the
//! certificate ended. So a renewal wait is a wall-clock deadline, and a
//! watcher wakes every wait when wall time has moved ahead of monotonic
//! time, for the deadline to be read again (reliability.md K5).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How often the watcher compares the clocks: a renewal due during a
/// suspend starts within this long of the resume.
pub const TICK: Duration = Duration::from_secs(1);

/// This machine's wall clock, which a test can move ahead. Cheap to clone;
/// clones share the offset and the wake-ups.
#[derive(Clone, Debug, Default)]
pub struct WallClock {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Nanoseconds added to the system's time (tests only).
    ahead: AtomicU64,
    jumped: Notify,
}

impl WallClock {
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_nanos(self.inner.ahead.load(Ordering::SeqCst))
    }

    /// How long until `t` by this clock; zero once it has passed.
    pub fn until(&self, t: SystemTime) -> Duration {
        t.duration_since(self.now()).unwrap_or_default()
    }

    /// Moves this clock `by` ahead while monotonic time stands still, as a
    /// suspend does, and wakes every wait on it.
    pub fn jump_forward(&self, by: Duration) {
        self.advance(by);
        self.inner.jumped.notify_waiters();
    }

    fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.inner.ahead.fetch_add(by, Ordering::SeqCst);
    }

    /// Moves this clock ahead without waking anything: only the watcher
    /// can notice, as with a real suspend.
    #[cfg(test)]
    pub(crate) fn inner_jump_unannounced(&self, by: Duration) {
        self.advance(by);
    }

    /// Sleeps until `deadline` by this clock, waking early to look again
    /// whenever the clock jumps.
    pub async fn sleep_until(&self, deadline: SystemTime) {
        loop {
            let left = self.until(deadline);
            if left.is_zero() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                () = self.inner.jumped.notified() => {}
            }
        }
    }

    /// Starts the watcher: every [`TICK`] of monotonic time, if the wall
    /// clock moved more than a tick further, every wait looks again.
    /// Needs a tokio runtime; the task ends when aborted.
    pub fn watch(&self) -> JoinHandle<()> {
        let clock = self.clone();
        tokio::spawn(async move {
            loop {
                let (wall, mono) = (clock.now(), Instant::now());
                tokio::time::sleep(TICK).await;
                let walled = clock.now().duration_since(wall).unwrap_or_default();
                if walled > mono.elapsed() + TICK {
                    tracing::info!(
                        ahead = ?walled - mono.elapsed(),
                        "the wall clock moved ahead of running time (a suspend?); checking renewals"
                    );
                    clock.inner.jumped.notify_waiters();
                }
            }
        })
    }
}

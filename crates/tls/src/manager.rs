//! One certificate per identity: fetched on first use, renewed at half-life,
//! retried with jittered exponential backoff, and kept in service while it is
//! still valid even if renewal keeps failing.
//!
//! A pod's first certificate is often refused once: ztunnel learns of the
//! pod (from the node agent) a moment before the control plane's CA does,
//! and the CA only signs for pods it knows on the asking node. So the first
//! retries come quickly, and a caller waiting for an identity that has
//! never had a certificate waits through them, up to
//! [`SecretManagerConfig::first_issue_wait`], before it is told why not.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mesh_core::Identity;
use rand::Rng;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::caclient::CertificateSource;
use crate::certificate::WorkloadCertificate;
use crate::clock::WallClock;
use crate::error::{Error, Unusable};
use crate::revocation::Revocation;

#[derive(Clone, Debug)]
pub struct SecretManagerConfig {
    /// At most this many CSRs are in flight at once, across all identities.
    pub max_concurrent_requests: usize,
    /// The first retry waits between this and twice this.
    pub initial_backoff: Duration,
    /// No retry waits longer than this.
    pub max_backoff: Duration,
    /// How long a caller asking for an identity that has never had a
    /// certificate waits through failed requests and their retries before
    /// it gets the error; also the most a caller waits for the renewal of
    /// an expired certificate that is in flight. (An identity whose
    /// certificate has expired and whose renewal failed gets the error at
    /// once: see K2 in docs/reliability.md.)
    pub first_issue_wait: Duration,
    /// The CRLs every certificate handed out checks its peers against.
    pub revocation: Revocation,
    /// The wall clock renewals are scheduled by (see [`crate::clock`]).
    pub clock: WallClock,
}

impl Default for SecretManagerConfig {
    fn default() -> Self {
        Self {
            max_concurrent_requests: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(150),
            first_issue_wait: Duration::from_secs(3),
            revocation: Revocation::none(),
            clock: WallClock::default(),
        }
    }
}

/// What is known about one identity's certificate.
#[derive(Clone, Debug, Default)]
pub struct CertState {
    /// The newest certificate issued, which may have expired.
    pub current: Option<Arc<WorkloadCertificate>>,
    /// Why the most recent request failed, until one succeeds.
    pub last_error: Option<String>,
}

struct Entry {
    state: watch::Receiver<CertState>,
    /// The renewal task; aborted when the identity is forgotten.
    worker: JoinHandle<()>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

/// How every certificate request ended, by outcome: `issued`,
/// `issued_lifetime_clamped` (longer than asked for: renewed by the asked
/// lifetime), `due_on_arrival` (already past its refresh point: asked again
/// with back-off, and used only if it outlives the current certificate),
/// or why it was refused ([`Error::outcome`]).
#[derive(Clone, Debug, Default)]
pub struct RequestOutcomes(Arc<Mutex<BTreeMap<&'static str, u64>>>);

impl RequestOutcomes {
    fn count(&self, outcome: &'static str) {
        *self.lock().entry(outcome).or_default() += 1;
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, u64>> {
        // Each critical section is one increment or one copy.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hands out certificates by identity. Cheap to clone.
#[derive(Clone)]
pub struct SecretManager {
    source: Arc<dyn CertificateSource>,
    entries: Arc<Mutex<HashMap<Identity, Entry>>>,
    permits: Arc<Semaphore>,
    config: SecretManagerConfig,
    outcomes: RequestOutcomes,
    /// Watches the wall clock for jumps while any clone lives.
    _clock_watch: Option<Arc<AbortOnDrop>>,
}

/// Aborts a task when the last handle goes.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SecretManager {
    /// Made inside a tokio runtime, it also watches the wall clock for
    /// suspends (see [`crate::clock`]).
    pub fn new(source: Arc<dyn CertificateSource>, config: SecretManagerConfig) -> Self {
        let clock_watch = tokio::runtime::Handle::try_current()
            .ok()
            .map(|_| Arc::new(AbortOnDrop(config.clock.watch())));
        Self {
            source,
            entries: Default::default(),
            permits: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            config,
            outcomes: RequestOutcomes::default(),
            _clock_watch: clock_watch,
        }
    }

    /// How the certificate requests so far ended.
    pub fn outcomes(&self) -> BTreeMap<&'static str, u64> {
        self.outcomes.snapshot()
    }

    /// The current valid certificate for `identity`, fetching it first if this
    /// is the first time it is asked for. An identity that has never had a
    /// certificate is waited for, through failed requests and their
    /// retries, for up to `first_issue_wait`; one whose certificate has
    /// expired fails at once while renewal keeps failing, and waits for a
    /// renewal in flight for up to `first_issue_wait` too. No wait here is
    /// unbounded.
    pub async fn fetch_certificate(
        &self,
        identity: &Identity,
    ) -> Result<Arc<WorkloadCertificate>, Error> {
        let mut rx = self.subscribe(identity);
        let deadline = tokio::time::Instant::now() + self.config.first_issue_wait;
        loop {
            {
                let state = rx.borrow_and_update();
                if let Some(cert) = &state.current
                    && !cert.validity().is_expired(self.config.clock.now())
                {
                    return Ok(cert.clone());
                }
                if let Some(reason) = &state.last_error {
                    let first_issue = state.current.is_none();
                    if !first_issue || tokio::time::Instant::now() >= deadline {
                        return Err(Error::Unavailable {
                            identity: identity.clone(),
                            reason: reason.clone(),
                        });
                    }
                    debug!(%identity, error = %reason, "first certificate refused; waiting for a retry");
                } else if state.current.is_some() {
                    // Expired, and the renewal in flight has not reported yet.
                    debug!(%identity, "certificate expired; waiting for renewal");
                }
            }
            // Every wait is bounded: a caller (a connection waiting to
            // start TLS) is told why not after `first_issue_wait`.
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::Bug(format!("renewal task for {identity} ended"))),
                Err(_) => {
                    mesh_core::wait::Wait::WorkloadCertificate.timed_out();
                    let state = rx.borrow();
                    let reason = state.last_error.clone().unwrap_or_else(|| {
                        let what = if state.current.is_some() {
                            "the certificate has expired and its renewal has not come back"
                        } else {
                            "the CA has not answered the first request"
                        };
                        format!("{what} within {:?}", self.config.first_issue_wait)
                    });
                    return Err(Error::Unavailable {
                        identity: identity.clone(),
                        reason,
                    });
                }
            }
        }
    }

    /// Starts fetching `identity` in the background (prefetch) without waiting.
    pub fn prefetch(&self, identity: &Identity) {
        drop(self.subscribe(identity));
    }

    /// Stops renewing `identity` and drops its certificate.
    pub fn forget(&self, identity: &Identity) {
        let removed = self.lock().remove(identity);
        if removed.is_some() {
            info!(%identity, "certificate forgotten");
        }
    }

    /// A snapshot of every identity and its state, for admin dumps.
    pub fn snapshot(&self) -> Vec<(Identity, CertState)> {
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .map(|(id, e)| (id.clone(), e.state.borrow().clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Watches one identity's state; starts its renewal task if needed.
    pub fn subscribe(&self, identity: &Identity) -> watch::Receiver<CertState> {
        let mut entries = self.lock();
        if let Some(e) = entries.get(identity) {
            return e.state.clone();
        }
        let (tx, rx) = watch::channel(CertState::default());
        let worker = tokio::spawn(renew(
            identity.clone(),
            self.source.clone(),
            self.permits.clone(),
            self.config.clone(),
            self.outcomes.clone(),
            tx,
        ));
        entries.insert(
            identity.clone(),
            Entry {
                state: rx.clone(),
                worker,
            },
        );
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Identity, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent:
        // every critical section is a single insert, remove or read.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The renewal loop of one identity. Runs until aborted by [`SecretManager::forget`]
/// or the manager is dropped.
async fn renew(
    identity: Identity,
    source: Arc<dyn CertificateSource>,
    permits: Arc<Semaphore>,
    config: SecretManagerConfig,
    outcomes: RequestOutcomes,
    tx: watch::Sender<CertState>,
) {
    let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
    let clock = &config.clock;
    loop {
        let result = {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            source
                .fetch(&identity)
                .await
                .and_then(|cert| usable(&identity, cert, clock.now()))
                .and_then(|cert| cert.with_revocation(config.revocation.clone()))
        };
        let now = clock.now();
        let until = |t: SystemTime| clock.until(t);
        let current_until = tx
            .borrow()
            .current
            .as_ref()
            .map(|c| c.validity().not_after)
            .filter(|end| *end > now);
        let wait = match result {
            // Issued already past its refresh point: asked again, but with
            // back-off, whatever the CA keeps answering; and used only if
            // it lasts longer than the certificate in use.
            Ok(cert) if until(cert.validity().refresh_at(now)) == Duration::ZERO => {
                outcomes.count("due_on_arrival");
                let v = cert.validity().clone();
                let mut wait = backoff.next();
                match current_until {
                    Some(end) if end >= v.not_after => {
                        wait = wait.min(until(end));
                        warn!(%identity, serial = %v.serial, retry_in = ?wait, "the CA issued a certificate already due for renewal that ends before the current one; the current one stays in use");
                    }
                    _ => {
                        wait = wait.min(until(v.not_after));
                        warn!(%identity, serial = %v.serial, retry_in = ?wait, "the CA issued a certificate already due for renewal; using it until a better one comes");
                        install(&tx, cert);
                    }
                }
                wait
            }
            Ok(cert) => {
                let v = cert.validity().clone();
                info!(%identity, serial = %v.serial, expires = ?v.not_after, "certificate issued");
                outcomes.count(if v.planned_life.is_some() {
                    "issued_lifetime_clamped"
                } else {
                    "issued"
                });
                install(&tx, cert);
                backoff.reset();
                until(v.refresh_at(now))
            }
            Err(e) => {
                outcomes.count(e.outcome());
                let mut wait = backoff.next();
                if let Some(not_after) = current_until {
                    wait = wait.min(until(not_after));
                    warn!(%identity, error = %e, retry_in = ?wait, "certificate renewal failed; the current certificate stays in use until it expires");
                } else {
                    warn!(%identity, error = %e, retry_in = ?wait, "certificate request failed");
                }
                tx.send_modify(|s| s.last_error = Some(e.to_string()));
                wait
            }
        };
        if tx.is_closed() && tx.receiver_count() == 0 {
            return;
        }
        // By the wall clock, which is what certificates are dated in.
        clock.sleep_until(clock.now() + wait).await;
    }
}

fn install(tx: &watch::Sender<CertState>, cert: WorkloadCertificate) {
    tx.send_modify(|s| {
        s.current = Some(Arc::new(cert));
        s.last_error = None;
    });
}

/// How far a certificate's start may lie ahead of this machine's clock
/// (the CA's clock a little ahead of ours).
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A certificate the CA issued, if it can be used now: not expired, and
/// begun (within [`CLOCK_SKEW`]). One that cannot is refused; the current
/// one stays in use and the request is retried with back-off.
fn usable(
    identity: &Identity,
    cert: WorkloadCertificate,
    now: SystemTime,
) -> Result<WorkloadCertificate, Error> {
    let v = cert.validity();
    let refused = if v.is_expired(now) {
        Some((
            Unusable::Expired,
            format!("it expired at {}", crate::certificate::rfc3339(v.not_after)),
        ))
    } else if v.not_before > now + CLOCK_SKEW {
        Some((
            Unusable::NotYetValid,
            format!(
                "it is valid only from {}, more than {CLOCK_SKEW:?} ahead of this machine's clock",
                crate::certificate::rfc3339(v.not_before)
            ),
        ))
    } else {
        None
    };
    match refused {
        Some((why, reason)) => Err(Error::Unusable {
            identity: identity.clone(),
            why,
            reason: format!("{}): {reason}", v.serial),
        }),
        None => Ok(cert),
    }
}

/// Exponential backoff with jitter: each wait is the base times a random factor
/// in [1, 2), the base doubling after each failure, everything capped.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            base: initial,
        }
    }

    fn next(&mut self) -> Duration {
        let factor: f64 = rand::rng().random_range(1.0..2.0);
        let wait = self.base.mul_f64(factor).min(self.max);
        self.base = (self.base * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.base = self.initial;
    }
}

#[cfg(test)]
mod tests;

//! Certificate revocation: the CRLs in force (`CRL_PATH`, re-read when the
//! file changes), checked in every handshake and, whenever they change,
//! against the peer of every open connection (`dataplane.md` §2,
//! reliability.md §1.5 and M7).
//!
//! As upstream: the whole chain is checked; a certificate no CRL speaks for
//! is allowed (there is no OCSP, and short-lived certificates are the main
//! defence); a CRL past its next-update date is still enforced.
//!
//! **Invariant:** a file that cannot be read or parsed never lifts a
//! revocation: the CRLs read last stay in force, and the error is logged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use tokio::sync::watch;
use tracing::{error, info, warn};
use webpki::{
    CertRevocationList, ExpirationPolicy, KeyUsage, OwnedCertRevocationList, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};

use crate::error::Error;

/// How often [`Revocation::watch`] reads the CRL file for changes: an open
/// connection whose peer a new CRL revokes is closed within about this
/// (reliability.md M7 allows 10 s).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A set of CRLs, as read from one file.
#[derive(Debug, Default)]
pub struct CrlSet {
    crls: Vec<CertRevocationList<'static>>,
}

impl CrlSet {
    /// Parses every `X509 CRL` block of a PEM file. A file without one is
    /// an empty set (no revocation); anything else that fails to parse is
    /// an error naming `what`, and so are two CRLs from one issuer (only
    /// the first would count: give each CA's newest list once).
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::Pem {
            what: what.to_string(),
            reason,
        };
        let mut crls = Vec::new();
        for (i, der) in CertificateRevocationListDer::pem_slice_iter(pem).enumerate() {
            let der = der.map_err(|e| bad(e.to_string()))?;
            let crl = CertRevocationList::from(
                OwnedCertRevocationList::from_der(der.as_ref())
                    .map_err(|e| bad(format!("CRL #{}: {e}", i + 1)))?,
            );
            if let Some(first) = crls
                .iter()
                .position(|c: &CertRevocationList<'_>| c.issuer() == crl.issuer())
            {
                return Err(bad(format!(
                    "CRLs #{} and #{} have the same issuer; keep only that CA's newest list",
                    first + 1,
                    i + 1
                )));
            }
            crls.push(crl);
        }
        if crls.is_empty() && pem.iter().any(|b| !b.is_ascii_whitespace()) {
            return Err(bad("no X509 CRL block".into()));
        }
        Ok(Self { crls })
    }

    /// How many CRLs (one per issuing CA).
    pub fn len(&self) -> usize {
        self.crls.len()
    }

    /// No CRL: nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.crls.is_empty()
    }

    /// Verifies `end_entity`'s chain to `roots` for `usage` at `now`,
    /// checking every certificate of the chain against these CRLs.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        roots: &RootCertStore,
        usage: KeyUsage,
        now: UnixTime,
        provider: &CryptoProvider,
    ) -> Result<(), webpki::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)?;
        let crls: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crls).ok().map(|b| {
            b.with_depth(RevocationCheckDepth::Chain)
                .with_status_policy(UnknownStatusPolicy::Allow)
                .with_expiration_policy(ExpirationPolicy::Ignore)
                .build()
        });
        cert.verify_for_usage(
            provider.signature_verification_algorithms.all,
            &roots.roots,
            intermediates,
            now,
            usage,
            revocation,
            None,
        )
        .map(|_| ())
    }
}

/// Which end of a connection checks its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// A server checking its client (ztunnel's inbound).
    Server,
    /// A client checking its server (ztunnel's outbound).
    Client,
}

/// Called for each peer refused or disconnected because of a revocation.
pub type RejectionHook = Box<dyn Fn(Side) + Send + Sync>;

/// The CRLs in force, shared by every verifier and open connection of a
/// process. Cheap to clone. [`Revocation::none`] (the default) checks
/// nothing and never changes.
#[derive(Clone, Default)]
pub struct Revocation {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    /// The file the CRLs come from, which [`Revocation::watch`] re-reads.
    path: Option<PathBuf>,
    current: RwLock<Arc<CrlSet>>,
    /// Bumped on every replacement; open connections watch it.
    generation: watch::Sender<u64>,
    on_rejection: OnceLock<RejectionHook>,
}

impl fmt::Debug for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shared {
            None => f.write_str("Revocation(none)"),
            Some(_) => write!(f, "Revocation({} CRLs)", self.current().len()),
        }
    }
}

impl Revocation {
    /// No CRLs, ever.
    pub fn none() -> Self {
        Self::default()
    }

    /// Starts with `initial`; [`replace`](Self::replace) changes it.
    pub fn new(initial: CrlSet) -> Self {
        Self::with_path(initial, None)
    }

    fn with_path(initial: CrlSet, path: Option<PathBuf>) -> Self {
        Self {
            shared: Some(Arc::new(Shared {
                path,
                current: RwLock::new(Arc::new(initial)),
                generation: watch::Sender::new(0),
                on_rejection: OnceLock::new(),
            })),
        }
    }

    /// The CRLs of a proxy's `CRL_PATH` setting: none when it is unset.
    pub fn from_setting(path: Option<&Path>) -> Result<Self, Error> {
        path.map_or_else(|| Ok(Self::none()), Self::from_file)
    }

    /// Reads `path`. A file that does not exist yet is an empty set (it is
    /// picked up once it appears); one that cannot be parsed is an error.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let set = match std::fs::read(path) {
            Ok(pem) => CrlSet::from_pem(&pem, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warn!(path = %path.display(), "the CRL file does not exist yet; no certificate is revoked until it does");
                CrlSet::default()
            }
            Err(source) => {
                return Err(Error::CrlFile {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Ok(Self::with_path(set, Some(path.to_path_buf())))
    }

    /// The CRLs in force now.
    pub fn current(&self) -> Arc<CrlSet> {
        match &self.shared {
            None => Arc::default(),
            Some(s) => s.current.read().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// Puts `set` in force, for new handshakes at once and for open
    /// connections as their checks wake up. Does nothing on
    /// [`Revocation::none`].
    pub fn replace(&self, set: CrlSet) {
        if let Some(s) = &self.shared {
            *s.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
            s.generation.send_modify(|g| *g += 1);
        }
    }

    /// Sets what counts rejections (once; later calls are ignored).
    pub fn on_rejection(&self, hook: RejectionHook) {
        if let Some(s) = &self.shared {
            let _ = s.on_rejection.set(hook);
        }
    }

    fn rejected(&self, side: Side) {
        if let Some(hook) = self.shared.as_ref().and_then(|s| s.on_rejection.get()) {
            hook(side);
        }
    }

    /// The chain check of a handshake: to `roots`, for `side`'s peer usage,
    /// with the CRLs in force. A revoked chain is counted.
    pub(crate) fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        roots: &RootCertStore,
        side: Side,
        now: UnixTime,
        provider: &CryptoProvider,
    ) -> Result<(), webpki::Error> {
        let result =
            self.current()
                .verify(end_entity, intermediates, roots, usage(side), now, provider);
        if matches!(result, Err(webpki::Error::CertRevoked)) {
            self.rejected(side);
        }
        result
    }

    /// A watch on the peer of a connection whose `side` verifies it with
    /// `roots`. Made before the handshake, so that CRLs replaced while it
    /// runs count as changes (see [`PeerCheck::revoked`]).
    pub fn peer(
        &self,
        side: Side,
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> PeerCheck {
        PeerCheck {
            changes: self.shared.as_ref().map(|s| s.generation.subscribe()),
            revocation: self.clone(),
            side,
            roots,
            verified_at: UnixTime::now(),
            provider,
        }
    }

    /// Re-reads the file these CRLs came from every [`POLL_INTERVAL`] until
    /// `stop` resolves (see [`watch_file`](Self::watch_file)); returns at
    /// once when they come from no file.
    pub async fn watch(self, stop: impl Future<Output = ()>) {
        let Some(path) = self.shared.as_ref().and_then(|s| s.path.clone()) else {
            return;
        };
        self.watch_file(path, POLL_INTERVAL, stop).await;
    }

    /// Re-reads `path` every `period` until `stop` resolves, putting each
    /// new content in force. Errors keep the CRLs in force (see the module
    /// invariant), and so does a file without a CRL, which is what a writer
    /// that truncates first leaves for a moment: to lift every revocation,
    /// write a CRL that lists none.
    pub async fn watch_file(self, path: PathBuf, period: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        // Nothing counts as read yet: the first tick puts the file in force
        // again, so a change since `from_file` is not missed.
        let mut last: Option<Vec<u8>> = None;
        // Each problem is logged once, until the file changes.
        let mut unreadable = false;
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = &mut stop => return,
            }
            let read = match tokio::fs::read(&path).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    if !std::mem::replace(&mut unreadable, true) {
                        warn!(path = %path.display(), error = %e, "cannot read the CRL file; the CRLs read before stay in force");
                    }
                    continue;
                }
            };
            unreadable = false;
            if last.as_ref() == Some(&read) {
                continue;
            }
            match CrlSet::from_pem(&read, &path.display().to_string()) {
                Ok(set) if set.is_empty() && !self.current().is_empty() => {
                    warn!(path = %path.display(), "the CRL file holds no CRL; the CRLs read before stay in force (write a CRL that lists nothing to lift them)");
                }
                Ok(set) => {
                    info!(path = %path.display(), crls = set.len(), "CRLs reloaded");
                    self.replace(set);
                }
                Err(e) => {
                    error!(error = %e, "the CRL file is invalid; the CRLs read before stay in force");
                }
            }
            last = Some(read);
        }
    }
}

fn usage(side: Side) -> KeyUsage {
    match side {
        Side::Server => KeyUsage::client_auth(),
        Side::Client => KeyUsage::server_auth(),
    }
}

/// The peer of one connection, re-checked against each new set of CRLs
/// put in force since the check was made (the handshake checked the ones
/// before).
pub struct PeerCheck {
    /// Marks the CRLs the handshake saw; `None` without CRLs.
    changes: Option<watch::Receiver<u64>>,
    revocation: Revocation,
    side: Side,
    roots: Arc<RootCertStore>,
    /// About when the handshake verified the chain: re-checks use this
    /// time, so that only a revocation (not an expiry, which does not end
    /// open tunnels) can fail them.
    verified_at: UnixTime,
    provider: Arc<CryptoProvider>,
}

impl PeerCheck {
    /// Resolves once CRLs put in force after this check was made revoke a
    /// certificate of `chain`, the peer's (counted as a rejection). Never
    /// resolves without CRLs.
    pub fn revoked(
        self,
        chain: Option<&[CertificateDer<'static>]>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let chain = chain.map(<[_]>::to_vec).unwrap_or_default();
        async move {
            let (Some(mut changes), Some((leaf, intermediates))) =
                (self.changes, chain.split_first())
            else {
                return std::future::pending().await;
            };
            // The sender lives as long as the revocation, which we hold.
            while changes.changed().await.is_ok() {
                let result = self.revocation.current().verify(
                    leaf,
                    intermediates,
                    &self.roots,
                    usage(self.side),
                    self.verified_at,
                    &self.provider,
                );
                if matches!(result, Err(webpki::Error::CertRevoked)) {
                    self.revocation.rejected(self.side);
                    return;
                }
            }
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests;

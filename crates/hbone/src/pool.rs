//! Sharing HBONE connections between user connections.
//!
//! A connection is shared only between requests with the same
//! [`WorkloadKey`]: same source identity, same expected destination
//! identities, same next-hop address and same client IP. Each carries at most
//! `max_streams_per_connection` streams; a connection that reaches the limit
//! leaves the pool (its streams carry on) and the next request dials anew.
//! Connections unused for `pool_idle_timeout` are released.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use mesh_core::Identity;
use mesh_core::wait::Wait;
use mesh_tls::SecretManager;
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tracing::debug;

use crate::client::{self, ConnectRequest, Connection};
use crate::config::H2Config;
use crate::error::Error;
use crate::stream::H2Stream;

/// What makes two HBONE connections interchangeable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadKey {
    /// The identity this side presents.
    pub src_id: Identity,
    /// The identities the server may prove (any one suffices).
    pub dst_id: Vec<Identity>,
    /// The next hop, normally `podIP:15008`.
    pub dst: SocketAddr,
    /// The downstream client's IP.
    pub src: IpAddr,
}

/// Creates the sockets the pool dials from. In-pod mode creates them inside
/// the pod's network namespace with the mesh's packet mark.
pub trait SocketFactory: Send + Sync + 'static {
    fn tcp_socket(&self, dst: &SocketAddr) -> io::Result<TcpSocket>;
}

/// Plain sockets in the current network namespace.
#[derive(Debug, Default)]
pub struct DefaultSocketFactory;

impl SocketFactory for DefaultSocketFactory {
    fn tcp_socket(&self, dst: &SocketAddr) -> io::Result<TcpSocket> {
        match dst {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
    }
}

struct Pooled {
    conn: Connection,
    active: AtomicUsize,
    last_used: Mutex<Instant>,
}

impl Pooled {
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn idle_since(&self) -> Instant {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stream's claim on a pooled connection; released when dropped.
struct Slot(Arc<Pooled>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

struct Inner {
    certs: SecretManager,
    config: H2Config,
    sockets: Arc<dyn SocketFactory>,
    /// Connections that can take more streams.
    ready: Mutex<HashMap<WorkloadKey, Vec<Arc<Pooled>>>>,
    /// One dial at a time per key; later callers wait and then reuse.
    dialing: Mutex<HashMap<WorkloadKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// The HBONE client connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    pub fn new(certs: SecretManager, config: H2Config, sockets: Arc<dyn SocketFactory>) -> Self {
        let inner = Arc::new(Inner {
            certs,
            config,
            sockets,
            ready: Default::default(),
            dialing: Default::default(),
        });
        tokio::spawn(reap(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Opens a CONNECT stream to `key.dst`, reusing a pooled connection when
    /// one has room. A connection that turns out to be dead or draining is
    /// discarded and the request tried once more on a fresh one (see
    /// [`may_retry`]).
    pub async fn connect(
        &self,
        key: &WorkloadKey,
        request: &ConnectRequest,
    ) -> Result<H2Stream, Error> {
        let mut retried = false;
        loop {
            let (slot, fresh) = self.checkout(key).await?;
            match slot.0.conn.connect(request).await {
                Ok((send, recv)) => return Ok(H2Stream::new(send, recv, Some(Arc::new(slot)))),
                Err(Error::H2(e)) if !retried && may_retry(&e, fresh) => {
                    debug!(dst = %key.dst, error = %e, "HBONE connection cannot take the stream; redialling");
                    self.discard(key, &slot.0);
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Connections currently in the pool with room for more streams.
    pub fn pooled_connections(&self) -> usize {
        self.lock_ready().values().map(Vec::len).sum()
    }

    async fn checkout(&self, key: &WorkloadKey) -> Result<(Slot, bool), Error> {
        if let Some(slot) = self.reuse(key) {
            return Ok((slot, false));
        }
        let lock = self
            .inner
            .dialing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _dialing = lock.lock().await;
        if let Some(slot) = self.reuse(key) {
            return Ok((slot, false));
        }
        // Boxed: the TLS and HTTP/2 handshakes are a large future, and a
        // caller's task would otherwise hold its size for its whole life.
        let result = Box::pin(self.dial(key)).await;
        self.inner
            .dialing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        let pooled = Arc::new(Pooled {
            conn: result?,
            active: AtomicUsize::new(1),
            last_used: Mutex::new(Instant::now()),
        });
        if self.inner.config.max_streams_per_connection > 1 {
            self.lock_ready()
                .entry(key.clone())
                .or_default()
                .push(pooled.clone());
        }
        Ok((Slot(pooled), true))
    }

    fn reuse(&self, key: &WorkloadKey) -> Option<Slot> {
        let max = self.inner.config.max_streams_per_connection;
        let mut ready = self.lock_ready();
        let list = ready.get_mut(key)?;
        // A connection whose certificates have ended takes no new stream
        // (its open streams carry on): the next one needs a handshake with
        // valid certificates, which fails while none can be had.
        let now = std::time::SystemTime::now();
        list.retain(|p| p.conn.is_usable(now));
        let idx = list
            .iter()
            .position(|p| p.active.load(Ordering::Acquire) < max)?;
        let pooled = list[idx].clone();
        let now_active = pooled.active.fetch_add(1, Ordering::AcqRel) + 1;
        pooled.touch();
        if now_active >= max {
            list.swap_remove(idx);
        }
        if list.is_empty() {
            ready.remove(key);
        }
        Some(Slot(pooled))
    }

    fn discard(&self, key: &WorkloadKey, dead: &Arc<Pooled>) {
        let mut ready = self.lock_ready();
        if let Some(list) = ready.get_mut(key) {
            list.retain(|p| !Arc::ptr_eq(p, dead));
            if list.is_empty() {
                ready.remove(key);
            }
        }
    }

    async fn dial(&self, key: &WorkloadKey) -> Result<Connection, Error> {
        let cert = self.inner.certs.fetch_certificate(&key.src_id).await?;
        let addr = key.dst;
        let socket = self
            .inner
            .sockets
            .tcp_socket(&addr)
            .map_err(|source| Error::Connect { addr, source })?;
        // Leave from the client's own address when it is ours to use (in-pod,
        // it always is), so the destination sees the real source.
        if key.src.is_ipv4() == addr.is_ipv4()
            && let Err(e) = socket.bind(SocketAddr::new(key.src, 0))
        {
            debug!(src = %key.src, error = %e, "cannot dial from the client's address");
        }
        let tcp = tokio::time::timeout(self.inner.config.connect_timeout, socket.connect(addr))
            .await
            .map_err(|_| {
                Wait::HboneConnect.timed_out();
                Error::ConnectTimeout { addr }
            })?
            .map_err(|source| Error::Connect { addr, source })?;
        debug!(dst = %addr, src_id = %key.src_id, "dialled new HBONE connection");
        client::handshake(tcp, addr, &cert, key.dst_id.clone(), &self.inner.config).await
    }

    fn lock_ready(&self) -> std::sync::MutexGuard<'_, HashMap<WorkloadKey, Vec<Arc<Pooled>>>> {
        // Every critical section leaves the map consistent; poisoning carries no meaning here.
        self.inner.ready.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a CONNECT that failed with `e` may be sent again on a new
/// connection. A GOAWAY (the server is draining, as an upgraded ztunnel
/// does) and a REFUSED_STREAM reset both mean the server never processed
/// the stream (RFC 9113 §8.7), so a retry cannot duplicate anything. Any
/// other failure of a pooled connection means the connection died while
/// idle; a reset of the stream itself is the server's answer and stands.
fn may_retry(e: &h2::Error, fresh: bool) -> bool {
    let unprocessed = e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM);
    unprocessed || (!fresh && !e.is_reset())
}

/// Releases idle and dead connections until the pool is dropped.
async fn reap(pool: Weak<Inner>) {
    let period = match pool.upgrade() {
        Some(p) => (p.config.pool_idle_timeout / 4).clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(30),
        ),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = pool.upgrade() else { return };
        let idle_timeout = inner.config.pool_idle_timeout;
        let mut ready = inner.ready.lock().unwrap_or_else(|e| e.into_inner());
        ready.retain(|_, list| {
            list.retain(|p| {
                let idle = p.active.load(Ordering::Acquire) == 0
                    && p.idle_since().elapsed() >= idle_timeout;
                !idle && p.conn.is_usable(std::time::SystemTime::now())
            });
            !list.is_empty()
        });
    }
}

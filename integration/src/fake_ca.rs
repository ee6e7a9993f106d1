//! A certificate authority that answers as a test tells it to, over the
//! real gRPC API (`IstioCertificateService/CreateCertificate`) and TLS:
//! the fault matrix's scriptable CA (reliability.md K3).
//!
//! It signs with the mesh's own CA (so its good answers are trusted by
//! every proxy of the mesh) and, when told, with another root, or with a
//! validity window of the test's choosing. It counts every request, by
//! identity, and the most it had in hand at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use istiod_lite::ca::authority::CertificateAuthority;
use istiod_lite::ca::service::IMPERSONATED_IDENTITY;
use mesh_core::{Identity, TrustDomain};
use mesh_proto::istio::v1::auth::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use mesh_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use prost_types::value::Kind;
use tonic::{Request, Response, Status};

/// What the CA answers next, to every request, until told otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A certificate from the mesh root, for the lifetime asked for.
    Good,
    /// A chain that ends in another root (the leaf signed by it).
    OtherRoot,
    /// A good chain with another root appended after the mesh root.
    AppendedRoot,
    /// A good chain whose lifetime is this long, whatever was asked.
    Lifetime(Duration),
    /// A certificate that ended an hour ago.
    Expired,
    /// A certificate that begins in an hour.
    NotYetValid,
    /// A certificate already past its refresh point: 90 % of its life gone.
    DueOnArrival,
    /// No answer at all: the call hangs.
    Hang,
    /// Each identity's first request is refused as an overloaded CA
    /// refuses (`Unavailable`); later ones get a good answer after this
    /// long.
    RefuseFirstThenSlow(Duration),
}

/// A running fake CA.
pub struct FakeCa {
    pub addr: SocketAddr,
    /// The mesh root: what the proxies trust (`CA_ROOT_CA`).
    pub root_pem: String,
    /// The other root, which signs nothing the mesh trusts.
    pub other: Arc<CertificateAuthority>,
    state: Arc<Script>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

struct Script {
    answer: Mutex<Answer>,
    requests: Mutex<Vec<Instant>>,
    by_identity: Mutex<HashMap<Identity, Vec<Instant>>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// Counts a request in hand until dropped.
struct InFlight<'a>(&'a Script);

impl<'a> InFlight<'a> {
    fn new(script: &'a Script) -> Self {
        let now = script.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        script.most_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(script)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeCa {
    /// Serves on `ip` (port chosen by the kernel), signing with `mesh`.
    pub async fn start(ip: std::net::IpAddr, mesh: Arc<CertificateAuthority>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let other = Arc::new(
            CertificateAuthority::load_or_generate(dir.path(), TrustDomain::default())
                .expect("another root"),
        );
        let (chain, key) = mesh
            .issue_serving(&[ip.to_string()])
            .expect("a serving certificate for the fake CA");
        let tls = istiod_lite::grpc::server_config(&chain, &key).expect("TLS config");
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(Script {
            answer: Mutex::new(Answer::Good),
            requests: Mutex::new(Vec::new()),
            by_identity: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        });
        let service = Service {
            mesh: mesh.clone(),
            other: other.clone(),
            state: state.clone(),
        };
        let router = tonic::transport::Server::builder()
            .add_service(IstioCertificateServiceServer::new(service));
        let task = tokio::spawn(async move {
            let _ = istiod_lite::grpc::serve(listener, tls, router, std::future::pending()).await;
        });
        Self {
            addr,
            root_pem: mesh.root_pem().to_string(),
            other,
            state,
            task,
            _dir: dir,
        }
    }

    /// From now on, answer every request with `answer`.
    pub fn answer(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    /// How many requests arrived at or after `since`.
    pub fn requests_since(&self, since: Instant) -> usize {
        let requests = self.state.requests.lock().unwrap();
        requests.iter().filter(|t| **t >= since).count()
    }

    /// When each identity's requests arrived.
    pub fn requests_by_identity(&self) -> HashMap<Identity, Vec<Instant>> {
        self.state.by_identity.lock().unwrap().clone()
    }

    /// The most requests the CA had in hand at once.
    pub fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for FakeCa {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Service {
    mesh: Arc<CertificateAuthority>,
    other: Arc<CertificateAuthority>,
    state: Arc<Script>,
}

#[tonic::async_trait]
impl IstioCertificateService for Service {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let arrived = Instant::now();
        self.state.requests.lock().unwrap().push(arrived);
        let _in_flight = InFlight::new(&self.state);
        let answer = *self.state.answer.lock().unwrap();
        let body = request.into_inner();
        let identity: Identity = body
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) => s.parse().ok(),
                _ => None,
            })
            .ok_or_else(|| Status::invalid_argument("the fake CA needs ImpersonatedIdentity"))?;
        let nth = {
            let mut by_identity = self.state.by_identity.lock().unwrap();
            let times = by_identity.entry(identity.clone()).or_default();
            times.push(arrived);
            times.len()
        };
        let asked = Duration::from_secs(body.validity_duration.max(1) as u64);
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let window = |ca: &CertificateAuthority, from: SystemTime, to: SystemTime| {
            ca.sign_window(&body.csr, &identity, from, to)
                .map_err(|e| Status::invalid_argument(e.to_string()))
        };
        let chain = match answer {
            Answer::Hang => std::future::pending().await,
            Answer::RefuseFirstThenSlow(_) if nth == 1 => {
                return Err(Status::unavailable("the fake CA is overloaded; try again"));
            }
            Answer::RefuseFirstThenSlow(delay) => {
                tokio::time::sleep(delay).await;
                window(&self.mesh, now, now + asked)?
            }
            Answer::Good => window(&self.mesh, now, now + asked)?,
            Answer::OtherRoot => window(&self.other, now, now + asked)?,
            Answer::AppendedRoot => {
                let mut chain = window(&self.mesh, now, now + asked)?;
                chain.push(self.other.root_pem().to_string());
                chain
            }
            Answer::Lifetime(life) => window(&self.mesh, now, now + life)?,
            Answer::Expired => window(&self.mesh, now - 2 * hour, now - hour)?,
            Answer::NotYetValid => window(&self.mesh, now + hour, now + 2 * hour)?,
            Answer::DueOnArrival => window(&self.mesh, now - asked.mul_f64(0.9), now + asked / 10)?,
        };
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }
}

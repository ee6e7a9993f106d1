//! ZDS as ztunnel receives it from the CNI node agent.
//!
//! Input: packets, each as a 2-byte big-endian length and that many bytes
//! (a short last packet takes what is left).
//!
//! 1. The transport: each packet goes over a real `SOCK_SEQPACKET` pair
//!    into `ZdsSocket::recv_message::<WorkloadRequest>` (ZDS has no length
//!    prefix to parse: one packet is one message).
//! 2. What the messages mean: each decoded request goes to ztunnel's
//!    `WorkloadManager::handle` as its ZDS client would, without a namespace
//!    descriptor (none can be forged from bytes). A protocol error or an
//!    undecodable packet drops the connection; the client reconnects and a
//!    new snapshot starts.
//! 3. The agent's side: the bytes decoded as `ZdsHello` and
//!    `WorkloadResponse`, and the Ack ztunnel would answer round-tripped.
//!
//! Properties: the transport delivers exactly what was sent when it fits
//! (`MAX_MESSAGE`), refuses it when it does not, and reads an empty packet
//! as the peer closing; every request gets the outcome the protocol
//! prescribes (below); readiness holds exactly while a snapshot is being
//! received; and no pod proxy is ever started without a descriptor.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use futures::future::BoxFuture;
use libfuzzer_sys::fuzz_target;
use mesh_core::Identity;
use mesh_runtime::readiness::Ready;
use mesh_tls::{CertificateSource, SecretManager, SecretManagerConfig, WorkloadCertificate};
use mesh_zds::{
    MAX_MESSAGE, WorkloadRequest, WorkloadResponse, ZdsError, ZdsHello, ZdsSocket,
    workload_request::Payload, workload_response,
};
use prost::Message;
use tokio::runtime::Runtime;
use ztunnel::config::{Config, InpodConfig};
use ztunnel::inpod::manager::{Outcome, WorkloadManager};
use ztunnel::metrics::{TrafficMetrics, WorkloadManagerMetrics};
use ztunnel::proxy::ProxyInputs;
use ztunnel::proxy::connections::ConnectionManager;
use ztunnel::socket::Sockets;

/// A CA that is never reached: nothing here asks for a certificate.
struct NoCa;

impl CertificateSource for NoCa {
    fn fetch(&self, _: &Identity) -> BoxFuture<'_, Result<WorkloadCertificate, mesh_tls::Error>> {
        Box::pin(async { Err(mesh_tls::Error::EmptyChain) })
    }
}

struct Harness {
    runtime: Runtime,
    /// The agent's end and ztunnel's end of one ZDS connection.
    agent: ZdsSocket,
    ztunnel: ZdsSocket,
    inputs: Arc<ProxyInputs>,
    inpod: InpodConfig,
}

impl Harness {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        let _entered = runtime.enter();
        let env: HashMap<&str, &str> = HashMap::from([
            (ztunnel::config::NODE_NAME, "fuzz-node"),
            (
                ztunnel::config::CA_ROOT_CA,
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            ),
            (ztunnel::config::AUTH_TOKEN, "fuzz-token"),
            (ztunnel::config::INPOD_ENABLED, "true"),
        ]);
        let config = Config::from_env(|k| env.get(k).map(|v| v.to_string())).expect("config");
        let inpod = config.inpod.clone().expect("in-pod mode");
        let certs = SecretManager::new(Arc::new(NoCa), SecretManagerConfig::default());
        let mut registry = prometheus_client::registry::Registry::default();
        let inputs = Arc::new(ProxyInputs {
            pool: mesh_hbone::Pool::new(certs.clone(), config.h2.clone(), Arc::new(Sockets::Host)),
            config: Arc::new(config),
            state: Arc::new(ztunnel::state::ProxyState::new()),
            certs,
            connections: ConnectionManager::default(),
            sockets: Sockets::Host,
            metrics: TrafficMetrics::new(&mut registry),
        });
        let (agent, ztunnel) = ZdsSocket::pair().expect("a socket pair");
        drop(_entered);
        Self {
            runtime,
            agent,
            ztunnel,
            inputs,
            inpod,
        }
    }
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

/// Splits the input into packets.
fn packets(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let [hi, lo, rest @ ..] = data {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        let mut h = h.borrow_mut();
        let h = h.get_or_insert_with(Harness::new);
        let packets = packets(data);
        for packet in &packets {
            transport(h, packet);
            agent_side(packet);
        }
        protocol(h, &packets);
    });
});

/// One packet over the real socket pair.
fn transport(h: &Harness, packet: &[u8]) {
    let fd = h.agent.as_fd().as_raw_fd();
    nix::sys::socket::send(fd, packet, nix::sys::socket::MsgFlags::MSG_DONTWAIT)
        .expect("the socket pair takes one packet");
    let received = h
        .runtime
        .block_on(h.ztunnel.recv_message::<WorkloadRequest>());
    match received {
        _ if packet.len() > MAX_MESSAGE => {
            assert!(matches!(received, Err(ZdsError::Truncated)), "{received:?}");
        }
        _ if packet.is_empty() => {
            assert!(matches!(received, Err(ZdsError::Closed)), "{received:?}");
        }
        Ok((request, fds)) => {
            assert!(fds.is_empty());
            assert_eq!(WorkloadRequest::decode(packet).ok(), Some(request));
        }
        Err(ZdsError::Decode { .. }) => assert!(WorkloadRequest::decode(packet).is_err()),
        Err(e) => panic!("unexpected transport error: {e}"),
    }
}

/// What the agent reads from ztunnel: the hello, then Acks.
fn agent_side(packet: &[u8]) {
    let _ = ZdsHello::decode(packet);
    if let Ok(response) = WorkloadResponse::decode(packet)
        && let Some(workload_response::Payload::Ack(ack)) = response.payload
    {
        let result = if ack.error.is_empty() {
            Ok(())
        } else {
            Err(ack.error.clone())
        };
        let again = WorkloadResponse::decode(mesh_zds::ack(result).encode_to_vec().as_slice())
            .expect("our own Ack decodes");
        assert_eq!(
            again.payload,
            Some(workload_response::Payload::Ack(ack)),
            "the Ack's text changed on the way"
        );
    }
}

/// The requests through a fresh `WorkloadManager`, checked against the
/// protocol: an add needs a descriptor; a keep is only valid inside a
/// snapshot; a delete always is; `SnapshotSent` ends the snapshot, and a
/// second one is an error; a request without a payload is an error.
fn protocol(h: &Harness, packets: &[&[u8]]) {
    let _entered = h.runtime.enter();
    let ready = Ready::new();
    let mut manager = WorkloadManager::new(
        h.inputs.clone(),
        h.inpod.clone(),
        &ready,
        Arc::new(WorkloadManagerMetrics::default()),
    );
    manager.connected();
    let mut in_snapshot = true;
    for packet in packets {
        assert_eq!(
            ready.is_ready(),
            !in_snapshot,
            "readiness follows the snapshot"
        );
        let Ok(request) = WorkloadRequest::decode(*packet) else {
            // The client drops the connection and connects again.
            manager.disconnected();
            manager.connected();
            in_snapshot = true;
            continue;
        };
        assert!(!mesh_zds::describe(&request).is_empty());
        let valid = match &request.payload {
            None | Some(Payload::Add(_)) => false,
            Some(Payload::Keep(_)) => in_snapshot,
            Some(Payload::Del(_)) => true,
            Some(Payload::SnapshotSent(_)) => std::mem::take(&mut in_snapshot),
        };
        let outcome = manager.handle(request, Vec::new());
        if valid {
            assert_eq!(outcome, Outcome::Ack);
        } else {
            assert!(matches!(outcome, Outcome::ProtocolError(_)), "{outcome:?}");
            manager.disconnected();
            manager.connected();
            in_snapshot = true;
        }
    }
    assert_eq!(
        ready.is_ready(),
        !in_snapshot,
        "readiness follows the snapshot"
    );
    assert!(
        manager.states().snapshot().is_empty(),
        "a pod proxy started without a namespace descriptor"
    );
}

//! P10 in-process: for 10k and 100k workloads (with a tenth as many
//! Services), the three steps between a model and a ztunnel's state, each
//! timed on its own with the product's code:
//!
//! - translate: `xds::resource_set`, what istiod-lite runs on every model
//!   change (translation, protobuf encoding, content versions);
//! - push: from `Istiod::publish` of that set until one connected
//!   delta-xDS client has received every resource and istiod-lite has
//!   counted its ACKs. The client's handler only counts, so this is
//!   istiod-lite's diff and encoding, gRPC over TLS, and the client's
//!   decoding of the response and its bookkeeping of versions;
//! - apply: ztunnel's `StateHandler` on every resource of the set (decode,
//!   convert to domain types, insert into a fresh `ProxyState`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use istiod_lite::app::Istiod;
use istiod_lite::config::Config as IstiodConfig;
use istiod_lite::translate::{TranslateConfig, Translation};
use istiod_lite::xds::{self, ADDRESS_TYPE, AUTHORIZATION_TYPE, ResourceSet};
use mesh_runtime::drain::{self, DrainMode, DrainTrigger};
use ztunnel::state::ProxyState;
use ztunnel::xds::{Handler, StateHandler};

use super::client::{self, on_cpu};
use super::mesh::{self, Size};
use crate::method::{LOAD_CPU, PROXY_CPU, Plan, Series};
use crate::report::{Goal, Report};

/// The sizes measured; the targets judge the last.
const SIZES: [Size; 2] = [Size::new(10_000), Size::new(100_000)];
/// Long enough for 100k workloads on a busy 2-core machine.
const PUSH_LIMIT: Duration = Duration::from_secs(120);

/// One size's samples, in seconds.
#[derive(Default)]
struct Steps {
    translate: Series,
    push: Series,
    apply: Series,
    /// Heap held by ztunnel's state after an apply, in bytes.
    state_bytes: Series,
}

pub fn run(plan: &Plan, report: &mut Report) {
    let dir = tempfile::tempdir().expect("temp dir");
    let istiod_rt = client::runtime("istiod", PROXY_CPU);
    let client_rt = client::runtime("xds-client", LOAD_CPU);
    // No manifest directory: the mesh is what the benchmark publishes.
    let istiod = istiod_rt
        .block_on(Istiod::start(IstiodConfig::local(dir.path().join("state"))))
        .expect("istiod-lite starts");
    let mut receiver = Receiver::connect(&istiod, &client_rt);

    let mut largest = Steps::default();
    for size in SIZES {
        let steps = measure(
            plan,
            size,
            &dir.path().join(size.label()),
            &istiod,
            &mut receiver,
        );
        let label = size.label();
        report.extra(
            format!("P10.translateSeconds.{label}"),
            steps.translate.median(),
        );
        report.extra(format!("P10.pushSeconds.{label}"), steps.push.median());
        report.extra(format!("P10.applySeconds.{label}"), steps.apply.median());
        report.extra(
            format!("P10.ztunnelStateHeapBytesPerWorkload.{label}"),
            steps.state_bytes.median() / size.workloads as f64,
        );
        largest = steps;
    }
    let size = SIZES[SIZES.len() - 1];
    let mut translate_push = Series::default();
    for (t, p) in largest.translate.samples.iter().zip(&largest.push.samples) {
        translate_push.push(t + p);
    }
    report.absolute(
        "P10",
        format!(
            "translate + push, {} workloads + {} services, one ztunnel",
            size.label(),
            Size::new(size.services()).label()
        ),
        "s",
        translate_push,
        Goal::AtMost(2.0),
        "≤ 2 s",
    );
    report.absolute(
        "P10",
        format!(
            "ztunnel applies {} workloads + {} services",
            size.label(),
            Size::new(size.services()).label()
        ),
        "s",
        largest.apply,
        Goal::AtMost(1.0),
        "≤ 1 s",
    );
    report.note(format!(
        "P10 timings are in-process, one core each: istiod-lite (translation, encoding, the delta-xDS server) on CPU {PROXY_CPU}, \
         the delta-xDS client on CPU {LOAD_CPU}. Translate + push pairs each translation (`xds::resource_set`) with one push, timed \
         from `Istiod::publish` until the client has received every resource and istiod-lite has counted its ACKs; the client \
         only counts resources there, so the push does not include ztunnel's apply, which is timed on its own \
         (ztunnel's `StateHandler` into a fresh `ProxyState`). The synthetic cluster (`control/mesh.rs`): namespaces of 1000 \
         ambient pods, each Service selecting 10 pods of one service account, 100 pods per node."
    ));

    client_rt.block_on(receiver.drain.drain(DrainMode::Immediate));
    istiod_rt.block_on(istiod.shutdown());
}

fn measure(
    plan: &Plan,
    size: Size,
    dir: &std::path::Path,
    istiod: &Istiod,
    receiver: &mut Receiver,
) -> Steps {
    mesh::write(dir, size);
    let model = mesh::read(dir, size);
    let cfg = TranslateConfig::default();
    let expected = size.workloads + size.services();
    let mut steps = Steps::default();
    let mut set = None;
    on_cpu(PROXY_CPU, || {
        for round in 0..plan.rounds {
            let started = Instant::now();
            let generated =
                xds::resource_set(&model, &cfg, &Default::default(), round as u64, false);
            steps.translate.push(started.elapsed().as_secs_f64());
            set = Some(generated.set);
        }
    });
    let set = set.expect("at least one round");
    let addresses = set.of_type(ADDRESS_TYPE).map_or(0, |a| a.len());
    assert_eq!(
        addresses,
        expected,
        "addresses translated for {} workloads",
        size.label()
    );
    on_cpu(LOAD_CPU, || {
        for _ in 0..plan.rounds {
            steps
                .push
                .push(receiver.push(istiod, &set, addresses).as_secs_f64());
        }
    });
    on_cpu(PROXY_CPU, || {
        for _ in 0..plan.rounds {
            let (took, held) = apply(&set, size);
            steps.apply.push(took.as_secs_f64());
            steps.state_bytes.push(held as f64);
        }
    });
    steps
}

/// ztunnel's own handler applying every resource of `set` to a fresh
/// state, in the order istiod-lite pushes them (policies first); returns
/// the time taken and the heap the state holds afterwards.
fn apply(set: &ResourceSet, size: Size) -> (Duration, usize) {
    let heap_before = heap_in_use();
    let state = Arc::new(ProxyState::new());
    let mut handler = StateHandler::new(state.clone(), true);
    let started = Instant::now();
    for type_url in [AUTHORIZATION_TYPE, ADDRESS_TYPE] {
        for (name, r) in set.of_type(type_url).into_iter().flatten() {
            handler
                .apply(type_url, name, &r.body.value)
                .unwrap_or_else(|e| panic!("ztunnel rejects {name}: {e}"));
        }
        handler.answered(type_url);
    }
    let took = started.elapsed();
    let held = heap_in_use().saturating_sub(heap_before);
    assert_eq!(
        state.workloads().len(),
        size.workloads,
        "workloads in ztunnel's state"
    );
    assert_eq!(
        state.services().len(),
        size.services(),
        "services in ztunnel's state"
    );
    (took, held)
}

/// Bytes the allocator has handed out and not had back, over every arena
/// and the chunks it mapped on their own. The benchmark's other threads
/// are idle while it is read, so a difference is what the code between
/// two readings kept.
#[allow(
    unsafe_code,
    reason = "mallinfo2 is glibc's only account of the heap in use"
)]
fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct of
    // counters, read under the allocator's own locks.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks + info.hblkhd
}

/// One delta-xDS client connected to the in-process istiod-lite, counting
/// the addresses it holds.
struct Receiver {
    addresses: Arc<AtomicUsize>,
    generation: u64,
    drain: DrainTrigger,
}

impl Receiver {
    fn connect(istiod: &Istiod, rt: &tokio::runtime::Runtime) -> Self {
        let addresses = Arc::new(AtomicUsize::new(0));
        let (drain, watcher) = drain::new();
        let token = client::ztunnel_token(&istiod.tokens, "bench-node");
        let config =
            client::ztunnel_config(istiod.grpc_addr, istiod.ca.root_pem(), token, "bench-node");
        let counter = Counter {
            addresses: addresses.clone(),
        };
        let ready = client::start(rt, config, counter, watcher);
        client::wait("the xDS client is connected", PUSH_LIMIT, || {
            ready.is_ready()
        });
        Self {
            addresses,
            generation: istiod.resources.borrow().generation,
            drain,
        }
    }

    /// Empties the client, then times the push of `set` (which holds
    /// `addresses` addresses) until every resource is received and ACKed.
    fn push(&mut self, istiod: &Istiod, set: &ResourceSet, addresses: usize) -> Duration {
        self.publish(istiod, ResourceSet::new(&Translation::default(), 0), 0);
        self.publish(istiod, set.clone(), addresses)
    }

    fn publish(&mut self, istiod: &Istiod, mut set: ResourceSet, addresses: usize) -> Duration {
        self.generation += 1;
        set.generation = self.generation;
        let stats = &istiod.xds_stats;
        let started = Instant::now();
        istiod.publish(set);
        client::wait(
            "the client holds every pushed address and istiod-lite counted its ACKs",
            PUSH_LIMIT,
            || {
                self.addresses.load(Ordering::Acquire) == addresses
                    && stats.acks.load(Ordering::Acquire) == stats.responses.load(Ordering::Acquire)
            },
        );
        let took = started.elapsed();
        assert_eq!(
            stats.nacks.load(Ordering::Relaxed),
            0,
            "the client rejected resources"
        );
        took
    }
}

/// A handler that takes every resource without reading it.
struct Counter {
    addresses: Arc<AtomicUsize>,
}

impl Handler for Counter {
    fn types(&self) -> Vec<&'static str> {
        vec![ADDRESS_TYPE, AUTHORIZATION_TYPE]
    }

    fn apply(&mut self, type_url: &str, _name: &str, _body: &[u8]) -> Result<(), String> {
        if type_url == ADDRESS_TYPE {
            self.addresses.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    fn remove(&mut self, type_url: &str, _name: &str) -> bool {
        if type_url == ADDRESS_TYPE {
            self.addresses.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }
}

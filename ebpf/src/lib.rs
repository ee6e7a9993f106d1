//! The eBPF form of in-pod redirection: the kernel programs of `bpf/` and
//! the one place that loads, attaches and detaches them (aya 0.14).
//!
//! Two tc programs in direct-action mode are attached to each interface of
//! an enrolled pod, inside the pod's network namespace: `mesh_egress`
//! turns the application's TCP back into the pod with the redirect mark,
//! `mesh_ingress` hands new connections to ztunnel's listeners with
//! `bpf_sk_assign` (see `bpf/redirect.bpf.c` for the rules).
//!
//! **Invariant:** filters are attached through netlink and belong to the
//! interface, not to this process: they outlive an agent restart (capture
//! never lapses) and go only when [`detach`] removes them or the pod's
//! namespace is destroyed. The programs and maps live as long as a filter
//! or a [`Programs`] holds them, so with no pod enrolled and no
//! [`Programs`] alive, nothing of ours remains in the kernel.

pub mod layout;

use aya::programs::tc::SchedClassifierLink;
use aya::programs::tc::{self, NlOptions, TcAttachOptions, TcError, TcHandle};
use aya::programs::{ProgramError, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};

pub use layout::{Counter, MeshConfig, Settings};

/// The redirection programs, built from `bpf/redirect.bpf.c`.
pub static REDIRECT_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/redirect.bpf.o"));
/// The same programs in a form the verifier refuses (`bpf/reject.bpf.c`),
/// for tests of the failure path.
pub static REJECTED_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/reject.bpf.o"));

pub const EGRESS_PROGRAM: &str = "mesh_egress";
pub const INGRESS_PROGRAM: &str = "mesh_ingress";
pub const STATS_MAP: &str = "mesh_stats";
pub const CONFIG_GLOBAL: &str = "CONFIG";
/// Our filters' tc priority and handle, so a new agent replaces an old
/// agent's filters in place.
pub const FILTER_PRIORITY: u16 = 1000;
pub const FILTER_HANDLE: TcHandle = TcHandle::new(0, 1);

/// Ingress first on attach (so redirected packets are always handled),
/// egress first on detach.
const ATTACH_ORDER: [(&str, TcAttachType); 2] = [
    (INGRESS_PROGRAM, TcAttachType::Ingress),
    (EGRESS_PROGRAM, TcAttachType::Egress),
];

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "the redirection object cannot be used: {0} (is the kernel built with BPF and BTF, and is the agent privileged?)"
    )]
    Object(String),
    #[error("the object has no program `{0}`")]
    MissingProgram(&'static str),
    #[error("the kernel refused program `{program}`: {error}{log}")]
    Load {
        program: &'static str,
        error: String,
        /// The end of the verifier's log, where it says why.
        log: String,
    },
    #[error("attaching `{program}` to {interface} ({direction}): {error}")]
    Attach {
        program: &'static str,
        interface: String,
        direction: &'static str,
        error: String,
    },
    #[error("detaching `{program}` from {interface}: {error}")]
    Detach {
        program: &'static str,
        interface: String,
        error: String,
    },
    #[error("reading the counters: {0}")]
    Counters(String),
}

/// The loaded programs. Dropping it releases this process's hold on them;
/// filters already attached keep them alive.
pub struct Programs {
    ebpf: Ebpf,
}

/// Kernel ids of what [`Programs`] loaded, to find them with bpftool.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelIds {
    pub programs: Vec<u32>,
    pub maps: Vec<u32>,
}

impl Programs {
    /// Loads both programs of `object` with `config`: the verifier checks
    /// them here, before any pod depends on them.
    pub fn load(object: &[u8], config: MeshConfig) -> Result<Self, EbpfError> {
        let mut ebpf = EbpfLoader::new()
            .override_global(CONFIG_GLOBAL, &config, true)
            .load(object)
            .map_err(|e| EbpfError::Object(error_chain(&e)))?;
        for (name, _) in ATTACH_ORDER {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|e| load_error(name, e))?;
        }
        Ok(Self { ebpf })
    }

    /// Attaches both programs to `interface` in the calling thread's
    /// network namespace, replacing ours if an earlier agent attached them,
    /// so capture never lapses.
    pub fn attach(&mut self, interface: &str) -> Result<(), EbpfError> {
        match tc::qdisc_add_clsact(interface) {
            Ok(()) | Err(TcError::AlreadyAttached) => {}
            Err(TcError::NetlinkError(e)) if already_exists(&e) => {}
            Err(e) => {
                return Err(EbpfError::Attach {
                    program: INGRESS_PROGRAM,
                    interface: interface.into(),
                    direction: "clsact qdisc",
                    error: error_chain(&e),
                });
            }
        }
        for (name, direction) in ATTACH_ORDER {
            let program = classifier(&mut self.ebpf, name)?;
            let failed = |e: ProgramError| EbpfError::Attach {
                program: name,
                interface: interface.into(),
                direction: direction_name(direction),
                error: error_chain(&e),
            };
            let existing = SchedClassifierLink::attached(
                interface,
                direction,
                FILTER_PRIORITY,
                FILTER_HANDLE,
                None,
            )
            .map_err(|e| failed(e.into()))?;
            let id = match program.attach_to_link(existing) {
                Ok(id) => id,
                // Nothing there to replace.
                Err(_) => program
                    .attach_with_options(
                        interface,
                        direction,
                        TcAttachOptions::Netlink(NlOptions {
                            priority: FILTER_PRIORITY,
                            handle: FILTER_HANDLE,
                            classid: None,
                        }),
                    )
                    .map_err(failed)?,
            };
            // The filter belongs to the interface from now on (see the
            // crate's invariant); dropping the link would remove it.
            let link = program.take_link(id).map_err(failed)?;
            std::mem::forget(link);
        }
        Ok(())
    }

    /// The kernel ids of the programs and maps.
    pub fn kernel_ids(&self) -> KernelIds {
        let mut ids = KernelIds::default();
        for (_, program) in self.ebpf.programs() {
            if let Ok(info) = program.info() {
                ids.programs.push(info.id());
            }
        }
        ids.maps
            .extend(self.ebpf.maps().filter_map(|(_, map)| map_id(map)));
        ids.programs.sort_unstable();
        ids.maps.sort_unstable();
        ids
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, EbpfError> {
        let map = self
            .ebpf
            .map(STATS_MAP)
            .ok_or_else(|| EbpfError::Counters(format!("no map `{STATS_MAP}`")))?;
        let array = aya::maps::PerCpuArray::<_, u64>::try_from(map)
            .map_err(|e| EbpfError::Counters(error_chain(&e)))?;
        Counter::ALL
            .iter()
            .map(|&c| {
                let per_cpu = array
                    .get(&(c as u32), 0)
                    .map_err(|e| EbpfError::Counters(error_chain(&e)))?;
                Ok((c, per_cpu.iter().sum()))
            })
            .collect()
    }
}

/// Removes our programs from `interface` in the calling thread's network
/// namespace (egress first). Returns whether anything was attached.
pub fn detach(interface: &str) -> Result<bool, EbpfError> {
    let mut any = false;
    for (name, direction) in ATTACH_ORDER.iter().rev() {
        match tc::qdisc_detach_program(interface, *direction, name) {
            Ok(()) => any = true,
            Err(TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(EbpfError::Detach {
                    program: name,
                    interface: interface.into(),
                    error: error_chain(&e),
                });
            }
        }
    }
    Ok(any)
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, EbpfError> {
    ebpf.program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?
        .try_into()
        .map_err(|_| EbpfError::MissingProgram(name))
}

/// A map's kernel id. Our objects hold array maps only (the counters and
/// the settings' `.rodata`).
fn map_id(map: &aya::maps::Map) -> Option<u32> {
    match map {
        aya::maps::Map::PerCpuArray(d) | aya::maps::Map::Array(d) => Some(d.info().ok()?.id()),
        _ => None,
    }
}

fn load_error(program: &'static str, e: ProgramError) -> EbpfError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            // The verdict is at the end, before the verifier's statistics.
            let statistics = ["verification time", "stack depth", "processed "];
            let tail: Vec<&str> = log
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !statistics.iter().any(|s| l.starts_with(s)))
                .rev()
                .take(2)
                .collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            EbpfError::Load {
                program,
                error: format!("the verifier rejected it ({io_error})"),
                log: if tail.is_empty() {
                    String::new()
                } else {
                    format!("; verifier log ends: {}", tail.join(" | "))
                },
            }
        }
        other => EbpfError::Load {
            program,
            error: error_chain(&other),
            log: String::new(),
        },
    }
}

fn direction_name(t: TcAttachType) -> &'static str {
    match t {
        TcAttachType::Ingress => "ingress",
        TcAttachType::Egress => "egress",
        TcAttachType::Custom(_) => "custom",
    }
}

fn already_exists(e: &aya::sys::NetlinkError) -> bool {
    e.raw_os_error()
        .map(|code| std::io::Error::from_raw_os_error(code).kind())
        == Some(std::io::ErrorKind::AlreadyExists)
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

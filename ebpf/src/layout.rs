//! The Rust side of `bpf/mesh.h`: what the agent writes into the programs'
//! settings and how it reads their counters. The header is the definition;
//! `tests/layout.rs` checks these types against the compiled object's BTF.

use std::net::{Ipv4Addr, Ipv6Addr};

/// `struct mesh_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    pub inpod_mark: u32,
    pub redirect_mark: u32,
    pub mark_mask: u32,
    /// Network order, as the packet carries it.
    pub probe_v4: u32,
    pub probe_v6: [u8; 16],
    pub outbound_port: u16,
    pub inbound_plaintext_port: u16,
    pub hbone_port: u16,
    pub reserved: u16,
}

// SAFETY: `MeshConfig` is `repr(C)` plain data: integers and a byte array
// with no padding (checked by the layout test), valid for any bit pattern.
#[allow(unsafe_code)]
unsafe impl aya::Pod for MeshConfig {}

/// The settings in the units operators think in.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub inpod_mark: u32,
    pub redirect_mark: u32,
    pub mark_mask: u32,
    pub probe_v4: Ipv4Addr,
    pub probe_v6: Ipv6Addr,
    pub outbound_port: u16,
    pub inbound_plaintext_port: u16,
    pub hbone_port: u16,
}

impl From<Settings> for MeshConfig {
    fn from(s: Settings) -> Self {
        Self {
            inpod_mark: s.inpod_mark,
            redirect_mark: s.redirect_mark,
            mark_mask: s.mark_mask,
            probe_v4: u32::from_ne_bytes(s.probe_v4.octets()),
            probe_v6: s.probe_v6.octets(),
            outbound_port: s.outbound_port,
            inbound_plaintext_port: s.inbound_plaintext_port,
            hbone_port: s.hbone_port,
            reserved: 0,
        }
    }
}

/// `enum mesh_counter`: the indexes of the `mesh_stats` per-CPU array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    OutboundCaptured = 0,
    InboundCaptured = 1,
    EgressRedirected = 2,
    DroppedNoListener = 3,
    DroppedAssign = 4,
    DroppedMalformed = 5,
    TimeWaitCleared = 6,
}

impl Counter {
    pub const ALL: [Counter; 7] = [
        Counter::OutboundCaptured,
        Counter::InboundCaptured,
        Counter::EgressRedirected,
        Counter::DroppedNoListener,
        Counter::DroppedAssign,
        Counter::DroppedMalformed,
        Counter::TimeWaitCleared,
    ];
    /// `MESH_COUNTERS`, the array's size.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The C enumerator's name.
    pub fn c_name(self) -> &'static str {
        match self {
            Counter::OutboundCaptured => "MESH_OUTBOUND_CAPTURED",
            Counter::InboundCaptured => "MESH_INBOUND_CAPTURED",
            Counter::EgressRedirected => "MESH_EGRESS_REDIRECTED",
            Counter::DroppedNoListener => "MESH_DROPPED_NO_LISTENER",
            Counter::DroppedAssign => "MESH_DROPPED_ASSIGN",
            Counter::DroppedMalformed => "MESH_DROPPED_MALFORMED",
            Counter::TimeWaitCleared => "MESH_TIME_WAIT_CLEARED",
        }
    }

    /// The key in the agent's status.
    pub fn key(self) -> &'static str {
        match self {
            Counter::OutboundCaptured => "outboundCaptured",
            Counter::InboundCaptured => "inboundCaptured",
            Counter::EgressRedirected => "egressRedirected",
            Counter::DroppedNoListener => "droppedNoListener",
            Counter::DroppedAssign => "droppedAssign",
            Counter::DroppedMalformed => "droppedMalformed",
            Counter::TimeWaitCleared => "timeWaitCleared",
        }
    }
}

//! The boundary where xDS resources (protobuf) become domain types.
//!
//! **Architecture Invariant:** no module outside `xds` names a `mesh_proto`
//! type. Everything past [`TryFrom`] here works on validated domain values, so
//! no other code reasons about protobuf defaults, raw address bytes or
//! unknown enum values.
//!
//! A resource that does not convert is rejected whole, with a
//! [`ConversionError`] naming the offending field by its path in the message
//! (`rules[0].clauses[1].matches[0].source_ips[2]`), so the NACK tells the
//! operator exactly what to fix.

use std::fmt;
use std::net::IpAddr;

use mesh_proto::istio::workload as xds;

use crate::address::{IpNet, max_prefix_len};
use crate::service::Service;
use crate::workload::Workload;

mod authorization;
mod service;
mod workload;

#[cfg(test)]
mod tests;

/// Why a resource could not become a domain value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConversionError {
    /// Path of the offending field in the protobuf message, e.g.
    /// `rules[0].clauses[1].matches[0].source_ips[2]`.
    pub field: String,
    pub reason: String,
}

impl ConversionError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error, seen from the message that contains `parent`.
    fn within(self, parent: impl fmt::Display) -> Self {
        let field = if self.field.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.field)
        };
        Self { field, ..self }
    }
}

/// An xDS `Address` resource: a workload or a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Workload(Workload),
    Service(Service),
}

impl TryFrom<&xds::Address> for Address {
    type Error = ConversionError;

    fn try_from(a: &xds::Address) -> Result<Self, Self::Error> {
        use xds::address::Type;
        match &a.r#type {
            Some(Type::Workload(w)) => Ok(Self::Workload(
                Workload::try_from(w).map_err(|e| e.within("workload"))?,
            )),
            Some(Type::Service(s)) => Ok(Self::Service(
                Service::try_from(s).map_err(|e| e.within("service"))?,
            )),
            None => Err(ConversionError::new(
                "type",
                "neither workload nor service is set",
            )),
        }
    }
}

/// Converts each element of the repeated field `field`, naming the index of
/// the first that fails.
fn each<'a, T, U>(
    field: &str,
    items: &'a [T],
    convert: impl Fn(&'a T) -> Result<U, ConversionError>,
) -> Result<Vec<U>, ConversionError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| convert(item).map_err(|e| e.within(format_args!("{field}[{i}]"))))
        .collect()
}

/// A raw 4- or 16-byte IP.
fn ip(bytes: &[u8]) -> Result<IpAddr, ConversionError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::from(v4));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::from(v6));
    }
    Err(ConversionError::new(
        "",
        format!("address must be 4 or 16 bytes, got {}", bytes.len()),
    ))
}

/// A raw IP and a prefix length (host bits are cleared).
fn ip_net(bytes: &[u8], prefix_len: u32) -> Result<IpNet, ConversionError> {
    let addr = ip(bytes)?;
    let max = max_prefix_len(addr);
    u8::try_from(prefix_len)
        .ok()
        .and_then(|len| IpNet::new(addr, len).ok())
        .ok_or_else(|| {
            ConversionError::new(
                "",
                format!("prefix length {prefix_len} is longer than the {max} bits of {addr}"),
            )
        })
}

/// A TCP port carried in a `uint32`.
fn port(port: u32) -> Result<u16, ConversionError> {
    u16::try_from(port).map_err(|_| ConversionError::new("", format!("port {port} is above 65535")))
}

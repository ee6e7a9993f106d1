//! The checks an inbound HBONE CONNECT must pass before any policy is
//! consulted: it is a CONNECT, its `:authority` is an `ip:port`, that IP is
//! the address the connection was made to, and the port is not one of the
//! proxy's own.
//!
//! Kept free of I/O so that it can be unit-tested and fuzzed (`fuzz/`,
//! target `hbone_connect`) on its own.
//!
//! **Invariant:** an accepted target has the local IP and a port outside
//! [`PROXY_PORTS`]; a tunnel never reaches another address, nor loops back
//! into the proxy.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::{Method, StatusCode};

use crate::proxy::PROXY_PORTS;

/// Why a CONNECT request was refused before policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// Only CONNECT opens a tunnel.
    NotConnect(Method),
    /// No `:authority`, or one that is neither `ip:port` nor `host:port`.
    BadAuthority(Option<String>),
    /// A `host:port` authority: resolving a hostname needs the service
    /// registry (double HBONE), which this proxy does not do.
    Hostname(String),
    /// The authority names another IP than the one the client connected to.
    OtherAddress { target: SocketAddr, local: IpAddr },
    /// The authority names one of the proxy's own ports (a loop).
    ProxyPort(SocketAddr),
}

impl ConnectRefusal {
    /// The HTTP status the client is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ConnectRefusal::Hostname(_) | ConnectRefusal::ProxyPort(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ConnectRefusal::NotConnect(_)
            | ConnectRefusal::BadAuthority(_)
            | ConnectRefusal::OtherAddress { .. } => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for ConnectRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectRefusal::NotConnect(m) => write!(f, "method {m} is not CONNECT"),
            ConnectRefusal::BadAuthority(None) => f.write_str("the request has no :authority"),
            ConnectRefusal::BadAuthority(Some(a)) => {
                write!(f, ":authority {a:?} is not ip:port")
            }
            ConnectRefusal::Hostname(a) => write!(
                f,
                ":authority {a:?} is a hostname; only ip:port targets are served"
            ),
            ConnectRefusal::OtherAddress { target, local } => write!(
                f,
                "target {target} is not the address the connection was made to ({local})"
            ),
            ConnectRefusal::ProxyPort(target) => {
                write!(f, "target {target} is one of the proxy's own ports")
            }
        }
    }
}

/// The tunnel target of a CONNECT request that arrived on a connection to
/// `local`, or why it is refused.
pub fn connect_target(
    method: &Method,
    authority: Option<&str>,
    local: IpAddr,
) -> Result<SocketAddr, ConnectRefusal> {
    if method != Method::CONNECT {
        return Err(ConnectRefusal::NotConnect(method.clone()));
    }
    let Some(authority) = authority else {
        return Err(ConnectRefusal::BadAuthority(None));
    };
    let Ok(target) = authority.parse::<SocketAddr>() else {
        return Err(if is_host_port(authority) {
            ConnectRefusal::Hostname(authority.to_string())
        } else {
            ConnectRefusal::BadAuthority(Some(authority.to_string()))
        });
    };
    // The tunnel may only reach the workload the connection was addressed to.
    if target.ip() != local {
        return Err(ConnectRefusal::OtherAddress { target, local });
    }
    if PROXY_PORTS.contains(&target.port()) {
        return Err(ConnectRefusal::ProxyPort(target));
    }
    Ok(target)
}

/// `host:port` with a non-empty host and a port that fits in 16 bits.
fn is_host_port(authority: &str) -> bool {
    authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "10.0.0.5";

    fn check(method: Method, authority: Option<&str>) -> Result<SocketAddr, StatusCode> {
        connect_target(&method, authority, LOCAL.parse().unwrap()).map_err(|r| r.status())
    }

    #[test]
    fn a_connect_to_the_local_address_is_accepted() {
        assert_eq!(
            check(Method::CONNECT, Some("10.0.0.5:8080")),
            Ok("10.0.0.5:8080".parse().unwrap())
        );
    }

    #[test]
    fn other_methods_are_bad_requests() {
        for m in [
            Method::GET,
            Method::POST,
            Method::from_bytes(b"PRI").unwrap(),
        ] {
            assert_eq!(
                check(m, Some("10.0.0.5:8080")),
                Err(StatusCode::BAD_REQUEST)
            );
        }
    }

    #[test]
    fn hostnames_are_unavailable_and_garbage_is_a_bad_request() {
        let cases = [
            (Some("echo.default.svc:80"), StatusCode::SERVICE_UNAVAILABLE),
            (Some("echo:65535"), StatusCode::SERVICE_UNAVAILABLE),
            (Some("echo:65536"), StatusCode::BAD_REQUEST),
            (Some(":80"), StatusCode::BAD_REQUEST),
            (Some("10.0.0.5"), StatusCode::BAD_REQUEST),
            (Some(""), StatusCode::BAD_REQUEST),
            (None, StatusCode::BAD_REQUEST),
        ];
        for (authority, want) in cases {
            assert_eq!(
                check(Method::CONNECT, authority),
                Err(want),
                "{authority:?}"
            );
        }
    }

    #[test]
    fn another_address_is_refused_even_when_equivalent() {
        for authority in ["10.0.0.6:8080", "[::ffff:10.0.0.5]:8080", "[::1]:8080"] {
            let r = connect_target(&Method::CONNECT, Some(authority), LOCAL.parse().unwrap());
            assert!(
                matches!(r, Err(ConnectRefusal::OtherAddress { .. })),
                "{authority}: {r:?}"
            );
            assert_eq!(r.unwrap_err().status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn proxy_ports_are_unavailable() {
        for port in PROXY_PORTS {
            assert_eq!(
                check(Method::CONNECT, Some(&format!("{LOCAL}:{port}"))),
                Err(StatusCode::SERVICE_UNAVAILABLE)
            );
        }
    }
}

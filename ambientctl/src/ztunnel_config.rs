//! `ambientctl ztunnel-config`: reads a ztunnel's `/config_dump` (from its
//! admin endpoint or a file) and prints istioctl's columns, or the raw
//! section as JSON or YAML.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::table;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    #[value(alias = "w", alias = "workload")]
    Workloads,
    #[value(alias = "s", alias = "svc", alias = "service")]
    Services,
    #[value(alias = "p", alias = "pol", alias = "policy")]
    Policies,
    #[value(alias = "certs", alias = "cert", alias = "certificate")]
    Certificates,
    #[value(alias = "cons", alias = "connection")]
    Connections,
    All,
    /// The log filter: shown, set with `--level`, or reset with `--reset`.
    Log,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Short,
    Json,
    Yaml,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Narrowing flags (`--workload-namespace` and friends).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub node: Option<String>,
    pub address: Option<String>,
    /// Connections: one direction only.
    pub direction: Option<Direction>,
    /// Connections: one row per connection, client ports included, instead
    /// of one row per distinct peer.
    pub raw: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(
        "cannot reach the ztunnel admin endpoint {addr} (is ztunnel running, and is {addr} \
         its ADMIN_ADDR?)"
    )]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin endpoint {addr} answered {status:?}")]
    Status { addr: String, status: String },
    #[error("reading {0}: {1}")]
    File(String, std::io::Error),
    #[error("the config dump is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// GET `/config_dump` from `addr` (`host:port`).
pub fn fetch(addr: &str) -> Result<Value, DumpError> {
    Ok(serde_json::from_str(&request(
        addr,
        "GET",
        "/config_dump",
    )?)?)
}

/// `POST /logging`: sets the filter to `level` (a level, or istioctl's
/// `target:level,...`), resets it, or (neither) shows it. Returns
/// ztunnel's answer (`current log level is ...`).
pub fn log(addr: &str, level: Option<&str>, reset: bool) -> Result<String, DumpError> {
    let path = match (level, reset) {
        (_, true) => "/logging?reset".to_string(),
        (Some(l), false) => format!("/logging?level={}", query_escape(l)),
        (None, false) => "/logging".to_string(),
    };
    request(addr, "POST", &path)
}

fn query_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '%' | '&' | '#' | '+' | ' ' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// One request to the admin endpoint; the body of a 200.
fn request(addr: &str, method: &str, path: &str) -> Result<String, DumpError> {
    let connect = |source| DumpError::Connect {
        addr: addr.to_string(),
        source,
    };
    let mut s = TcpStream::connect(addr).map_err(connect)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(connect)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .map_err(connect)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(connect)?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    if status.split(' ').nth(1) != Some("200") {
        return Err(DumpError::Status {
            addr: addr.to_string(),
            status: format!("{status}: {}", body.trim()),
        });
    }
    Ok(body.to_string())
}

pub fn read_file(path: &str) -> Result<Value, DumpError> {
    let text = std::fs::read_to_string(path).map_err(|e| DumpError::File(path.into(), e))?;
    Ok(serde_json::from_str(&text)?)
}

/// What to print for `section` of `dump` (`log` is not a section of the
/// dump: it is asked for with [`log`]).
pub fn render(dump: &Value, section: Section, output: Output, filter: &Filter) -> String {
    let sections: &[Section] = match section {
        Section::All => &[
            Section::Workloads,
            Section::Services,
            Section::Policies,
            Section::Certificates,
            Section::Connections,
        ],
        _ => std::slice::from_ref(&section),
    };
    match output {
        Output::Json | Output::Yaml => {
            let value = if section == Section::All {
                dump.clone()
            } else {
                Value::Array(items(dump, section, filter))
            };
            match output {
                Output::Json => serde_json::to_string_pretty(&value).unwrap_or_default() + "\n",
                _ => serde_yaml::to_string(&value).unwrap_or_default(),
            }
        }
        Output::Short => sections
            .iter()
            .map(|s| short(&items(dump, *s, filter), *s))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn key(s: Section) -> &'static str {
    match s {
        Section::Workloads => "workloads",
        Section::Services => "services",
        Section::Policies => "policies",
        Section::Certificates | Section::All | Section::Log => "certificates",
        Section::Connections => "workloadState",
    }
}

fn items(dump: &Value, section: Section, f: &Filter) -> Vec<Value> {
    if section == Section::Connections {
        return connections(dump, f);
    }
    let all = dump[key(section)].as_array().cloned().unwrap_or_default();
    all.into_iter()
        .filter(|v| match section {
            Section::Certificates | Section::All | Section::Log => true,
            _ => f.namespace.as_deref().is_none_or(|ns| v["namespace"] == ns),
        })
        .filter(|v| {
            section != Section::Workloads || f.node.as_deref().is_none_or(|n| v["node"] == n)
        })
        .filter(|v| {
            section != Section::Workloads
                || f.address.as_deref().is_none_or(|a| {
                    v["workloadIps"]
                        .as_array()
                        .is_some_and(|ips| ips.iter().any(|ip| ip == a))
                })
        })
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The waypoint's name from its `namespace/hostname` (or the address).
fn waypoint(v: &Value) -> String {
    match v["destination"].as_str() {
        Some(d) => {
            let host = d.rsplit_once('/').map_or(d, |(_, h)| h);
            host.split('.').next().unwrap_or(host).to_string()
        }
        None => "None".into(),
    }
}

fn short(items: &[Value], section: Section) -> String {
    match section {
        Section::Workloads => table::render(
            2,
            &[
                "NAMESPACE",
                "POD NAME",
                "ADDRESS",
                "NODE",
                "WAYPOINT",
                "PROTOCOL",
            ],
            &items
                .iter()
                .map(|w| {
                    vec![
                        s(&w["namespace"]),
                        s(&w["name"]),
                        s(&w["workloadIps"][0]),
                        s(&w["node"]),
                        waypoint(&w["waypoint"]),
                        s(&w["protocol"]),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        Section::Services => table::render(
            2,
            &[
                "NAMESPACE",
                "SERVICE NAME",
                "SERVICE VIP",
                "WAYPOINT",
                "ENDPOINTS",
            ],
            &items
                .iter()
                .map(|v| {
                    let vip = v["vips"][0]
                        .as_str()
                        .map(|a| a.rsplit_once('/').map_or(a, |(_, ip)| ip).to_string())
                        .unwrap_or_default();
                    let endpoints = v["endpoints"].as_object().map_or(0, |e| e.len());
                    let healthy = v["endpoints"].as_object().map_or(0, |e| {
                        e.values().filter(|x| x["status"] == "Healthy").count()
                    });
                    vec![
                        s(&v["namespace"]),
                        s(&v["name"]),
                        vip,
                        waypoint(&v["waypoint"]),
                        format!("{healthy}/{endpoints}"),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        Section::Policies => table::render(
            2,
            &["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE"],
            &items
                .iter()
                .map(|p| {
                    vec![
                        s(&p["namespace"]),
                        s(&p["name"]),
                        s(&p["action"]),
                        s(&p["scope"]),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        Section::Certificates | Section::All | Section::Log => certificates(items),
        Section::Connections => table::render(
            1,
            &[
                "WORKLOAD",
                "DIRECTION",
                "LOCAL",
                "REMOTE",
                "REMOTE TARGET",
                "PROTOCOL",
            ],
            &items
                .iter()
                .map(|c| {
                    [
                        "workload",
                        "direction",
                        "local",
                        "remote",
                        "remoteTarget",
                        "protocol",
                    ]
                    .iter()
                    .map(|k| s(&c[*k]))
                    .collect()
                })
                .collect::<Vec<_>>(),
        ),
    }
}

/// The open connections of `workloadState`, one item per connection (or,
/// unless `raw`, per distinct peer: the client's ephemeral port dropped and
/// duplicates merged). Outbound: local is the client, remote where ztunnel
/// tunnelled (a pod's or waypoint's HBONE port), remote target where the
/// client aimed. Inbound: local is the delivered-to address, remote the
/// client.
fn connections(dump: &Value, f: &Filter) -> Vec<Value> {
    let strip_port = |a: &str| -> String {
        if f.raw {
            return a.to_string();
        }
        a.parse::<std::net::SocketAddr>()
            .map_or_else(|_| a.to_string(), |sa| sa.ip().to_string())
    };
    let mut rows: Vec<Value> = Vec::new();
    let Some(states) = dump["workloadState"].as_object() else {
        return rows;
    };
    for state in states.values() {
        let namespace = s(&state["namespace"]);
        if f.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            continue;
        }
        let workload = format!("{}.{namespace}", s(&state["name"]));
        for (direction, list) in [
            (Direction::Inbound, "inbound"),
            (Direction::Outbound, "outbound"),
        ] {
            if f.direction.is_some_and(|d| d != direction) {
                continue;
            }
            for c in state["connections"][list].as_array().into_iter().flatten() {
                let (src, original, actual) =
                    (s(&c["src"]), s(&c["originalDst"]), s(&c["actualDst"]));
                let (local, remote, target) = match direction {
                    Direction::Outbound => (strip_port(&src), actual, original),
                    Direction::Inbound => {
                        let target = if original == actual {
                            String::new()
                        } else {
                            original
                        };
                        (actual, strip_port(&src), target)
                    }
                };
                let row = serde_json::json!({
                    "workload": workload,
                    "direction": if direction == Direction::Inbound { "Inbound" } else { "Outbound" },
                    "local": local,
                    "remote": remote,
                    "remoteTarget": target,
                    "protocol": s(&c["protocol"]),
                });
                if f.raw || !rows.contains(&row) {
                    rows.push(row);
                }
            }
        }
    }
    let order =
        |r: &Value| ["workload", "direction", "local", "remote", "remoteTarget"].map(|k| s(&r[k]));
    rows.sort_by_key(order);
    rows
}

fn certificates(items: &[Value]) -> String {
    let now = time::OffsetDateTime::from(SystemTime::now());
    let parse = |v: &Value| {
        v.as_str().and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
    };
    let mut rows = Vec::new();
    for c in items {
        let state = s(&c["state"]);
        let status = state.split(':').next().unwrap_or("").to_string();
        let chain = c["certChain"].as_array().cloned().unwrap_or_default();
        for (i, cert) in chain.iter().enumerate() {
            let kind = match i {
                0 => "Leaf",
                i if i + 1 == chain.len() => "Root",
                _ => "Intermediate",
            };
            let valid = match (parse(&cert["validFrom"]), parse(&cert["expirationTime"])) {
                (Some(from), Some(to)) => from <= now && now < to,
                _ => false,
            };
            rows.push(vec![
                s(&c["identity"]),
                kind.into(),
                status.clone(),
                valid.to_string(),
                s(&cert["serialNumber"]),
                s(&cert["expirationTime"]),
                s(&cert["validFrom"]),
            ]);
        }
        if chain.is_empty() {
            rows.push(vec![
                s(&c["identity"]),
                "Leaf".into(),
                status,
                "false".into(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
    }
    table::render(
        2,
        &[
            "CERTIFICATE NAME",
            "TYPE",
            "STATUS",
            "VALID CERT",
            "SERIAL NUMBER",
            "NOT AFTER",
            "NOT BEFORE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests;

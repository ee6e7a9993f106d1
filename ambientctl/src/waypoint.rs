//! `ambientctl waypoint generate|apply|list|delete|status`, with istioctl's
//! flags, messages and columns (user-surface §2.3).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_yaml::{Mapping, Value};

use crate::store::{Doc, Objects, str_at};
use crate::table;

pub use mesh_model::enrollment::DATAPLANE_MODE;
pub use mesh_model::routes::{USE_WAYPOINT, WAYPOINT_CLASS, WAYPOINT_FOR_LABEL as WAYPOINT_FOR};
/// `istio.io/rev` on a Gateway: the control-plane revision it belongs to.
pub const REVISION: &str = "istio.io/rev";

/// How `--wait` polls.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum WaypointError {
    #[error("invalid name provided for waypoint, 'none' is a reserved value")]
    ReservedName,
    #[error(
        "namespace {0} not found (create it, or enroll it with `ambientctl namespace enroll {0}`)"
    )]
    NoNamespace(String),
    #[error(
        "timed out after {timeout:?} waiting for waypoint {namespace}/{name} to be ready \
         (is the waypoint controller running? in the local mesh, `ambientctl demo up`)"
    )]
    NotReady {
        namespace: String,
        name: String,
        timeout: Duration,
    },
    #[error("either give waypoint names or --all")]
    NothingToDelete,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The Gateway `generate` prints and `apply` writes.
pub fn gateway(
    namespace: &str,
    name: &str,
    traffic: Option<&str>,
    revision: Option<&str>,
) -> Value {
    let mut labels = Mapping::new();
    if let Some(t) = traffic {
        labels.insert(WAYPOINT_FOR.into(), t.into());
    }
    if let Some(r) = revision {
        labels.insert(REVISION.into(), r.into());
    }
    let mut metadata = Mapping::new();
    if !labels.is_empty() {
        metadata.insert("labels".into(), Value::Mapping(labels));
    }
    metadata.insert("name".into(), name.into());
    metadata.insert("namespace".into(), namespace.into());
    let mut listener = Mapping::new();
    listener.insert("name".into(), "mesh".into());
    listener.insert("port".into(), 15008.into());
    listener.insert("protocol".into(), "HBONE".into());
    let mut spec = Mapping::new();
    spec.insert("gatewayClassName".into(), WAYPOINT_CLASS.into());
    spec.insert(
        "listeners".into(),
        Value::Sequence(vec![Value::Mapping(listener)]),
    );
    let mut gw = Mapping::new();
    gw.insert("apiVersion".into(), "gateway.networking.k8s.io/v1".into());
    gw.insert("kind".into(), "Gateway".into());
    gw.insert("metadata".into(), Value::Mapping(metadata));
    gw.insert("spec".into(), Value::Mapping(spec));
    Value::Mapping(gw)
}

pub fn check_name(name: &str) -> Result<(), WaypointError> {
    if name == "none" {
        return Err(WaypointError::ReservedName);
    }
    Ok(())
}

pub struct Apply<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub traffic: Option<&'a str>,
    pub revision: Option<&'a str>,
    pub enroll_namespace: bool,
    pub overwrite: bool,
    pub wait: Option<Duration>,
}

/// Writes the Gateway, labels the namespace if asked, waits if asked.
/// Returns what to print.
pub fn apply(store: &dyn Objects, a: &Apply<'_>, out: &mut String) -> Result<(), WaypointError> {
    check_name(a.name)?;
    let ns = store
        .get("Namespace", "", a.namespace)?
        .ok_or_else(|| WaypointError::NoNamespace(a.namespace.to_string()))?;
    if ns.label(DATAPLANE_MODE) != Some("ambient") {
        let _ = writeln!(
            out,
            "⚠️ Warning: namespace {0} is not enrolled in ambient. Consider running \"ambientctl namespace enroll {0}\"",
            a.namespace
        );
    }
    store.apply(gateway(a.namespace, a.name, a.traffic, a.revision))?;
    let _ = writeln!(out, "✅ waypoint {}/{} applied", a.namespace, a.name);
    if a.enroll_namespace {
        match ns.label(USE_WAYPOINT) {
            Some(current) if current != a.name && !a.overwrite => {
                let _ = writeln!(
                    out,
                    "⚠️ Warning: namespace ({}) already has an enrolled Waypoint. Consider adding the --overwrite flag",
                    a.namespace
                );
            }
            _ => {
                let mut object = ns.object.clone();
                set_label(&mut object, USE_WAYPOINT, Some(a.name));
                store.apply(object)?;
                let _ = writeln!(
                    out,
                    "✅ namespace {} labeled with \"{USE_WAYPOINT}: {}\"",
                    a.namespace, a.name
                );
            }
        }
    }
    if let Some(timeout) = a.wait {
        wait_programmed(store, a.namespace, a.name, timeout)?;
        let _ = writeln!(out, "✅ waypoint {}/{} is ready!", a.namespace, a.name);
    }
    Ok(())
}

/// Sets (or with `None` removes) a label on an object.
pub fn set_label(object: &mut Value, key: &str, value: Option<&str>) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_mapping_mut) else {
        return;
    };
    let labels = meta
        .entry("labels".into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if !labels.is_mapping() {
        *labels = Value::Mapping(Mapping::new());
    }
    let Some(labels) = labels.as_mapping_mut() else {
        return;
    };
    match value {
        Some(v) => {
            labels.insert(key.into(), v.into());
        }
        None => {
            labels.remove(key);
        }
    }
}

fn condition<'a>(gw: &'a Value, kind: &str) -> Option<&'a Value> {
    gw.get("status")?
        .get("conditions")?
        .as_sequence()?
        .iter()
        .find(|c| str_at(c, &["type"]) == Some(kind))
}

fn programmed(gw: &Value) -> &str {
    condition(gw, "Programmed")
        .and_then(|c| str_at(c, &["status"]))
        .unwrap_or("False")
}

fn wait_programmed(
    store: &dyn Objects,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), WaypointError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(gw) = store.get("Gateway", namespace, name)?
            && programmed(&gw.object) == "True"
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(WaypointError::NotReady {
                namespace: namespace.into(),
                name: name.into(),
                timeout,
            });
        }
        std::thread::sleep(POLL);
    }
}

fn waypoints(store: &dyn Objects, namespace: Option<&str>) -> Result<Vec<Doc>, WaypointError> {
    Ok(store
        .list("Gateway")?
        .into_iter()
        .filter(|d| str_at(&d.object, &["spec", "gatewayClassName"]) == Some(WAYPOINT_CLASS))
        .filter(|d| namespace.is_none_or(|ns| d.namespace() == ns))
        .collect())
}

/// `list`: `NAME REVISION TRAFFIC TYPE PROGRAMMED`, `NAMESPACE` first with
/// `-A` (`namespace` `None`).
pub fn list(store: &dyn Objects, namespace: Option<&str>) -> Result<String, WaypointError> {
    let found = waypoints(store, namespace)?;
    if found.is_empty() {
        return Ok(match namespace {
            Some(ns) => format!("No waypoints found in namespace {ns}.\n"),
            None => "No waypoints found.\n".into(),
        });
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|d| {
            let mut row = vec![
                d.name().to_string(),
                d.label(REVISION).unwrap_or("default").to_string(),
                // istioctl shows `none` when the label is absent, although
                // such a waypoint takes service traffic.
                d.label(WAYPOINT_FOR).unwrap_or("none").to_string(),
                programmed(&d.object).to_string(),
            ];
            if namespace.is_none() {
                row.insert(0, d.namespace().to_string());
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "REVISION", "TRAFFIC TYPE", "PROGRAMMED"];
    if namespace.is_none() {
        header.insert(0, "NAMESPACE");
    }
    Ok(table::render(5, &header, &rows))
}

/// `delete NAME...` or `delete --all`.
pub fn delete(
    store: &dyn Objects,
    namespace: &str,
    names: &[String],
    all: bool,
) -> Result<String, WaypointError> {
    let names: Vec<String> = if all {
        waypoints(store, Some(namespace))?
            .iter()
            .map(|d| d.name().to_string())
            .collect()
    } else if names.is_empty() {
        return Err(WaypointError::NothingToDelete);
    } else {
        names.to_vec()
    };
    let mut out = String::new();
    for name in names {
        let gone = store.delete("Gateway", namespace, &name)?;
        let what = if gone { "deleted" } else { "not found" };
        let _ = writeln!(out, "waypoint {namespace}/{name} {what}");
    }
    Ok(out)
}

/// `status`: one row per condition of each waypoint Gateway.
pub fn status(
    store: &dyn Objects,
    namespace: Option<&str>,
    name: Option<&str>,
    wait: Option<Duration>,
) -> Result<String, WaypointError> {
    if let (Some(ns), Some(n), Some(t)) = (namespace, name, wait) {
        wait_programmed(store, ns, n, t)?;
    }
    let mut rows = Vec::new();
    for d in waypoints(store, namespace)? {
        if name.is_some_and(|n| n != d.name()) {
            continue;
        }
        let conditions = d
            .object
            .get("status")
            .and_then(|s| s.get("conditions"))
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        let mut push = |status: &str, kind: &str, reason: &str, message: &str| {
            let mut row = vec![
                d.name().to_string(),
                status.to_string(),
                kind.to_string(),
                reason.to_string(),
                message.to_string(),
            ];
            if namespace.is_none() {
                row.insert(0, d.namespace().to_string());
            }
            rows.push(row);
        };
        if conditions.is_empty() {
            push(
                "False",
                "Programmed",
                "Pending",
                "no controller has programmed it yet",
            );
        }
        for c in &conditions {
            let get = |k| str_at(c, &[k]).unwrap_or("");
            push(get("status"), get("type"), get("reason"), get("message"));
        }
    }
    let mut header = vec!["NAME", "STATUS", "TYPE", "REASON", "MESSAGE"];
    if namespace.is_none() {
        header.insert(0, "NAMESPACE");
    }
    Ok(table::render(5, &header, &rows))
}

#[cfg(test)]
mod tests;

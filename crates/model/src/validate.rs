//! The checks Istio's admission webhook and CRD schema make on the security
//! kinds, so that the same YAML is refused here that a cluster would refuse.

use mesh_core::IpNet;

use super::ObjectError;
use super::objects::*;

type Check = Result<(), ObjectError>;

fn bad(field: impl Into<String>, problem: impl Into<String>) -> ObjectError {
    ObjectError {
        object: None,
        field: Some(field.into()),
        problem: problem.into(),
    }
}

/// The `when` keys Istio knows; anything else is a typo.
fn known_condition_key(key: &str) -> bool {
    const EXACT: [&str; 11] = [
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.principal",
        "source.serviceAccount",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "destination.port",
        "connection.sni",
    ];
    let bracketed = |prefix: &str| {
        key.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('['))
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with(']'))
    };
    EXACT.contains(&key)
        || bracketed("request.headers")
        || bracketed("request.auth.claims")
        || key.starts_with("experimental.envoy.filters.")
}

fn non_empty_values(field: &str, values: &[String]) -> Check {
    match values.iter().position(|v| v.is_empty()) {
        Some(i) => Err(bad(format!("{field}[{i}]"), "must not be empty")),
        None => Ok(()),
    }
}

fn ip_blocks(field: &str, values: &[String]) -> Check {
    for (i, v) in values.iter().enumerate() {
        v.parse::<IpNet>()
            .map_err(|e| bad(format!("{field}[{i}]"), e.to_string()))?;
    }
    Ok(())
}

fn ports(field: &str, values: &[String]) -> Check {
    for (i, v) in values.iter().enumerate() {
        v.parse::<u16>().map_err(|_| {
            bad(
                format!("{field}[{i}]"),
                format!("{v:?} is not a port (0-65535)"),
            )
        })?;
    }
    Ok(())
}

pub(super) fn authorization_policy(ap: &AuthorizationPolicy) -> Check {
    let spec = &ap.spec;
    let targeted = spec.target_ref.is_some() || !spec.target_refs.is_empty();
    if spec.selector.is_some() && targeted {
        return Err(bad(
            "spec",
            "only one of selector, targetRef and targetRefs may be set",
        ));
    }
    if spec.target_ref.is_some() && !spec.target_refs.is_empty() {
        return Err(bad("spec", "targetRef and targetRefs cannot both be set"));
    }
    if spec.target_refs.len() > 16 {
        return Err(bad("spec.targetRefs", "at most 16 targets are allowed"));
    }
    let action = spec.action.unwrap_or_default();
    match (action, &spec.provider) {
        (AuthorizationAction::Custom, None) => {
            return Err(bad("spec.provider", "required when action is CUSTOM"));
        }
        (a, Some(_)) if a != AuthorizationAction::Custom => {
            return Err(bad("spec.provider", "only allowed when action is CUSTOM"));
        }
        _ => {}
    }
    if spec.rules.len() > 512 {
        return Err(bad("spec.rules", "at most 512 rules are allowed"));
    }
    for (r, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{r}]");
        for (i, from) in rule.from.iter().enumerate() {
            let field = format!("{at}.from[{i}].source");
            let source = from
                .source
                .as_ref()
                .filter(|s| **s != Source::default())
                .ok_or_else(|| bad(&field, "must not be empty"))?;
            source_fields(&field, source)?;
        }
        for (i, to) in rule.to.iter().enumerate() {
            let field = format!("{at}.to[{i}].operation");
            let op = to
                .operation
                .as_ref()
                .filter(|o| **o != Operation::default())
                .ok_or_else(|| bad(&field, "must not be empty"))?;
            ports(&format!("{field}.ports"), &op.ports)?;
            ports(&format!("{field}.notPorts"), &op.not_ports)?;
            for (name, values) in [
                ("hosts", &op.hosts),
                ("notHosts", &op.not_hosts),
                ("methods", &op.methods),
                ("notMethods", &op.not_methods),
                ("paths", &op.paths),
                ("notPaths", &op.not_paths),
            ] {
                non_empty_values(&format!("{field}.{name}"), values)?;
            }
        }
        for (i, cond) in rule.when.iter().enumerate() {
            let field = format!("{at}.when[{i}]");
            condition(&field, cond)?;
        }
    }
    Ok(())
}

fn source_fields(field: &str, s: &Source) -> Check {
    let has_sa = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
    let has_identity = !s.principals.is_empty()
        || !s.not_principals.is_empty()
        || !s.namespaces.is_empty()
        || !s.not_namespaces.is_empty();
    if has_sa && has_identity {
        return Err(bad(
            field,
            "serviceAccounts cannot be combined with principals or namespaces",
        ));
    }
    for (name, values) in [
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
    ] {
        if values.len() > 16 {
            return Err(bad(format!("{field}.{name}"), "at most 16 are allowed"));
        }
        for (i, v) in values.iter().enumerate() {
            let sa = v.rsplit('/').next().unwrap_or_default();
            if v.contains('*') || sa.is_empty() || v.matches('/').count() > 1 {
                return Err(bad(
                    format!("{field}.{name}[{i}]"),
                    format!(
                        "{v:?} must be <namespace>/<serviceaccount> or <serviceaccount>, without wildcards"
                    ),
                ));
            }
        }
    }
    for (name, values) in [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
    ] {
        non_empty_values(&format!("{field}.{name}"), values)?;
    }
    ip_blocks(&format!("{field}.ipBlocks"), &s.ip_blocks)?;
    ip_blocks(&format!("{field}.notIpBlocks"), &s.not_ip_blocks)?;
    ip_blocks(&format!("{field}.remoteIpBlocks"), &s.remote_ip_blocks)?;
    ip_blocks(
        &format!("{field}.notRemoteIpBlocks"),
        &s.not_remote_ip_blocks,
    )?;
    Ok(())
}

fn condition(field: &str, c: &RuleCondition) -> Check {
    if c.key.is_empty() {
        return Err(bad(format!("{field}.key"), "must not be empty"));
    }
    if !known_condition_key(&c.key) {
        return Err(bad(
            format!("{field}.key"),
            format!("unknown condition key {:?}", c.key),
        ));
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        return Err(bad(
            field,
            format!(
                "at least one of values or notValues must be set for key {:?}",
                c.key
            ),
        ));
    }
    match c.key.as_str() {
        "source.ip" | "remote.ip" | "destination.ip" => {
            ip_blocks(&format!("{field}.values"), &c.values)?;
            ip_blocks(&format!("{field}.notValues"), &c.not_values)?;
        }
        "destination.port" => {
            ports(&format!("{field}.values"), &c.values)?;
            ports(&format!("{field}.notValues"), &c.not_values)?;
        }
        _ => {}
    }
    Ok(())
}

pub(super) fn peer_authentication(pa: &PeerAuthentication) -> Check {
    if !pa.spec.port_level_mtls.is_empty() && pa.spec.selector.is_none() {
        return Err(bad(
            "spec.portLevelMtls",
            "requires a workload selector (port-level mTLS applies to selected workloads only)",
        ));
    }
    if pa.spec.port_level_mtls.contains_key(&0) {
        return Err(bad("spec.portLevelMtls", "port 0 is not a port"));
    }
    Ok(())
}

mod routes;
pub(super) use routes::{gateway, grpc_route, http_route, request_authentication};

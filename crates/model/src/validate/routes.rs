//! The checks the Gateway API CRD schemas (and Istio) make on waypoints,
//! routes and RequestAuthentication, so a typo is refused here rather than
//! silently routing or admitting more than meant.

use super::{Check, bad};
use crate::objects::RequestAuthentication;
use crate::routes::*;

pub(crate) fn gateway(gw: &Gateway) -> Check {
    if !gw.is_waypoint() {
        return Ok(());
    }
    gw.waypoint_listener()
        .map_err(|e| bad("spec.listeners", e))?;
    if let Some(v) = gw.metadata.labels.get(WAYPOINT_FOR_LABEL)
        && TrafficType::parse(v).is_none()
    {
        return Err(bad(
            format!("metadata.labels[{WAYPOINT_FOR_LABEL:?}]"),
            format!("{v:?} is not one of service, workload, all, none"),
        ));
    }
    Ok(())
}

fn regex(field: &str, pattern: &str) -> Check {
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| bad(field, format!("not a valid regular expression: {e}")))
}

fn duration(field: &str, value: &Option<String>) -> Check {
    match value {
        Some(v) => mesh_core::duration::parse_gateway_api(v)
            .map(|_| ())
            .map_err(|e| bad(field, e.to_string())),
        None => Ok(()),
    }
}

fn value_matches(field: &str, matches: &[ValueMatch]) -> Check {
    for (i, m) in matches.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match m.type_.as_deref().unwrap_or("Exact") {
            "Exact" => {}
            "RegularExpression" => regex(&format!("{at}.value"), &m.value)?,
            other => {
                return Err(bad(
                    format!("{at}.type"),
                    format!("unsupported type {other:?}"),
                ));
            }
        }
        if m.name.is_empty() {
            return Err(bad(format!("{at}.name"), "must not be empty"));
        }
    }
    Ok(())
}

fn backend(field: &str, b: &BackendRef) -> Check {
    let kind = b.kind.as_deref().unwrap_or("Service");
    let group = b.group.as_deref().unwrap_or("");
    if kind != "Service" || !group.is_empty() {
        return Err(bad(
            field,
            format!("backend kind {group}/{kind} is not supported; use a Service"),
        ));
    }
    if b.port.is_none() {
        return Err(bad(
            format!("{field}.port"),
            "is required for a Service backend",
        ));
    }
    for (i, f) in b.filters.iter().enumerate() {
        filter(&format!("{field}.filters[{i}]"), f)?;
    }
    Ok(())
}

fn path_modifier(field: &str, p: &PathModifier) -> Check {
    match (
        p.type_.as_str(),
        &p.replace_full_path,
        &p.replace_prefix_match,
    ) {
        ("ReplaceFullPath", Some(_), None) | ("ReplacePrefixMatch", None, Some(_)) => Ok(()),
        (t @ ("ReplaceFullPath" | "ReplacePrefixMatch"), _, _) => Err(bad(
            field,
            format!("type {t} needs exactly its own field (replaceFullPath or replacePrefixMatch)"),
        )),
        (t, _, _) => Err(bad(
            format!("{field}.type"),
            format!("unsupported type {t:?}"),
        )),
    }
}

fn filter(field: &str, f: &HttpRouteFilter) -> Check {
    let has = |present: bool, name: &str| {
        if present {
            Ok(())
        } else {
            Err(bad(
                field,
                format!("type {} needs the field {name}", f.type_),
            ))
        }
    };
    match f.type_.as_str() {
        "RequestHeaderModifier" => {
            has(f.request_header_modifier.is_some(), "requestHeaderModifier")
        }
        "ResponseHeaderModifier" => has(
            f.response_header_modifier.is_some(),
            "responseHeaderModifier",
        ),
        "RequestRedirect" => {
            has(f.request_redirect.is_some(), "requestRedirect")?;
            let r = f.request_redirect.as_ref().expect("checked above");
            if let Some(code) = r.status_code
                && code != 301
                && code != 302
            {
                return Err(bad(
                    format!("{field}.requestRedirect.statusCode"),
                    "must be 301 or 302",
                ));
            }
            match &r.path {
                Some(p) => path_modifier(&format!("{field}.requestRedirect.path"), p),
                None => Ok(()),
            }
        }
        "URLRewrite" => {
            has(f.url_rewrite.is_some(), "urlRewrite")?;
            match &f.url_rewrite.as_ref().expect("checked above").path {
                Some(p) => path_modifier(&format!("{field}.urlRewrite.path"), p),
                None => Ok(()),
            }
        }
        "RequestMirror" => {
            has(f.request_mirror.is_some(), "requestMirror")?;
            let m = f.request_mirror.as_ref().expect("checked above");
            if m.percent.is_some_and(|p| p > 100) {
                return Err(bad(
                    format!("{field}.requestMirror.percent"),
                    "must be 0-100",
                ));
            }
            backend(&format!("{field}.requestMirror.backendRef"), &m.backend_ref)
        }
        "ExtensionRef" | "CORS" => Err(bad(
            format!("{field}.type"),
            format!("{} filters are not supported by this waypoint", f.type_),
        )),
        other => Err(bad(
            format!("{field}.type"),
            format!("unknown filter type {other:?}"),
        )),
    }
}

fn parents(parent_refs: &[ParentReference]) -> Check {
    for (i, p) in parent_refs.iter().enumerate() {
        if !p.is_service() && !p.is_gateway() {
            return Err(bad(
                format!("spec.parentRefs[{i}]"),
                "a waypoint route's parent must be a Service (group \"\") or a Gateway",
            ));
        }
    }
    Ok(())
}

pub(crate) fn http_route(spec: &HttpRouteSpec) -> Check {
    parents(&spec.parent_refs)?;
    for (r, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{r}]");
        for (m, mat) in rule.matches.iter().enumerate() {
            let mat_at = format!("{at}.matches[{m}]");
            if let Some(path) = &mat.path {
                let value = path.value.as_deref().unwrap_or("/");
                match path.type_.as_deref().unwrap_or("PathPrefix") {
                    "Exact" | "PathPrefix" if value.starts_with('/') => {}
                    "Exact" | "PathPrefix" => {
                        return Err(bad(format!("{mat_at}.path.value"), "must start with /"));
                    }
                    "RegularExpression" => regex(&format!("{mat_at}.path.value"), value)?,
                    other => {
                        return Err(bad(
                            format!("{mat_at}.path.type"),
                            format!("unsupported type {other:?}"),
                        ));
                    }
                }
            }
            value_matches(&format!("{mat_at}.headers"), &mat.headers)?;
            value_matches(&format!("{mat_at}.queryParams"), &mat.query_params)?;
        }
        for (i, f) in rule.filters.iter().enumerate() {
            filter(&format!("{at}.filters[{i}]"), f)?;
        }
        for (i, b) in rule.backend_refs.iter().enumerate() {
            backend(&format!("{at}.backendRefs[{i}]"), b)?;
        }
        if let Some(t) = &rule.timeouts {
            duration(&format!("{at}.timeouts.request"), &t.request)?;
            duration(&format!("{at}.timeouts.backendRequest"), &t.backend_request)?;
        }
        if let Some(retry) = &rule.retry {
            duration(&format!("{at}.retry.backoff"), &retry.backoff)?;
            if let Some(c) = retry.codes.iter().find(|c| !(400..600).contains(*c)) {
                return Err(bad(
                    format!("{at}.retry.codes"),
                    format!("{c} is not a 4xx or 5xx status"),
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn grpc_route(spec: &GrpcRouteSpec) -> Check {
    parents(&spec.parent_refs)?;
    for (r, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{r}]");
        for (m, mat) in rule.matches.iter().enumerate() {
            let mat_at = format!("{at}.matches[{m}]");
            if let Some(method) = &mat.method {
                if method.service.is_none() && method.method.is_none() {
                    return Err(bad(
                        format!("{mat_at}.method"),
                        "at least one of service and method must be set",
                    ));
                }
                match method.type_.as_deref().unwrap_or("Exact") {
                    "Exact" => {}
                    "RegularExpression" => {
                        for v in [&method.service, &method.method].into_iter().flatten() {
                            regex(&format!("{mat_at}.method"), v)?;
                        }
                    }
                    other => {
                        return Err(bad(
                            format!("{mat_at}.method.type"),
                            format!("unsupported type {other:?}"),
                        ));
                    }
                }
            }
            value_matches(&format!("{mat_at}.headers"), &mat.headers)?;
        }
        for (i, f) in rule.filters.iter().enumerate() {
            if matches!(f.type_.as_str(), "RequestRedirect" | "URLRewrite") {
                return Err(bad(
                    format!("{at}.filters[{i}].type"),
                    format!("{} is not a GRPCRoute filter", f.type_),
                ));
            }
            filter(&format!("{at}.filters[{i}]"), f)?;
        }
        for (i, b) in rule.backend_refs.iter().enumerate() {
            backend(&format!("{at}.backendRefs[{i}]"), b)?;
        }
    }
    Ok(())
}

pub(crate) fn request_authentication(ra: &RequestAuthentication) -> Check {
    let spec = &ra.spec;
    if spec.selector.is_some() && (spec.target_ref.is_some() || !spec.target_refs.is_empty()) {
        return Err(bad(
            "spec",
            "only one of selector, targetRef and targetRefs may be set",
        ));
    }
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        let at = format!("spec.jwtRules[{i}]");
        if rule.issuer.is_empty() {
            return Err(bad(format!("{at}.issuer"), "must not be empty"));
        }
        if rule.jwks.is_some() && rule.jwks_uri.is_some() {
            return Err(bad(&at, "only one of jwks and jwksUri may be set"));
        }
        if let Some(jwks) = &rule.jwks
            && serde_json::from_str::<serde_json::Value>(jwks).is_err()
        {
            return Err(bad(
                format!("{at}.jwks"),
                "is not a JSON Web Key Set (not JSON)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Waypoint Gateways and routes as users write them, through
    //! `parse_object`: refused with the field named, or parsed as written.

    use crate::{Kind, Object, ObjectError, Parsed, parse_object};

    fn parse(yaml: &str) -> Result<Parsed, ObjectError> {
        parse_object(serde_yaml::from_str(yaml).expect("test YAML is YAML"))
    }

    fn refused(yaml: &str) -> ObjectError {
        match parse(yaml) {
            Err(e) => e,
            Ok(p) => panic!("accepted: {p:?}"),
        }
    }

    fn object(yaml: &str) -> Object {
        match parse(yaml) {
            Ok(Parsed::Object(_, o)) => *o,
            other => panic!("not parsed as an object: {other:?}"),
        }
    }

    const WAYPOINT: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: apps, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
";

    fn route(rule: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: echo, namespace: apps}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: echo}}]
  rules:
  - {rule}
"
        )
    }

    #[test]
    fn waypoint_gateways() {
        let Object::Gateway(gw) = object(WAYPOINT) else {
            panic!("not a Gateway")
        };
        assert!(gw.is_waypoint());

        // (what, yaml, field named in the error)
        let cases = [
            (
                "two listeners",
                WAYPOINT.replace(
                    "  - {name: mesh, port: 15008, protocol: HBONE}\n",
                    "  - {name: mesh, port: 15008, protocol: HBONE}\n  - {name: http, port: 80, protocol: HTTP}\n",
                ),
                "spec.listeners",
            ),
            (
                "wrong port",
                WAYPOINT.replace("port: 15008", "port: 15009"),
                "spec.listeners",
            ),
            (
                "wrong protocol",
                WAYPOINT.replace("protocol: HBONE", "protocol: HTTP"),
                "spec.listeners",
            ),
            (
                "no listener",
                WAYPOINT.replace("  listeners:\n  - {name: mesh, port: 15008, protocol: HBONE}\n", "  listeners: []\n"),
                "spec.listeners",
            ),
            (
                "waypoint-for: bogus",
                WAYPOINT.replace("waypoint-for: service", "waypoint-for: bogus"),
                "istio.io/waypoint-for",
            ),
        ];
        let mut failures = Vec::new();
        for (what, yaml, field) in cases {
            match parse(&yaml) {
                Ok(p) => failures.push(format!("{what}: accepted: {p:?}")),
                Err(e) => {
                    let named = e.field.as_deref().is_some_and(|f| f.contains(field));
                    let gateway = e.object.as_ref().is_some_and(|o| {
                        o.kind == Kind::Gateway && o.namespace == "apps" && o.name == "waypoint"
                    });
                    if !named || !gateway {
                        failures.push(format!(
                            "{what}: error {e} does not name {field} of the Gateway"
                        ));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));

        // Other traffic types are fine; a Gateway of another class may have
        // any listeners.
        for ok in ["workload", "all", "none"] {
            object(&WAYPOINT.replace("waypoint-for: service", &format!("waypoint-for: {ok}")));
        }
        object(
            &WAYPOINT
                .replace("istio-waypoint", "istio")
                .replace("port: 15008, protocol: HBONE", "port: 80, protocol: HTTP"),
        );
    }

    #[test]
    fn http_route_errors_name_the_field() {
        let cases = [
            (
                "invalid regular expression path",
                route("{matches: [{path: {type: RegularExpression, value: \"/v1/(\"}}]}"),
                "spec.rules[0].matches[0].path.value",
                "regular expression",
            ),
            (
                "invalid header regular expression",
                route("{matches: [{headers: [{type: RegularExpression, name: x, value: \"[\"}]}]}"),
                "spec.rules[0].matches[0].headers[0].value",
                "regular expression",
            ),
            (
                "unknown field backendref",
                route("{backendref: [{name: echo, port: 80}]}"),
                "spec.rules[0].backendref",
                "unknown field",
            ),
            (
                "bad timeout",
                route("{timeouts: {request: 10 seconds}, backendRefs: [{name: echo, port: 80}]}"),
                "spec.rules[0].timeouts.request",
                "",
            ),
            (
                "backend without port",
                route("{backendRefs: [{name: echo}]}"),
                "spec.rules[0].backendRefs[0].port",
                "",
            ),
        ];
        let mut failures = Vec::new();
        for (what, yaml, field, problem) in cases {
            match parse(&yaml) {
                Ok(p) => failures.push(format!("{what}: accepted: {p:?}")),
                Err(e) => {
                    if e.field.as_deref() != Some(field) || !e.to_string().contains(problem) {
                        failures.push(format!(
                            "{what}: error {e} (field {:?}), want field {field} and {problem:?}",
                            e.field
                        ));
                    }
                    if e.object.as_ref().is_none_or(|o| o.kind != Kind::HttpRoute) {
                        failures.push(format!("{what}: error {e} does not name the HTTPRoute"));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn a_valid_http_route_parses_as_written() {
        let Object::HttpRoute(r) = object(&route(
            "{matches: [{path: {type: PathPrefix, value: /api}, method: GET}],
     backendRefs: [{name: echo-v1, port: 80, weight: 90}, {name: echo-v2, port: 80, weight: 10}],
     timeouts: {request: 10s, backendRequest: 500ms},
     retry: {attempts: 3, codes: [502, 503], backoff: 100ms}}",
        )) else {
            panic!("not an HTTPRoute")
        };
        assert!(r.spec.parent_refs[0].is_service());
        let rule = &r.spec.rules[0];
        let backends: Vec<(&str, Option<u32>)> = rule
            .backend_refs
            .iter()
            .map(|b| (b.name.as_str(), b.weight))
            .collect();
        assert_eq!(backends, [("echo-v1", Some(90)), ("echo-v2", Some(10))]);
        let t = rule.timeouts.as_ref().unwrap();
        assert_eq!(
            (t.request.as_deref(), t.backend_request.as_deref()),
            (Some("10s"), Some("500ms"))
        );
        let retry = rule.retry.as_ref().unwrap();
        assert_eq!(
            (
                retry.attempts,
                retry.codes.as_slice(),
                retry.backoff.as_deref()
            ),
            (Some(3), &[502, 503][..], Some("100ms"))
        );
        assert_eq!(rule.matches[0].method.as_deref(), Some("GET"));
    }

    #[test]
    fn grpc_routes() {
        let grpc = |matches: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo, namespace: apps}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: echo}}]
  rules:
  - matches: [{matches}]
    backendRefs: [{{name: echo, port: 9090}}]
"
            )
        };
        let Object::GrpcRoute(r) = object(&grpc("{method: {service: echo.Echo, method: Say}}"))
        else {
            panic!("not a GRPCRoute")
        };
        let m = r.spec.rules[0].matches[0].method.as_ref().unwrap();
        assert_eq!(
            (
                m.type_.as_deref(),
                m.service.as_deref(),
                m.method.as_deref()
            ),
            (None, Some("echo.Echo"), Some("Say"))
        );
        object(&grpc(
            "{method: {type: RegularExpression, service: \"echo\\\\..*\"}}",
        ));

        let e = refused(&grpc("{method: {type: Exact}}"));
        assert_eq!(
            e.field.as_deref(),
            Some("spec.rules[0].matches[0].method"),
            "{e}"
        );
        let e = refused(&grpc("{method: {type: RegularExpression, method: \"(\"}}"));
        assert_eq!(
            e.field.as_deref(),
            Some("spec.rules[0].matches[0].method"),
            "{e}"
        );
    }
}

//! Route specs, as users wrote them, into the compiled forms the table
//! matches with. The control plane has validated the specs already; what
//! still fails here (a header name the `http` crate refuses, a regex, a
//! duration) is returned as a [`RouteError`] naming the route and the
//! field, because a waypoint must never panic on configuration.

use std::fmt::Display;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use mesh_model::routes::{
    BackendRef, GrpcRouteMatch, GrpcRouteRule, HeaderModifier, HttpRouteFilter, HttpRouteMatch,
    HttpRouteRule, PathModifier, ValueMatch as ValueMatchSpec,
};

use super::filter::{Filter, HeaderEdit, PathEdit, Redirect, Rewrite};
use super::matcher::{
    GrpcMatch, GrpcMethod, HeaderMatch, HostPattern, Hostnames, HttpMatch, PathMatch, QueryMatch,
    ValueMatch, full_match,
};
use super::{Backend, Retry, RouteError, Rule};

/// The route being compiled: for error messages, `Rule::route` and the
/// namespace a backendRef defaults to.
pub(super) struct Ctx<'a> {
    pub(super) kind: &'static str,
    pub(super) namespace: &'a str,
    pub(super) name: &'a str,
    pub(super) domain_suffix: &'a str,
}

impl Ctx<'_> {
    fn at(&self, field: impl Display) -> String {
        format!("{} {}/{} {field}", self.kind, self.namespace, self.name)
    }

    fn unsupported(&self, field: impl Display, reason: impl Into<String>) -> RouteError {
        RouteError::Unsupported {
            at: self.at(field),
            reason: reason.into(),
        }
    }

    fn regex(&self, field: impl Display, pattern: &str) -> Result<regex::bytes::Regex, RouteError> {
        full_match(pattern).map_err(|e| RouteError::Regex {
            at: self.at(field),
            reason: e.to_string(),
        })
    }

    /// A Gateway API duration; zero means "no timeout" in the API, so it
    /// becomes `None` like an absent field.
    fn duration(
        &self,
        field: impl Display,
        v: Option<&str>,
    ) -> Result<Option<Duration>, RouteError> {
        let Some(v) = v else { return Ok(None) };
        let d = mesh_core::duration::parse_gateway_api(v).map_err(|e| RouteError::Duration {
            at: self.at(field),
            reason: e.to_string(),
        })?;
        Ok((!d.is_zero()).then_some(d))
    }

    fn header_name(&self, field: impl Display, name: &str) -> Result<HeaderName, RouteError> {
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| RouteError::Header {
            at: self.at(field),
            what: "name",
            value: name.to_string(),
        })
    }

    fn header_value(&self, field: impl Display, value: &str) -> Result<HeaderValue, RouteError> {
        HeaderValue::from_str(value).map_err(|_| RouteError::Header {
            at: self.at(field),
            what: "value",
            value: value.to_string(),
        })
    }
}

pub(super) fn hostnames(ctx: &Ctx<'_>, names: &[String]) -> Result<Hostnames, RouteError> {
    let mut out = Vec::with_capacity(names.len());
    for (i, h) in names.iter().enumerate() {
        let h = h.to_ascii_lowercase();
        out.push(match h.strip_prefix('*') {
            Some(suffix)
                if suffix.len() > 1 && suffix.starts_with('.') && !suffix.contains('*') =>
            {
                HostPattern::Wildcard(suffix.to_string())
            }
            None if !h.is_empty() && !h.contains('*') => HostPattern::Exact(h),
            _ => {
                return Err(ctx.unsupported(
                    format!("spec.hostnames[{i}]"),
                    format!("{h:?} is not a host name or a *.<domain> wildcard"),
                ));
            }
        });
    }
    Ok(Hostnames(out))
}

pub(super) fn http_rule(
    ctx: &Ctx<'_>,
    r: usize,
    rule: &HttpRouteRule,
) -> Result<(Rule, Vec<HttpMatch>), RouteError> {
    let at = format!("spec.rules[{r}]");
    let matches = if rule.matches.is_empty() {
        vec![HttpMatch::everything()]
    } else {
        let m = rule.matches.iter().enumerate();
        m.map(|(m, mat)| http_match(ctx, &format!("{at}.matches[{m}]"), mat))
            .collect::<Result<_, _>>()?
    };
    let timeouts = rule.timeouts.as_ref();
    let retry = match &rule.retry {
        Some(r) => Some(Retry {
            codes: r.codes.clone(),
            attempts: r.attempts.unwrap_or(1),
            backoff: ctx.duration(format!("{at}.retry.backoff"), r.backoff.as_deref())?,
        }),
        None => None,
    };
    let rule = Rule {
        route: format!("{}/{}", ctx.namespace, ctx.name),
        filters: filters(ctx, &at, &rule.filters, false)?,
        backends: backends(ctx, &at, &rule.backend_refs)?,
        request_timeout: ctx.duration(
            format!("{at}.timeouts.request"),
            timeouts.and_then(|t| t.request.as_deref()),
        )?,
        backend_request_timeout: ctx.duration(
            format!("{at}.timeouts.backendRequest"),
            timeouts.and_then(|t| t.backend_request.as_deref()),
        )?,
        retry,
    };
    Ok((rule, matches))
}

pub(super) fn grpc_rule(
    ctx: &Ctx<'_>,
    r: usize,
    rule: &GrpcRouteRule,
) -> Result<(Rule, Vec<GrpcMatch>), RouteError> {
    let at = format!("spec.rules[{r}]");
    let matches = if rule.matches.is_empty() {
        vec![GrpcMatch::everything()]
    } else {
        let m = rule.matches.iter().enumerate();
        m.map(|(m, mat)| grpc_match(ctx, &format!("{at}.matches[{m}]"), mat))
            .collect::<Result<_, _>>()?
    };
    let rule = Rule {
        route: format!("{}/{}", ctx.namespace, ctx.name),
        filters: filters(ctx, &at, &rule.filters, true)?,
        backends: backends(ctx, &at, &rule.backend_refs)?,
        request_timeout: None,
        backend_request_timeout: None,
        retry: None,
    };
    Ok((rule, matches))
}

fn http_match(ctx: &Ctx<'_>, at: &str, m: &HttpRouteMatch) -> Result<HttpMatch, RouteError> {
    let path = match &m.path {
        None => PathMatch::prefix("/"),
        Some(p) => {
            let value = p.value.as_deref().unwrap_or("/");
            match p.type_.as_deref().unwrap_or("PathPrefix") {
                "Exact" => PathMatch::Exact(value.to_string()),
                "PathPrefix" => PathMatch::prefix(value),
                "RegularExpression" => {
                    PathMatch::Regex(ctx.regex(format!("{at}.path.value"), value)?)
                }
                other => {
                    return Err(ctx.unsupported(
                        format!("{at}.path.type"),
                        format!("path match type {other:?}"),
                    ));
                }
            }
        }
    };
    let method = match &m.method {
        Some(name) => Some(Method::from_bytes(name.as_bytes()).map_err(|_| {
            ctx.unsupported(
                format!("{at}.method"),
                format!("{name:?} is not an HTTP method"),
            )
        })?),
        None => None,
    };
    let headers = header_matches(ctx, at, &m.headers)?;
    let mut query: Vec<QueryMatch> = Vec::with_capacity(m.query_params.len());
    for (i, q) in m.query_params.iter().enumerate() {
        let value = value_match(ctx, &format!("{at}.queryParams[{i}]"), q)?;
        // Names are case-sensitive here, unlike header names.
        if !query.iter().any(|x| x.name == q.name) {
            query.push(QueryMatch {
                name: q.name.clone(),
                value,
            });
        }
    }
    Ok(HttpMatch {
        path,
        method,
        headers,
        query,
    })
}

fn grpc_match(ctx: &Ctx<'_>, at: &str, m: &GrpcRouteMatch) -> Result<GrpcMatch, RouteError> {
    let method = match &m.method {
        None => GrpcMethod::Any,
        Some(g) => match g.type_.as_deref().unwrap_or("Exact") {
            "Exact" => GrpcMethod::Exact {
                service: g.service.clone(),
                method: g.method.clone(),
            },
            "RegularExpression" => {
                let re = |v: &Option<String>| {
                    v.as_deref()
                        .map(|p| ctx.regex(format!("{at}.method"), p))
                        .transpose()
                };
                GrpcMethod::Regex {
                    service: re(&g.service)?,
                    method: re(&g.method)?,
                }
            }
            other => {
                return Err(ctx.unsupported(
                    format!("{at}.method.type"),
                    format!("method match type {other:?}"),
                ));
            }
        },
    };
    let headers = header_matches(ctx, at, &m.headers)?;
    Ok(GrpcMatch { method, headers })
}

fn header_matches(
    ctx: &Ctx<'_>,
    at: &str,
    specs: &[ValueMatchSpec],
) -> Result<Vec<HeaderMatch>, RouteError> {
    let mut headers: Vec<HeaderMatch> = Vec::with_capacity(specs.len());
    for (i, h) in specs.iter().enumerate() {
        let field = format!("{at}.headers[{i}]");
        let name = ctx.header_name(format!("{field}.name"), &h.name)?;
        let value = value_match(ctx, &field, h)?;
        // The API: only the first condition on a given name counts.
        if !headers.iter().any(|x| x.name == name) {
            headers.push(HeaderMatch { name, value });
        }
    }
    Ok(headers)
}

fn value_match(ctx: &Ctx<'_>, at: &str, m: &ValueMatchSpec) -> Result<ValueMatch, RouteError> {
    match m.type_.as_deref().unwrap_or("Exact") {
        "Exact" => Ok(ValueMatch::Exact(m.value.as_bytes().to_vec())),
        "RegularExpression" => Ok(ValueMatch::Regex(
            ctx.regex(format!("{at}.value"), &m.value)?,
        )),
        other => Err(ctx.unsupported(format!("{at}.type"), format!("match type {other:?}"))),
    }
}

fn backends(ctx: &Ctx<'_>, at: &str, refs: &[BackendRef]) -> Result<Vec<Backend>, RouteError> {
    refs.iter()
        .enumerate()
        .map(|(i, b)| backend(ctx, &format!("{at}.backendRefs[{i}]"), b))
        .collect()
}

fn backend(ctx: &Ctx<'_>, at: &str, b: &BackendRef) -> Result<Backend, RouteError> {
    let kind = b.kind.as_deref().unwrap_or("Service");
    let group = b.group.as_deref().unwrap_or("");
    if kind != "Service" || !group.is_empty() {
        return Err(ctx.unsupported(
            at,
            format!("backend kind {group}/{kind}; only Services are"),
        ));
    }
    let Some(port) = b.port else {
        return Err(ctx.unsupported(format!("{at}.port"), "a Service backend needs a port"));
    };
    let namespace = b
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.namespace.to_string());
    Ok(Backend {
        hostname: format!("{}.{namespace}.svc.{}", b.name, ctx.domain_suffix),
        namespace,
        name: b.name.clone(),
        port,
        weight: b.weight.unwrap_or(1),
        filters: filters(ctx, &format!("{at}.filters"), &b.filters, false)?,
    })
}

/// `grpc`: the filters belong to a GRPCRoute, which has no redirect or rewrite.
fn filters(
    ctx: &Ctx<'_>,
    at: &str,
    filters: &[HttpRouteFilter],
    grpc: bool,
) -> Result<Vec<Filter>, RouteError> {
    let mut out = Vec::with_capacity(filters.len());
    for (i, f) in filters.iter().enumerate() {
        let at = format!("{at}.filters[{i}]");
        let missing = |field: &str| ctx.unsupported(&at, format!("type {} needs {field}", f.type_));
        out.push(match (f.type_.as_str(), grpc) {
            ("RequestHeaderModifier", _) => {
                let m = f
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("requestHeaderModifier"))?;
                Filter::RequestHeaders(header_edit(ctx, &format!("{at}.requestHeaderModifier"), m)?)
            }
            ("ResponseHeaderModifier", _) => {
                let m = f
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("responseHeaderModifier"))?;
                Filter::ResponseHeaders(header_edit(
                    ctx,
                    &format!("{at}.responseHeaderModifier"),
                    m,
                )?)
            }
            ("RequestRedirect", false) => {
                let r = f
                    .request_redirect
                    .as_ref()
                    .ok_or_else(|| missing("requestRedirect"))?;
                let status = match r.status_code.unwrap_or(302) {
                    301 => StatusCode::MOVED_PERMANENTLY,
                    302 => StatusCode::FOUND,
                    other => {
                        return Err(ctx.unsupported(
                            format!("{at}.requestRedirect.statusCode"),
                            format!("{other}; only 301 and 302 are"),
                        ));
                    }
                };
                Filter::Redirect(Redirect {
                    scheme: r.scheme.clone(),
                    hostname: r.hostname.clone(),
                    port: r.port,
                    path: path_edit(ctx, &format!("{at}.requestRedirect.path"), r.path.as_ref())?,
                    status,
                })
            }
            ("URLRewrite", false) => {
                let r = f
                    .url_rewrite
                    .as_ref()
                    .ok_or_else(|| missing("urlRewrite"))?;
                Filter::Rewrite(Rewrite {
                    hostname: r.hostname.clone(),
                    path: path_edit(ctx, &format!("{at}.urlRewrite.path"), r.path.as_ref())?,
                })
            }
            ("RequestMirror", _) => {
                let m = f
                    .request_mirror
                    .as_ref()
                    .ok_or_else(|| missing("requestMirror"))?;
                let field = format!("{at}.requestMirror");
                let (numerator, denominator) = match (m.percent, &m.fraction) {
                    (None, None) => (100, 100),
                    (Some(p), None) => (p, 100),
                    (None, Some(f)) => (f.numerator, f.denominator.unwrap_or(100)),
                    (Some(_), Some(_)) => {
                        return Err(
                            ctx.unsupported(field, "only one of percent and fraction may be set")
                        );
                    }
                };
                if denominator == 0 || numerator > denominator {
                    return Err(ctx.unsupported(
                        field,
                        format!("mirror fraction {numerator}/{denominator} is not between 0 and 1"),
                    ));
                }
                let backend = backend(ctx, &format!("{field}.backendRef"), &m.backend_ref)?;
                Filter::Mirror {
                    backend,
                    numerator,
                    denominator,
                }
            }
            (other, _) => {
                return Err(ctx.unsupported(format!("{at}.type"), format!("filter type {other:?}")));
            }
        });
    }
    Ok(out)
}

fn header_edit(ctx: &Ctx<'_>, at: &str, m: &HeaderModifier) -> Result<HeaderEdit, RouteError> {
    let pairs = |list: &[mesh_model::routes::HeaderValue], field: &str| {
        list.iter()
            .enumerate()
            .map(|(i, h)| {
                let at = format!("{at}.{field}[{i}]");
                Ok((
                    ctx.header_name(format!("{at}.name"), &h.name)?,
                    ctx.header_value(format!("{at}.value"), &h.value)?,
                ))
            })
            .collect::<Result<Vec<_>, RouteError>>()
    };
    let remove = m.remove.iter().enumerate();
    Ok(HeaderEdit {
        set: pairs(&m.set, "set")?,
        add: pairs(&m.add, "add")?,
        remove: remove
            .map(|(i, n)| ctx.header_name(format!("{at}.remove[{i}]"), n))
            .collect::<Result<_, _>>()?,
    })
}

fn path_edit(
    ctx: &Ctx<'_>,
    at: &str,
    p: Option<&PathModifier>,
) -> Result<Option<PathEdit>, RouteError> {
    let Some(p) = p else { return Ok(None) };
    match (
        p.type_.as_str(),
        &p.replace_full_path,
        &p.replace_prefix_match,
    ) {
        ("ReplaceFullPath", Some(full), _) => Ok(Some(PathEdit::Full(full.clone()))),
        ("ReplacePrefixMatch", _, Some(prefix)) => Ok(Some(PathEdit::Prefix(prefix.clone()))),
        (t, _, _) => Err(ctx.unsupported(
            at,
            format!(
                "path modifier type {t:?} without its field (replaceFullPath or replacePrefixMatch)"
            ),
        )),
    }
}

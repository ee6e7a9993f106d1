//! Gateway API routing at the waypoint: the HTTPRoutes and GRPCRoutes
//! attached to a Service (parentRefs kind Service), compiled into one table
//! per Service when configuration arrives.
//!
//! **Architecture Invariant:** this module knows requests only as the
//! [`RouteRequest`] view and answers with data ([`Selected`], [`Rule`],
//! [`Filter`]); it does no I/O and draws no random numbers, so the proxy
//! decides how to forward and tests are deterministic.
//!
//! Precedence is resolved at compile time: every `matches` entry of every
//! rule becomes one entry in a flat list sorted by the Gateway API order,
//! and [`RouteTable::select`] takes the first entry that matches.

mod compile;
mod filter;
mod matcher;

use std::time::Duration;

use http::{HeaderMap, Method};
use mesh_model::waypoint::BoundService;

pub use filter::{Filter, HeaderEdit, Redirect, Rewrite};
use matcher::{GrpcMatch, Hostnames, HttpMatch};

/// A route the waypoint cannot act on. Validation in the control plane
/// should have refused it; `at` names the route and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{at}: not a valid regular expression: {reason}")]
    Regex { at: String, reason: String },
    #[error("{at}: {reason}")]
    Duration { at: String, reason: String },
    #[error("{at}: {value:?} is not a valid HTTP header {what}")]
    Header {
        at: String,
        what: &'static str,
        value: String,
    },
    #[error("{at}: not supported: {reason}")]
    Unsupported { at: String, reason: String },
}

/// What routing looks at in a request.
#[derive(Clone, Copy, Debug)]
pub struct RouteRequest<'a> {
    pub method: &'a Method,
    /// The `:authority` or `Host`, with or without a port.
    pub host: &'a str,
    /// The path alone, as received (no normalization or decoding here).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The content-type is `application/grpc*`.
    pub grpc: bool,
    /// The Service port the request was sent to.
    pub port: u16,
}

/// The rule that takes a request.
#[derive(Clone, Copy, Debug)]
pub struct Selected<'a> {
    pub rule: &'a Rule,
    /// The PathPrefix value that matched (as written in the route, for
    /// `URLRewrite`/`RequestRedirect` `ReplacePrefixMatch`); `None` for
    /// Exact, regex and gRPC matches.
    pub matched_prefix: Option<&'a str>,
}

/// One route rule, compiled. Several matches may point at the same rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `namespace/name` of the route, for logs.
    pub route: String,
    /// Applied in order (the Gateway API leaves the order to implementations).
    pub filters: Vec<Filter>,
    /// Empty when the rule names no backend: the caller answers 500.
    pub backends: Vec<Backend>,
    /// `timeouts.request`; `None` when absent or zero (zero disables it).
    pub request_timeout: Option<Duration>,
    /// `timeouts.backendRequest`, per attempt; `None` when absent or zero.
    pub backend_request_timeout: Option<Duration>,
    pub retry: Option<Retry>,
}

/// An HTTPRoute rule's `retry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Statuses worth retrying, as given; may be empty (the caller's default).
    pub codes: Vec<u16>,
    /// How many retries are allowed after the first try; 1 when absent.
    pub attempts: u32,
    pub backoff: Option<Duration>,
}

/// A backendRef: always a Service port, by the time it gets here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub namespace: String,
    pub name: String,
    /// `<name>.<namespace>.svc.<domain suffix>`.
    pub hostname: String,
    pub port: u16,
    /// 1 when absent; 0 is never chosen.
    pub weight: u32,
    /// Filters for requests sent to this backend only, after the rule's.
    pub filters: Vec<Filter>,
}

impl Rule {
    /// A weighted choice among the backends. `roll` is a uniform random
    /// `u32` from the caller; each backend owns a share of the `u32` range
    /// proportional to its weight. `None` when no backend has weight > 0.
    pub fn pick_backend(&self, roll: u32) -> Option<&Backend> {
        let total: u128 = self.backends.iter().map(|b| u128::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        // In [0, total): scales the roll instead of taking it modulo the
        // total, which would favour the first backends.
        let mut point = (u128::from(roll) * total) >> 32;
        for b in &self.backends {
            let w = u128::from(b.weight);
            if point < w {
                return Some(b);
            }
            point -= w;
        }
        None
    }
}

/// A match entry, pointing at its rule and at its route's hostnames.
#[derive(Clone, Debug)]
struct Entry<M> {
    matcher: M,
    rule: usize,
    route: usize,
}

/// The routes of one Service, ready to match requests.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    rules: Vec<Rule>,
    /// Per route (HTTPRoutes, then GRPCRoutes), indexed by `Entry::route`.
    hostnames: Vec<Hostnames>,
    /// Sorted by precedence; scanned in order.
    http: Vec<Entry<HttpMatch>>,
    grpc: Vec<Entry<GrpcMatch>>,
    /// Per route: the Service ports its parentRefs name; `None` is every
    /// port (a parentRef without `port`).
    ports: Vec<Option<Vec<u16>>>,
}

impl RouteTable {
    /// Compiles the routes bound to `service`. `domain_suffix` (e.g.
    /// `cluster.local`) makes backend host names
    /// `<name>.<namespace, default the route's>.svc.<domain_suffix>`.
    pub fn compile(service: &BoundService, domain_suffix: &str) -> Result<Self, RouteError> {
        let mut table = Self::default();
        for route in &service.http_routes {
            let ctx = compile::Ctx {
                kind: "HTTPRoute",
                namespace: &route.namespace,
                name: &route.name,
                domain_suffix,
            };
            let r = table.add_route(
                service,
                &ctx,
                &route.spec.parent_refs,
                &route.spec.hostnames,
            )?;
            for (i, rule) in route.spec.rules.iter().enumerate() {
                let (rule, matches) = compile::http_rule(&ctx, i, rule)?;
                let rule = table.add_rule(rule);
                table.http.extend(matches.into_iter().map(|matcher| Entry {
                    matcher,
                    rule,
                    route: r,
                }));
            }
        }
        for route in &service.grpc_routes {
            let ctx = compile::Ctx {
                kind: "GRPCRoute",
                namespace: &route.namespace,
                name: &route.name,
                domain_suffix,
            };
            let r = table.add_route(
                service,
                &ctx,
                &route.spec.parent_refs,
                &route.spec.hostnames,
            )?;
            for (i, rule) in route.spec.rules.iter().enumerate() {
                let (rule, matches) = compile::grpc_rule(&ctx, i, rule)?;
                let rule = table.add_rule(rule);
                table.grpc.extend(matches.into_iter().map(|matcher| Entry {
                    matcher,
                    rule,
                    route: r,
                }));
            }
        }
        // Stable sorts: entries with equal keys keep route, rule and match
        // order, which is the rest of the Gateway API's tie-break.
        table.http.sort_by_key(|e| e.matcher.key());
        table.grpc.sort_by_key(|e| e.matcher.key());
        Ok(table)
    }

    /// Records a route's ports and hostnames; returns its index.
    fn add_route(
        &mut self,
        service: &BoundService,
        ctx: &compile::Ctx<'_>,
        parents: &[mesh_model::routes::ParentReference],
        hostnames: &[String],
    ) -> Result<usize, RouteError> {
        self.ports
            .push(parent_ports(service, ctx.namespace, parents));
        self.hostnames.push(compile::hostnames(ctx, hostnames)?);
        Ok(self.hostnames.len() - 1)
    }

    fn add_rule(&mut self, rule: Rule) -> usize {
        self.rules.push(rule);
        self.rules.len() - 1
    }

    /// Some route is attached to the Service's `port`; when none is, the
    /// caller forwards to the Service itself.
    pub fn serves_port(&self, port: u16) -> bool {
        (0..self.ports.len()).any(|r| self.applies(r, port))
    }

    fn applies(&self, route: usize, port: u16) -> bool {
        self.ports[route]
            .as_ref()
            .is_none_or(|ports| ports.contains(&port))
    }

    /// The rule for `req`; `None` when routes exist but none matches (the
    /// caller answers 404). gRPC requests try GRPCRoute rules, then
    /// HTTPRoute rules; other requests try HTTPRoute rules only.
    pub fn select(&self, req: &RouteRequest<'_>) -> Option<Selected<'_>> {
        let host = matcher::strip_port(req.host);
        if req.grpc {
            let grpc = self
                .grpc
                .iter()
                .find(|e| self.takes(e.route, host, req.port) && e.matcher.matches(req));
            if let Some(e) = grpc {
                return Some(Selected {
                    rule: &self.rules[e.rule],
                    matched_prefix: None,
                });
            }
        }
        if self.http.is_empty() {
            return None;
        }
        let query = matcher::parse_query(req.query);
        let e = self
            .http
            .iter()
            .find(|e| self.takes(e.route, host, req.port) && e.matcher.matches(req, &query))?;
        Some(Selected {
            rule: &self.rules[e.rule],
            matched_prefix: e.matcher.path.matched_prefix(),
        })
    }

    fn takes(&self, route: usize, host: &str, port: u16) -> bool {
        self.applies(route, port) && self.hostnames[route].matches(host)
    }
}

/// The ports of `service` that a route's parentRefs attach it to; `None`
/// when one of them names no port (all ports) or none names the Service
/// (the control plane attached it; take it whole).
fn parent_ports(
    service: &BoundService,
    route_namespace: &str,
    parents: &[mesh_model::routes::ParentReference],
) -> Option<Vec<u16>> {
    let mut ports = Vec::new();
    for p in parents.iter().filter(|p| {
        p.is_service()
            && p.name == service.name
            && p.namespace.as_deref().unwrap_or(route_namespace) == service.namespace
    }) {
        ports.push(p.port?);
    }
    (!ports.is_empty()).then_some(ports)
}

#[cfg(test)]
mod tests;

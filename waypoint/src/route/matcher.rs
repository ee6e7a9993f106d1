//! The compiled match conditions of HTTPRoute and GRPCRoute rules, and the
//! precedence keys that order them.
//!
//! Everything here is decided at compile time so that matching a request is
//! string comparisons and pre-built regexes, with no allocation except when
//! a query string needs percent-decoding or a header repeats.

use std::borrow::Cow;
use std::cmp::Reverse;

use http::{HeaderMap, HeaderName, Method};
use regex::bytes::Regex;

use super::RouteRequest;

/// Compiles a Gateway API regular expression. The API's regexes match the
/// whole value, not a substring, so the pattern is anchored at both ends.
pub(super) fn full_match(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// An HTTPRoute path condition.
#[derive(Clone, Debug)]
pub(super) enum PathMatch {
    Exact(String),
    /// `value` is kept as written, because it is what a `ReplacePrefixMatch`
    /// filter later replaces; `trimmed` is its length without trailing
    /// slashes, which is what matching and precedence use.
    Prefix {
        value: String,
        trimmed: usize,
    },
    Regex(Regex),
}

impl PathMatch {
    pub(super) fn prefix(value: &str) -> Self {
        let trimmed = value.trim_end_matches('/').len();
        Self::Prefix {
            value: value.to_string(),
            trimmed,
        }
    }

    /// The prefix a request matched, for `ReplacePrefixMatch`.
    pub(super) fn matched_prefix(&self) -> Option<&str> {
        match self {
            Self::Prefix { value, .. } => Some(value),
            _ => None,
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(v) => path == v,
            // Whole segments only: `/foo` takes `/foo` and `/foo/bar`, never
            // `/foobar`. The root prefix (trimmed to nothing) takes every path.
            Self::Prefix { value, trimmed } => {
                let prefix = &value[..*trimmed];
                path.strip_prefix(prefix).is_some_and(|rest| {
                    prefix.is_empty() || rest.is_empty() || rest.starts_with('/')
                })
            }
            Self::Regex(re) => re.is_match(path.as_bytes()),
        }
    }

    /// Exact before regular expression before prefix; longer prefixes first.
    fn rank(&self) -> (u8, Reverse<usize>) {
        match self {
            Self::Exact(_) => (0, Reverse(0)),
            Self::Regex(_) => (1, Reverse(0)),
            Self::Prefix { trimmed, .. } => (2, Reverse(*trimmed)),
        }
    }
}

/// How a header or query parameter value must look.
#[derive(Clone, Debug)]
pub(super) enum ValueMatch {
    Exact(Vec<u8>),
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(v) => v == value,
            Self::Regex(re) => re.is_match(value),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct HeaderMatch {
    pub(super) name: HeaderName,
    pub(super) value: ValueMatch,
}

impl HeaderMatch {
    /// A header sent several times is matched as its values joined by
    /// commas, as Envoy (and so Istio) does; an absent header never matches.
    fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            return false;
        };
        let Some(second) = values.next() else {
            return self.value.matches(first.as_bytes());
        };
        let mut joined = [first, second].map(|v| v.as_bytes()).join(&b","[..]);
        for v in values {
            joined.push(b',');
            joined.extend_from_slice(v.as_bytes());
        }
        self.value.matches(&joined)
    }
}

#[derive(Clone, Debug)]
pub(super) struct QueryMatch {
    pub(super) name: String,
    pub(super) value: ValueMatch,
}

/// A query string split into percent-decoded `(name, value)` pairs, in order.
pub(super) type Query<'a> = Vec<(Cow<'a, [u8]>, Cow<'a, [u8]>)>;

/// Splits `a=1&b=2` on `&` and the first `=`; a parameter without `=` has an
/// empty value. Names and values are percent-decoded (`%41` is `A`), but `+`
/// stays `+`: that substitution belongs to HTML forms, not to URLs.
pub(super) fn parse_query(query: Option<&str>) -> Query<'_> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(s: &str) -> Cow<'_, [u8]> {
    if !s.contains('%') {
        return Cow::Borrowed(s.as_bytes());
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match decoded {
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            // A stray `%` is kept as written rather than refused.
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// One `matches` entry of an HTTPRoute rule: every condition must hold.
#[derive(Clone, Debug)]
pub(super) struct HttpMatch {
    pub(super) path: PathMatch,
    pub(super) method: Option<Method>,
    pub(super) headers: Vec<HeaderMatch>,
    pub(super) query: Vec<QueryMatch>,
}

/// Sorts ascending: lower keys are tried first.
pub(super) type HttpKey = (
    (u8, Reverse<usize>),
    Reverse<bool>,
    Reverse<usize>,
    Reverse<usize>,
);

impl HttpMatch {
    /// What a rule without `matches` (or a match without a path) means.
    pub(super) fn everything() -> Self {
        Self {
            path: PathMatch::prefix("/"),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
        }
    }

    pub(super) fn matches(&self, req: &RouteRequest<'_>, query: &Query<'_>) -> bool {
        self.path.matches(req.path)
            && self.method.as_ref().is_none_or(|m| m == req.method)
            && self.headers.iter().all(|h| h.matches(req.headers))
            && self.query.iter().all(|q| {
                // A repeated parameter is undefined in the Gateway API; the
                // first occurrence is the one that counts here.
                query
                    .iter()
                    .find(|(name, _)| **name == *q.name.as_bytes())
                    .is_some_and(|(_, value)| q.value.matches(value))
            })
    }

    /// Gateway API precedence: path kind and prefix length, then a method
    /// condition, then more header conditions, then more query conditions.
    pub(super) fn key(&self) -> HttpKey {
        (
            self.path.rank(),
            Reverse(self.method.is_some()),
            Reverse(self.headers.len()),
            Reverse(self.query.len()),
        )
    }
}

/// The `method` condition of a GRPCRoute match, against `/<service>/<method>`.
#[derive(Clone, Debug)]
pub(super) enum GrpcMethod {
    Any,
    Exact {
        service: Option<String>,
        method: Option<String>,
    },
    Regex {
        service: Option<Regex>,
        method: Option<Regex>,
    },
}

impl GrpcMethod {
    fn matches(&self, path: &str) -> bool {
        if let Self::Any = self {
            return true;
        }
        // Anything but exactly two non-empty segments is not a gRPC call and
        // matches only rules without a method condition.
        let Some((service, method)) = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .filter(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
        else {
            return false;
        };
        match self {
            Self::Any => true,
            Self::Exact {
                service: s,
                method: m,
            } => {
                s.as_deref().is_none_or(|s| s == service)
                    && m.as_deref().is_none_or(|m| m == method)
            }
            Self::Regex {
                service: s,
                method: m,
            } => {
                s.as_ref().is_none_or(|re| re.is_match(service.as_bytes()))
                    && m.as_ref().is_none_or(|re| re.is_match(method.as_bytes()))
            }
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Self::Exact {
                service: Some(_),
                method: Some(_),
            } => 0,
            Self::Exact { .. } => 1,
            Self::Regex { .. } => 2,
            Self::Any => 3,
        }
    }
}

/// One `matches` entry of a GRPCRoute rule.
#[derive(Clone, Debug)]
pub(super) struct GrpcMatch {
    pub(super) method: GrpcMethod,
    pub(super) headers: Vec<HeaderMatch>,
}

impl GrpcMatch {
    pub(super) fn everything() -> Self {
        Self {
            method: GrpcMethod::Any,
            headers: Vec::new(),
        }
    }

    pub(super) fn matches(&self, req: &RouteRequest<'_>) -> bool {
        self.method.matches(req.path) && self.headers.iter().all(|h| h.matches(req.headers))
    }

    /// Exact service and method, then one of them, then a regular
    /// expression, then no method condition; then more header conditions.
    pub(super) fn key(&self) -> (u8, Reverse<usize>) {
        (self.method.rank(), Reverse(self.headers.len()))
    }
}

/// A route's `hostnames`, lower-cased; empty means any host.
#[derive(Clone, Debug, Default)]
pub(super) struct Hostnames(pub(super) Vec<HostPattern>);

#[derive(Clone, Debug)]
pub(super) enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`: one or more labels before it.
    Wildcard(String),
}

impl Hostnames {
    /// `host` is the request's, already without its port.
    pub(super) fn matches(&self, host: &str) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|p| match p {
                HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
                HostPattern::Wildcard(suffix) => {
                    host.len() > suffix.len()
                        && host.is_char_boundary(host.len() - suffix.len())
                        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                }
            })
    }
}

/// `host:port`, `[v6]:port` or a bare host, to the host alone, without a
/// trailing dot (`example.com.` names the same host as `example.com`).
pub(super) fn strip_port(host: &str) -> &str {
    let host = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

//! The compiled filters of a rule or backend: what the waypoint does to a
//! request (or its response) besides choosing where it goes.
//!
//! These types only transform values the caller hands them; sending the
//! redirect, forwarding the mirror copy and touching the real message stay
//! with the proxy.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::Backend;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `RequestHeaderModifier`: edit the request before it is forwarded.
    RequestHeaders(HeaderEdit),
    /// `ResponseHeaderModifier`: edit the response before it is returned.
    ResponseHeaders(HeaderEdit),
    /// `RequestRedirect`: answer with a redirect instead of forwarding.
    Redirect(Redirect),
    /// `URLRewrite`: change host and path before forwarding.
    Rewrite(Rewrite),
    /// `RequestMirror`: also send a copy, whose response is discarded, for
    /// `numerator / denominator` of requests (see [`Filter::mirrors`]).
    Mirror {
        backend: Backend,
        numerator: u32,
        denominator: u32,
    },
}

impl Filter {
    /// Whether the request that drew `roll` (uniform over all of `u32`) is
    /// mirrored by this filter; always false for other filters.
    pub fn mirrors(&self, roll: u32) -> bool {
        match self {
            Self::Mirror {
                numerator,
                denominator,
                ..
            } => (u64::from(roll) * u64::from(*denominator)) >> 32 < u64::from(*numerator),
            _ => false,
        }
    }
}

/// A header modifier with its names and values already checked, so applying
/// it cannot fail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdit {
    pub(super) set: Vec<(HeaderName, HeaderValue)>,
    pub(super) add: Vec<(HeaderName, HeaderValue)>,
    pub(super) remove: Vec<HeaderName>,
}

impl HeaderEdit {
    /// Removes first, then sets (replacing every value), then appends —
    /// Envoy's order, so a header both removed and set ends up set.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// A path modifier shared by redirects and rewrites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PathEdit {
    /// `ReplaceFullPath`.
    Full(String),
    /// `ReplacePrefixMatch`.
    Prefix(String),
}

impl PathEdit {
    /// `matched_prefix` is the PathPrefix the request matched. Without one
    /// (an Exact or regex match, which the Gateway API says not to combine
    /// with `ReplacePrefixMatch`) the prefix is taken to be `/`, so the
    /// replacement is put in front of the whole path.
    fn apply(&self, path: &str, matched_prefix: Option<&str>) -> String {
        let out = match self {
            Self::Full(p) => p.clone(),
            Self::Prefix(replacement) => {
                let prefix = matched_prefix.unwrap_or("/").trim_end_matches('/');
                // Whole segments: what is left is empty or starts with `/`.
                let rest = path
                    .strip_prefix(prefix)
                    .filter(|r| r.is_empty() || r.starts_with('/'))
                    .unwrap_or(path);
                let base = replacement.trim_end_matches('/');
                let mut out = String::with_capacity(base.len() + rest.len() + 1);
                out.push_str(base);
                out.push_str(rest);
                out
            }
        };
        if out.starts_with('/') {
            out
        } else {
            format!("/{out}")
        }
    }
}

fn with_query(mut path: String, query: Option<&str>) -> String {
    if let Some(q) = query {
        path.push('?');
        path.push_str(q);
    }
    path
}

/// `RequestRedirect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub(super) scheme: Option<String>,
    pub(super) hostname: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) path: Option<PathEdit>,
    pub(super) status: StatusCode,
}

impl Redirect {
    /// The status (301 or 302, 302 by default) and the `Location` value.
    ///
    /// `port` is the port the request came in on, if the caller knows it.
    /// Following the Gateway API, a redirect that names a scheme but no port
    /// goes to that scheme's well-known port rather than the request's; a
    /// port that is the scheme's default (80, 443) is left out of the URL.
    pub fn location(
        &self,
        scheme: &str,
        host: &str,
        port: Option<u16>,
        path_and_query: &str,
        matched_prefix: Option<&str>,
    ) -> (StatusCode, String) {
        let scheme = self.scheme.as_deref().unwrap_or(scheme);
        let host = self.hostname.as_deref().unwrap_or(host);
        let port = self
            .port
            .or(if self.scheme.is_some() { None } else { port })
            .filter(|p| Some(*p) != default_port(scheme));
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let path = match &self.path {
            Some(edit) => edit.apply(path, matched_prefix),
            None => path.to_string(),
        };
        let mut location = String::with_capacity(scheme.len() + host.len() + path.len() + 16);
        location.push_str(scheme);
        location.push_str("://");
        // An IPv6 literal needs its brackets back once a port may follow.
        if host.contains(':') && !host.starts_with('[') {
            location.push('[');
            location.push_str(host);
            location.push(']');
        } else {
            location.push_str(host);
        }
        if let Some(p) = port {
            location.push(':');
            location.push_str(&p.to_string());
        }
        location.push_str(&with_query(path, query));
        (self.status, location)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

/// `URLRewrite`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub(super) hostname: Option<String>,
    pub(super) path: Option<PathEdit>,
}

impl Rewrite {
    /// The new host, if the filter replaces it, and the new path-and-query
    /// (the query string is kept as it came).
    pub fn apply(
        &self,
        path: &str,
        query: Option<&str>,
        matched_prefix: Option<&str>,
    ) -> (Option<String>, String) {
        let path = match &self.path {
            Some(edit) => edit.apply(path, matched_prefix),
            None => path.to_string(),
        };
        (self.hostname.clone(), with_query(path, query))
    }
}

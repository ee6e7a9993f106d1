//! Request paths as policies see them: [`normalize_path`] and
//! [`PathMatch`], the compiled form of a `paths` entry, including Envoy URI
//! templates (`{*}`, `{**}`).
//!
//! Normalization exists so that a policy cannot tell apart `/admin` from
//! `/./admin`, `/x/../admin`, `/%61dmin`, `//admin`, `/%2Fadmin`,
//! `/admin;x` or `/public/..;/admin` (the bypasses of CVE-2021-31920 and
//! of Envoy's path-parameter advisories; reliability.md A8). The proxy
//! forwards the normalized path it authorized, so the application sees
//! what the policy judged.

use super::matcher::StrMatch;

/// Why a request path was refused; the request should get a 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error(
        "path {0:?} does not start with '/' (only origin-form request paths can be authorized)"
    )]
    NotAbsolute(String),
    #[error(
        "path {path:?} has a malformed percent-encoding at byte {at} ('%' must be followed by two hex digits)"
    )]
    BadPercentEncoding { path: String, at: usize },
}

/// The strictest of Istio's path normalizations (its
/// `DECODE_AND_MERGE_SLASHES`), with path parameters removed:
///
/// 1. anything from `?` or `#` on is dropped (never part of the result);
/// 2. unreserved characters (`A-Z a-z 0-9 - . _ ~`) and encoded slashes
///    (`%2F`, `%5C`) are decoded, other escapes written in upper-case hex;
/// 3. a backslash is a slash;
/// 4. each segment loses its parameters (`;` and what follows);
/// 5. runs of slashes become one;
/// 6. `.` and `..` segments are removed (RFC 3986 §5.2.4).
///
/// Rejects (`Err`) paths not starting with `/` (`*`, authority-form) and
/// malformed escapes.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute(path.to_string()));
    }
    let decoded = decode(path)?.replace('\\', "/");
    Ok(remove_dot_segments(&merge_slashes(&strip_parameters(
        &decoded,
    ))))
}

fn decode(path: &str) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let end = path[i..].find('%').map_or(path.len(), |n| i + n);
            out.push_str(&path[i..end]);
            i = end;
            continue;
        }
        let byte = bytes
            .get(i + 1..i + 3)
            .and_then(|h| Some(hex_value(h[0])? << 4 | hex_value(h[1])?))
            .ok_or_else(|| PathError::BadPercentEncoding {
                path: path.to_string(),
                at: i,
            })?;
        match byte {
            b if b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\') =>
            {
                out.push(char::from(b));
            }
            b => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        i += 3;
    }
    Ok(out)
}

/// `/a;x/b;y=1` → `/a/b`: a segment's parameters are not part of what a
/// policy matches (`%3B` stays, being data).
fn strip_parameters(path: &str) -> String {
    path.split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("/")
}

/// `//a///b` → `/a/b`.
fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// RFC 3986 §5.2.4 on a path starting with `/`. A trailing `.` or `..`
/// leaves a trailing slash (`/a/b/..` → `/a/`), and `..` never climbs above
/// the root.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.into_iter().enumerate() {
        match segment {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        if i == last {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

/// A compiled `paths` entry, matched against the normalized path.
#[derive(Clone, Debug)]
pub(super) enum PathMatch {
    Plain(StrMatch),
    /// An Envoy URI template: whole segments, then `{**}` if `rest`.
    Template {
        segments: Vec<Segment>,
        rest: bool,
    },
    /// A template this waypoint cannot parse (validation should have
    /// rejected it); matches nothing.
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Segment {
    Literal(String),
    /// `{*}`: exactly one non-empty segment.
    One,
}

impl PathMatch {
    /// Istio sends a value containing `{*}` or `{**}` as a URI template,
    /// anything else as a string pattern.
    pub(super) fn new(pattern: &str) -> Self {
        if !pattern.contains("{*}") && !pattern.contains("{**}") {
            let literal = pattern.trim_start_matches('*').trim_end_matches('*');
            if literal.starts_with('/') && normalize_path(literal).as_deref() != Ok(literal) {
                tracing::warn!(
                    pattern,
                    "authorization policy path is not in normalized form (request paths have \
                     slashes merged, ;parameters removed, %2F decoded); it may never match"
                );
            }
            return Self::Plain(StrMatch::new(pattern));
        }
        match parse_template(pattern) {
            Some((segments, rest)) => Self::Template { segments, rest },
            None => {
                tracing::warn!(
                    pattern,
                    "authorization policy path template is malformed; it matches nothing"
                );
                Self::Never
            }
        }
    }

    pub(super) fn matches(&self, path: &str) -> bool {
        match self {
            Self::Plain(m) => m.matches(path),
            Self::Template { segments, rest } => template_matches(segments, *rest, path),
            Self::Never => false,
        }
    }
}

/// `/` then `/`-separated segments, each `{*}`, a literal without `{`, `}`
/// or `*`, or — last only — `{**}`.
fn parse_template(pattern: &str) -> Option<(Vec<Segment>, bool)> {
    let parts: Vec<&str> = pattern.strip_prefix('/')?.split('/').collect();
    let last = parts.len() - 1;
    let mut segments = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        match part {
            "{*}" => segments.push(Segment::One),
            "{**}" if i == last => return Some((segments, true)),
            s if !s.contains(['{', '}', '*']) => segments.push(Segment::Literal(s.to_string())),
            _ => return None,
        }
    }
    Some((segments, false))
}

/// As Envoy's template regex: `/files/{**}` matches `/files/` and
/// `/files/a/b` but not `/files`.
fn template_matches(segments: &[Segment], rest: bool, path: &str) -> bool {
    let Some(body) = path.strip_prefix('/') else {
        return false;
    };
    let segment_matches = |segment: &Segment, part: &str| match segment {
        Segment::Literal(l) => part == l,
        Segment::One => !part.is_empty(),
    };
    if rest {
        let mut parts = body.splitn(segments.len() + 1, '/');
        segments
            .iter()
            .all(|s| parts.next().is_some_and(|p| segment_matches(s, p)))
            && parts.next().is_some()
    } else {
        let mut parts = body.split('/');
        segments
            .iter()
            .all(|s| parts.next().is_some_and(|p| segment_matches(s, p)))
            && parts.next().is_none()
    }
}

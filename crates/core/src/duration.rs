//! Durations as operators write them in flags and env vars: `90s`, `5m`,
//! `24h`, `90d`, `250ms`, or a bare number of seconds.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duration {0:?} is not a number followed by ms, s, m, h or d (e.g. 10s, 24h)")]
pub struct BadDuration(pub String);

pub fn parse(s: &str) -> Result<Duration, BadDuration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| BadDuration(s.to_string()))?;
    let secs = |m: u64| n.checked_mul(m).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        _ => None,
    }
    .ok_or_else(|| BadDuration(s.to_string()))
}

/// The Gateway API's duration: one to four `<number><unit>` parts, units
/// `h`, `m`, `s` and `ms`, each number at most 5 digits (`1h30m`, `500ms`).
pub fn parse_gateway_api(s: &str) -> Result<Duration, BadDuration> {
    let bad = || BadDuration(s.to_string());
    let mut rest = s;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * u32::try_from(n).map_err(|_| bad())?;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_api_durations() {
        assert_eq!(
            parse_gateway_api("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_gateway_api("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_gateway_api("2s100ms").unwrap(),
            Duration::from_millis(2100)
        );
        for bad in ["", "1", "1.5s", "123456s", "1d", "1s1s1s1s1s", "ms"] {
            assert!(parse_gateway_api(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_units() {
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse("90d").unwrap(), Duration::from_secs(90 * 86400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("7").unwrap(), Duration::from_secs(7));
        for bad in ["", "h", "10x", "-1s", "1.5h"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

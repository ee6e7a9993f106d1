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

#[cfg(test)]
mod tests {
    use super::*;

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

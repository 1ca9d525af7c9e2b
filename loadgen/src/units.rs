//! Parsing of human units used by the CLI and scenario files: durations ("500ms", "2m"),
//! rates ("60/s", "1000/min") and byte sizes ("4KiB", "1MB"). Pure; owns no I/O.

use std::time::Duration;

/// A malformed unit string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("bad duration {0:?} (expected e.g. \"500ms\", \"2s\", \"1m\", \"1h\")")]
    Duration(String),
    #[error("bad rate {0:?} (expected e.g. \"60/s\", \"1000/min\", \"3600/h\")")]
    Rate(String),
    #[error("bad size {0:?} (expected e.g. \"0\", \"512\", \"4KiB\", \"1MiB\", \"1MB\")")]
    Size(String),
}

fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let n: f64 = s[..end].parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    Some((n, s[end..].trim()))
}

/// Parses "250us", "500ms", "2s", "1.5m", "1h", "0" into a duration.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let err = || UnitError::Duration(s.to_string());
    let (n, unit) = split_number(s).ok_or_else(err)?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "" if unit == "s" || n == 0.0 => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(err()),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration the way [`parse_duration`] reads it (shortest exact unit).
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0s".into()
    } else if ns % 3_600_000_000_000 == 0 {
        format!("{}h", ns / 3_600_000_000_000)
    } else if ns % 60_000_000_000 == 0 {
        format!("{}m", ns / 60_000_000_000)
    } else if ns % 1_000_000_000 == 0 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else if ns % 1_000 == 0 {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

/// Parses a rate "60/s", "1000/min", "3600/h", "0.5/s" into requests per second.
pub fn parse_rate(s: &str) -> Result<f64, UnitError> {
    let err = || UnitError::Rate(s.to_string());
    let (num, per) = s.split_once('/').ok_or_else(err)?;
    let (n, rest) = split_number(num).ok_or_else(err)?;
    if !rest.is_empty() {
        return Err(err());
    }
    let per = per.trim();
    let secs = match per {
        "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => parse_duration(per).map_err(|_| err())?.as_secs_f64(),
    };
    if secs <= 0.0 {
        return Err(err());
    }
    Ok(n / secs)
}

/// Parses a byte size: plain bytes, or with KB/MB/GB (powers of 1000) or KiB/MiB/GiB (1024).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Size(s.to_string());
    let (n, unit) = split_number(s).ok_or_else(err)?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    Ok((n * mult).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("2x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("60/s").unwrap(), 60.0);
        assert_eq!(parse_rate("1200/min").unwrap(), 20.0);
        assert_eq!(parse_rate("3600/h").unwrap(), 1.0);
        assert_eq!(parse_rate("5/10s").unwrap(), 0.5);
        assert!(parse_rate("60").is_err());
        assert!(parse_rate("x/s").is_err());
        assert!(parse_rate("6/0s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert_eq!(parse_size("1 MiB").unwrap(), 1 << 20);
        assert!(parse_size("1XB").is_err());
    }
}

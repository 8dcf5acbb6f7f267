//! Durations as the config writes them: `"200ms"`, `"5s"`, `"1m30s"`, `"1h"`, `"0s"`.
//!
//! A bare number is refused on purpose: MMM's configs used integer seconds, and a silent
//! guess at the unit is how a 5 ms trap period ends up as 5 s. The importer converts
//! MMM's integers explicitly.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("duration {input:?} has no unit (write e.g. \"{input}s\" or \"{input}ms\")")]
    MissingUnit { input: String },
    #[error("duration {input:?} has unknown unit {unit:?} (use ms, s, m, h or d)")]
    UnknownUnit { input: String, unit: String },
    #[error("duration {input:?} is not a number followed by a unit")]
    Malformed { input: String },
    #[error("duration {input:?} is too large")]
    Overflow { input: String },
}

/// Parses `"<number><unit>"` terms, optionally several (`"1m30s"`). Units: ms, s, m, h, d.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(DurationError::Malformed { input: s.into() });
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit = unit.trim();
        if unit.is_empty() {
            return Err(DurationError::MissingUnit { input: s.into() });
        }
        let scale_ms: f64 = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            _ => {
                return Err(DurationError::UnknownUnit {
                    input: s.into(),
                    unit: unit.into(),
                })
            }
        };
        let value: f64 =
            number
                .parse()
                .map_err(|_e: std::num::ParseFloatError| DurationError::Malformed {
                    input: s.into(),
                })?;
        let ms = value * scale_ms;
        // Sub-millisecond precision is not meaningful for any timer we run.
        if !ms.is_finite() || ms > 1e15 {
            return Err(DurationError::Overflow { input: s.into() });
        }
        total = total
            .checked_add(Duration::from_micros((ms * 1000.0).round() as u64))
            .ok_or_else(|| DurationError::Overflow { input: s.into() })?;
        rest = after;
    }
    Ok(total)
}

/// Formats a duration the way the config writes it, choosing the largest exact unit.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 2d "), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn refuses_bare_numbers_and_unknown_units() {
        assert!(matches!(
            parse_duration("5"),
            Err(DurationError::MissingUnit { .. })
        ));
        assert!(matches!(
            parse_duration("5 sec"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("s"),
            Err(DurationError::Malformed { .. })
        ));
        assert!(matches!(
            parse_duration("1..2s"),
            Err(DurationError::Malformed { .. })
        ));
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("99999999999999d"),
            Err(DurationError::Overflow { .. })
        ));
    }

    #[test]
    fn formats_round_trip() {
        for s in ["0s", "200ms", "5s", "90s", "2m", "1h", "1d", "1500ms"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{s}");
        }
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}

//! Parses the duration strings the SDKs send (`"60s"`, `"1m"`, `"1h30m"`, `"250ms"`).

use std::time::Duration;

/// A duration string that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {reason} (expected e.g. \"30s\", \"5m\", \"1h30m\")")]
pub struct DurationError {
    /// The text that was given.
    pub input: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// Parses a Go-style duration made of `<integer><unit>` parts, units `ms`, `s`, `m`, `h`, `d`.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
        let millis_per_unit: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit_len..];
        total = value
            .checked_mul(millis_per_unit)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| err("too large"))?;
    }
    Ok(Duration::from_millis(total))
}

/// Formats milliseconds the way [`parse`] reads them back: `"10s"`, `"1m30s"`,
/// `"250ms"`, `"0s"` for zero or less.
pub fn format(ms: i64) -> String {
    if ms <= 0 {
        return "0s".into();
    }
    let mut rest = ms as u64;
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_as_it_parses() {
        assert_eq!(format(10_000), "10s");
        assert_eq!(format(90_000), "1m30s");
        assert_eq!(format(250), "250ms");
        assert_eq!(format(3_600_000 + 1), "1h1ms");
        assert_eq!(format(0), "0s");
    }

    proptest! {
        #[test]
        fn format_round_trips(ms in 1i64..1_000_000_000_000) {
            prop_assert_eq!(parse(&format(ms)).unwrap().as_millis() as i64, ms);
        }
    }

    #[test]
    fn parses_sdk_forms() {
        assert_eq!(parse("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn rejects_garbage_with_reason() {
        assert_eq!(parse("").unwrap_err().reason, "empty");
        assert_eq!(parse("10").unwrap_err().reason, "missing unit");
        assert_eq!(parse("10y").unwrap_err().reason, "unknown unit");
        assert_eq!(parse("s").unwrap_err().reason, "expected a number");
    }

    proptest! {
        #[test]
        fn round_trips_seconds(secs in 0u64..10_000_000) {
            prop_assert_eq!(parse(&format!("{secs}s")), Ok(Duration::from_secs(secs)));
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse(&s);
        }
    }
}

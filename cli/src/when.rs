//! Times given on the command line: a duration back from now (`30m`, `1h30m`, `2d`) or
//! an RFC 3339 time (`2026-12-03T05:43:38Z`).

use chrono::{DateTime, TimeDelta, Utc};

/// A duration as `<n><unit>` parts, largest first or not (`90s`, `1h30m`, `2d`, `1w`):
/// units `s`, `m`, `h`, `d`, `w`.
pub fn parse_duration(text: &str) -> Result<TimeDelta, String> {
    let bad = |why: &str| format!("{text:?} is not a duration ({why}; e.g. 30m, 1h30m, 2d)");
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut total = TimeDelta::zero();
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("each part is a number and a unit"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| bad("a number is too large"))?;
        let mut chars = rest[digits..].chars();
        let unit_secs = match chars.next() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3_600,
            Some('d') => 86_400,
            Some('w') => 604_800,
            Some(_) => return Err(bad("units are s, m, h, d and w")),
            None => return Err(bad("a number has no unit")),
        };
        let part = n
            .checked_mul(unit_secs)
            .and_then(TimeDelta::try_seconds)
            .ok_or_else(|| bad("it is too long"))?;
        total = total
            .checked_add(&part)
            .ok_or_else(|| bad("it is too long"))?;
        rest = chars.as_str();
    }
    Ok(total)
}

/// The time `text` names, for the flag `flag`: that long before `now`, or an RFC 3339
/// time.
pub fn parse_time(flag: &str, text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = parse_duration(text).map_err(|_| {
        anyhow::anyhow!(
            "{flag} {text:?} is neither a duration back from now (30m, 1h30m, 2d) nor an \
             RFC 3339 time (2026-12-03T05:43:38Z)"
        )
    })?;
    now.checked_sub_signed(ago)
        .ok_or_else(|| anyhow::anyhow!("{flag} {text:?} reaches before any time there is"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_add_their_parts() {
        let d = |t: &str| parse_duration(t).map(|d| d.num_seconds());
        assert_eq!(d("90s"), Ok(90));
        assert_eq!(d("30m"), Ok(1_800));
        assert_eq!(d("1h30m"), Ok(5_400));
        assert_eq!(d("2d"), Ok(172_800));
        assert_eq!(d("1w1s"), Ok(604_801));
        assert_eq!(d("0s"), Ok(0));
        for bad in [
            "",
            "1",
            "h",
            "1x",
            "1.5h",
            "-1h",
            "1h 2m",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} is refused");
        }
        assert!(
            parse_duration("5y")
                .unwrap_err()
                .contains("units are s, m, h, d and w")
        );
    }

    #[test]
    fn a_time_is_a_duration_back_from_now_or_an_rfc_3339_time() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .expect("now")
            .with_timezone(&Utc);
        let t = |text: &str| parse_time("--since", text, now).map(|t| t.to_rfc3339());
        assert_eq!(t("1h").ok().as_deref(), Some("2026-12-03T11:00:00+00:00"));
        assert_eq!(
            t("2026-12-01T08:30:00+01:00").ok().as_deref(),
            Some("2026-12-01T07:30:00+00:00")
        );
        let err = t("yesterday").expect_err("refused").to_string();
        assert!(err.contains("--since \"yesterday\" is neither"), "{err}");
    }

    proptest! {
        #[test]
        fn any_sum_of_parts_reads_back(w in 0i64..100, d in 0i64..100, h in 0i64..1000, m in 0i64..1000, s in 0i64..100_000) {
            let text = format!("{w}w{d}d{h}h{m}m{s}s");
            let secs = w * 604_800 + d * 86_400 + h * 3_600 + m * 60 + s;
            prop_assert_eq!(parse_duration(&text).map(|d| d.num_seconds()), Ok(secs));
        }

        #[test]
        fn no_text_makes_it_panic(text in "\\PC{0,24}") {
            let _ = parse_duration(&text);
        }
    }
}

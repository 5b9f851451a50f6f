//! Durations in the engine's string form: `"30s"`, `"5m"`, `"1h"`.

use std::time::Duration;

/// Formats `d` the way the SDKs send timeouts: whole hours as `"<n>h"`, whole minutes as
/// `"<n>m"`, otherwise seconds `"<n>s"`.
///
/// Sub-second parts are rounded up, and the result is at least `"1s"`: a timeout of zero
/// would make every attempt time out at once.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs += 1;
    }
    let secs = secs.max(1);
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_largest_whole_unit() {
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
    }

    #[test]
    fn rounds_up_and_never_returns_zero() {
        assert_eq!(format_duration(Duration::ZERO), "1s");
        assert_eq!(format_duration(Duration::from_millis(1)), "1s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "2s");
        assert_eq!(format_duration(Duration::from_millis(59_001)), "1m");
    }
}

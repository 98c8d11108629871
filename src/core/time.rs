//! Timestamps for JSON: milliseconds since the epoch as RFC 3339 text.

use std::time::{Duration, UNIX_EPOCH};

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds, e.g. `2026-11-25T21:26:00.000Z`.
#[must_use]
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `Some(rfc3339(ms))` when `ms` is after `now_ms`, else `None` (a time already passed).
#[must_use]
pub fn future_rfc3339(ms: u64, now_ms: u64) -> Option<String> {
    (ms > now_ms).then(|| rfc3339(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch_milliseconds_as_utc() {
        assert_eq!(rfc3339(1_764_105_960_123), "2025-11-25T21:26:00.123Z");
        assert_eq!(future_rfc3339(5, 10), None);
    }
}

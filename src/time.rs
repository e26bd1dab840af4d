//! Timestamps as the contract writes them: RFC 3339 UTC, whole seconds.

use std::time::SystemTime;

/// `2026-11-26T18:00:01Z`
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Now, as [`rfc3339`].
pub fn now() -> String {
    rfc3339(SystemTime::now())
}

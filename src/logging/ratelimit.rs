//! Rate-limited warnings, and ids cut for the log: whoever can publish on the hub's topics must
//! not be able to fill the journal. A warning of one kind is logged at its first occurrence, then
//! at most once per [`RateLimit::EVERY`], saying how many occurrences were not logged since.
//!
//! A component keeps one [`RateLimit`] per kind of warning and logs only when
//! [`RateLimit::check`] says so, ending its message with the [`More`] it returns:
//! `if let Some(more) = self.junk.check(Instant::now()) { warn!(door = %shown(id), "...{more}") }`.

use std::fmt;
use std::time::{Duration, Instant};

/// Longest id or topic shown in a log line, in characters.
pub const SHOWN_CHARS: usize = 64;

/// One kind of repeated warning. Hold one per kind (a field of the component that logs it).
#[derive(Debug, Default)]
pub struct RateLimit {
    last: Option<Instant>,
    suppressed: u64,
}

/// How many occurrences were not logged before this one: shown as ` (N more since)`, or
/// nothing when there were none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct More(pub u64);

impl fmt::Display for More {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more since)"),
        }
    }
}

impl RateLimit {
    /// At most one line per kind in this interval.
    pub const EVERY: Duration = Duration::from_secs(60);

    /// Counts one occurrence at `now`; `Some` when it is to be logged, with how many were not.
    pub fn check(&mut self, now: Instant) -> Option<More> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < Self::EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(More(std::mem::take(&mut self.suppressed)))
            }
        }
    }
}

/// `s` cut to `max` characters, with an ellipsis when something was cut: for texts the hub wrote
/// itself around received values, such as a rejection's reason.
pub fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]).into(),
        None => s.into(),
    }
}

/// `s` as a log shows it: escaped (`escape_debug`), cut to [`SHOWN_CHARS`] characters with an
/// ellipsis, so a hostile topic level can neither forge lines nor make them long.
pub fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(SHOWN_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().nth(SHOWN_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_at_once_then_once_a_minute_with_the_count() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut r = RateLimit::default();
        assert_eq!(r.check(at(0)), Some(More(0)));
        for s in 1..60 {
            assert_eq!(r.check(at(s)), None, "{s} s");
        }
        assert_eq!(r.check(at(60)), Some(More(59)));
        assert_eq!(r.check(at(61)), None);
        // A quiet spell: the next one is logged at once, with what was held back.
        assert_eq!(r.check(at(500)), Some(More(1)));
        assert_eq!(r.check(at(501)), None);
        assert_eq!(More(3).to_string(), " (3 more since)");
        assert_eq!(More(0).to_string(), "");
        // 20,000 occurrences within ten minutes make ten lines.
        let mut r = RateLimit::default();
        let lines = (0..20_000u64)
            .filter(|i| r.check(t0 + Duration::from_millis(i * 30)).is_some())
            .count();
        assert_eq!(lines, 10);
    }

    #[test]
    fn shown_ids_are_escaped_and_cut() {
        assert_eq!(shown("lobby"), "lobby");
        assert_eq!(shown("a\nb\"c"), "a\\nb\\\"c");
        let long = "x".repeat(65);
        assert_eq!(shown(&long), format!("{}…", "x".repeat(64)));
        assert_eq!(shown(&"é".repeat(64)), "é".repeat(64));
        assert!(shown(&"\u{1b}".repeat(10_000)).len() < 64 * 8);
        assert_eq!(cut("reason", 6), "reason");
        assert_eq!(cut("reasons", 6), "reason…");
        assert_eq!(cut(&"é".repeat(300), 256).chars().count(), 257);
    }
}

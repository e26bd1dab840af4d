//! Config reload (SIGHUP): what a new config changes, and the record of the last attempt.
//!
//! Buses and doors are applied at once by the bus supervisor ([`crate::buses`]). The other
//! sections (`[hub]`, `[mqtt]`, `[health]`, `[events]`, `[limits]`, `[log]`) are read by
//! components when they start: changing them live would mean dropping the MQTT session or
//! reopening the store. A reload keeps the running values of those sections, and says which of
//! them differ, so that the technician knows a restart is needed.

use serde::{Deserialize, Serialize};

use crate::buses::Applied;
use crate::config::Config;

/// The sections of `new` that differ from `running` and only take effect after a restart.
pub fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    [
        ("hub", running.hub != new.hub),
        ("mqtt", running.mqtt != new.mqtt),
        ("health", running.health != new.health),
        ("events", running.events != new.events),
        ("limits", running.limits != new.limits),
        ("log", running.log != new.log),
    ]
    .into_iter()
    .filter_map(|(section, changed)| changed.then_some(section))
    .collect()
}

/// The config the daemon runs after a reload: `new`'s buses and doors, `running`'s other sections.
pub fn effective(running: &Config, new: Config) -> Config {
    Config {
        bus: new.bus,
        door: new.door,
        ..running.clone()
    }
}

/// The outcome of the last reload, as `doorhub status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// When it was attempted (RFC 3339, UTC).
    pub at: String,
    /// Whether the new config is running.
    pub ok: bool,
    /// Why it was refused: every problem found; empty when `ok`.
    pub errors: Vec<String>,
    /// What changed, when `ok`.
    pub applied: Option<Applied>,
    /// Sections that changed but take effect only after a restart.
    pub needs_restart: Vec<String>,
}

impl Outcome {
    /// A reload that was applied.
    pub fn applied(applied: Applied, needs_restart: &[&str]) -> Outcome {
        Outcome {
            at: crate::time::rfc3339(std::time::SystemTime::now()),
            ok: true,
            errors: Vec::new(),
            applied: Some(applied),
            needs_restart: needs_restart.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A reload that was refused; the old config keeps running.
    pub fn refused(errors: Vec<String>) -> Outcome {
        Outcome {
            at: crate::time::rfc3339(std::time::SystemTime::now()),
            ok: false,
            errors,
            applied: None,
            needs_restart: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &tempfile::TempDir, extra: &str) -> Config {
        let path = dir.path().join("doorhub.toml");
        std::fs::write(
            &path,
            format!(
                "[hub]\nid = \"hub-1\"\ndata_dir = \"data\"\n\n[mqtt]\nurl = \"mqtts://broker:8883\"\n\n\
                 {extra}\n[[bus]]\nname = \"a\"\nport = \"/dev/ttyUSB0\"\n\n\
                 [[door]]\nid = \"lobby\"\nbus = \"a\"\naddress = 0\nmode = \"stored\"\n"
            ),
        )
        .unwrap();
        Config::load(&path).unwrap()
    }

    #[test]
    fn only_sections_read_at_start_need_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let running = config(&dir, "");
        assert!(needs_restart(&running, &running.clone()).is_empty());
        let mut new = config(&dir, "[health]\ninterval_s = 5\n");
        new.door[0].address = 3;
        new.bus[0].baud = 115_200;
        assert_eq!(needs_restart(&running, &new), ["health"]);
        let kept = effective(&running, new.clone());
        assert_eq!(kept.health, running.health);
        assert_eq!(kept.door, new.door);
        assert_eq!(kept.bus, new.bus);
    }
}

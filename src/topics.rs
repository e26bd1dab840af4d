//! The MQTT topic names of the cloud contract, and the checks on what arrives.

use crate::snapshot::{SnapshotError, parse_part_level};

/// Whether `id` is a valid hub or door id: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// The topics of one hub.
#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
}

/// What an incoming topic turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A desired part for a door; the part level may be invalid.
    Desired {
        /// The door id from the topic (valid).
        door: &'a str,
        /// The part level, or why it is not acceptable.
        part: Result<u64, SnapshotError>,
    },
    /// A desired topic whose door level breaks the naming rules.
    InvalidDoor(&'a str),
    /// Anything else: not ours to act on.
    Foreign,
}

impl Topics {
    /// Topics under `{prefix}/{hub}`.
    pub fn new(prefix: &str, hub: &str) -> Topics {
        Topics {
            base: format!("{prefix}/{hub}"),
        }
    }

    /// The subscription for every door's desired parts.
    pub fn desired_filter(&self) -> String {
        format!("{}/doors/+/desired/+", self.base)
    }

    /// The subscription for one door's desired parts.
    pub fn door_desired_filter(&self, door: &str) -> String {
        format!("{}/doors/{door}/desired/+", self.base)
    }

    /// `{prefix}/{hub}/doors/{door}/reported`
    pub fn reported(&self, door: &str) -> String {
        format!("{}/doors/{door}/reported", self.base)
    }

    /// `{prefix}/{hub}/events`
    pub fn events(&self) -> String {
        format!("{}/events", self.base)
    }

    /// `{prefix}/{hub}/health`
    pub fn health(&self) -> String {
        format!("{}/health", self.base)
    }

    /// Classifies an incoming topic. Only this hub's desired topics are trusted.
    pub fn classify<'a>(&self, topic: &'a str) -> Incoming<'a> {
        let Some(rest) = topic
            .strip_prefix(self.base.as_str())
            .and_then(|r| r.strip_prefix("/doors/"))
        else {
            return Incoming::Foreign;
        };
        let mut levels = rest.split('/');
        let (Some(door), Some("desired"), Some(part), None) =
            (levels.next(), levels.next(), levels.next(), levels.next())
        else {
            return Incoming::Foreign;
        };
        if !valid_id(door) {
            return Incoming::InvalidDoor(door);
        }
        Incoming::Desired {
            door,
            part: parse_part_level(part),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "0", "bldg-12-hub-1", "lobby_2", &"a".repeat(64)] {
            assert!(valid_id(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "A",
            "lob by",
            "lobby/1",
            "+",
            "#",
            &"a".repeat(65),
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn classify() {
        let t = Topics::new("doorhub/v1", "hub-1");
        assert_eq!(t.desired_filter(), "doorhub/v1/hub-1/doors/+/desired/+");
        assert_eq!(
            t.classify("doorhub/v1/hub-1/doors/lobby/desired/3"),
            Incoming::Desired {
                door: "lobby",
                part: Ok(3)
            }
        );
        assert!(matches!(
            t.classify("doorhub/v1/hub-1/doors/lobby/desired/03"),
            Incoming::Desired {
                door: "lobby",
                part: Err(_)
            }
        ));
        assert_eq!(
            t.classify("doorhub/v1/hub-1/doors/Lobby/desired/0"),
            Incoming::InvalidDoor("Lobby")
        );
        for foreign in [
            "doorhub/v1/hub-2/doors/lobby/desired/0",
            "doorhub/v1/hub-10/doors/lobby/desired/0",
            "doorhub/v1/hub-1/doors/lobby/reported",
            "doorhub/v1/hub-1/doors/lobby/desired/0/x",
            "doorhub/v1/hub-1/events",
        ] {
            assert_eq!(t.classify(foreign), Incoming::Foreign, "{foreign}");
        }
    }
}

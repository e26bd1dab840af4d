//! What each door reports upstream (`{prefix}/{hub}/doors/{door}/reported`), and the board where
//! the engine leaves the latest state of each door for the MQTT link to publish.
//!
//! Latest state wins: the board keeps one entry per door, so a state that was never published
//! because a newer one replaced it is simply skipped, as the contract allows.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::Notify;

use crate::store::ErrorReport;

/// A door's status as the contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// applied == desired.
    InSync,
    /// A sync is queued or under way.
    Pending,
    /// The reader does not answer.
    Offline,
    /// The last sync attempt failed.
    Error,
    /// The door is not in the hub's config.
    Unconfigured,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::InSync => "in_sync",
            Status::Pending => "pending",
            Status::Offline => "offline",
            Status::Error => "error",
            Status::Unconfigured => "unconfigured",
        })
    }
}

/// The reader's link state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReaderState {
    /// Whether the reader answers.
    pub online: bool,
    /// Since when it has been in that state.
    pub since: String,
}

/// A door's reported state, without its `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reported {
    /// The door id.
    pub door: String,
    /// The stored desired version (0 if none).
    pub desired: u64,
    /// The version the door has confirmed enforcing (0 if none).
    pub applied: u64,
    /// The status.
    pub status: Status,
    /// Credentials in the applied set.
    pub credentials: usize,
    /// Digest of the applied set, 16 lowercase hex digits.
    pub digest: String,
    /// The reader's link.
    pub reader: ReaderState,
    /// The last rejected snapshot or failed sync.
    pub error: Option<ErrorReport>,
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(flatten)]
    reported: &'a Reported,
    at: &'a str,
}

impl Reported {
    /// The payload as published at `at`.
    pub fn to_json(&self, at: &str) -> Vec<u8> {
        // Strings, integers and options of them always serialise.
        serde_json::to_vec(&Wire { reported: self, at }).unwrap_or_default()
    }
}

/// The latest reported state of every door, and which ones still need publishing.
#[derive(Debug, Default)]
pub struct Board {
    doors: Mutex<BTreeMap<String, (Reported, bool)>>,
    /// Doors whose retained `reported` is to be cleared (an empty retained publish), each with
    /// whether that publish is queued; an entry goes once the broker acknowledged it.
    cleared: Mutex<BTreeMap<String, bool>>,
    /// Signalled when a door's state changed.
    pub changed: Notify,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Reported, bool)>> {
        // Only plain map operations run under this lock; recover the data if one panicked.
        self.doors.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cleared(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        // As above: plain set operations only.
        self.cleared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a door's state; it is marked for publishing if anything changed.
    pub fn update(&self, reported: Reported) {
        // Its new state replaces the retained one: no need to clear it first.
        self.lock_cleared().remove(&reported.door);
        let mut doors = self.lock();
        let changed = doors
            .get(&reported.door)
            .is_none_or(|(old, _)| *old != reported);
        if changed {
            doors.insert(reported.door.clone(), (reported, true));
            drop(doors);
            self.changed.notify_one();
        }
    }

    /// Marks every door for publishing again, and every clearing not yet acknowledged (after a
    /// reconnect).
    pub fn mark_all(&self) {
        for entry in self.lock().values_mut() {
            entry.1 = true;
        }
        for queued in self.lock_cleared().values_mut() {
            *queued = false;
        }
    }

    /// Takes up to `limit` doors marked for publishing, clearing their marks.
    pub fn take_marked(&self, limit: usize) -> Vec<Reported> {
        let mut out = Vec::new();
        for (reported, marked) in self.lock().values_mut() {
            if out.len() >= limit {
                break;
            }
            if *marked {
                *marked = false;
                out.push(reported.clone());
            }
        }
        out
    }

    /// Forgets a door, and marks its retained `reported` to be cleared.
    pub fn remove(&self, door: &str) {
        self.lock().remove(door);
        self.lock_cleared().insert(door.to_owned(), false);
        self.changed.notify_one();
    }

    /// Takes up to `limit` doors whose retained `reported` is to be cleared and whose clearing
    /// is not queued yet; they count as queued from now on.
    pub fn take_cleared(&self, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        for (door, queued) in self.lock_cleared().iter_mut() {
            if out.len() >= limit {
                break;
            }
            if !*queued {
                *queued = true;
                out.push(door.clone());
            }
        }
        out
    }

    /// Marks a door's clearing as not queued (its publish could not be queued).
    pub fn reclear(&self, door: &str) {
        if let Some(queued) = self.lock_cleared().get_mut(door) {
            *queued = false;
        }
    }

    /// The broker acknowledged a door's clearing.
    pub fn cleared(&self, door: &str) {
        self.lock_cleared().remove(door);
    }

    /// Marks one door again (its publish could not be queued).
    pub fn remark(&self, door: &str) {
        if let Some(entry) = self.lock().get_mut(door) {
            entry.1 = true;
        }
    }

    /// Every door's current state.
    pub fn snapshot(&self) -> Vec<Reported> {
        self.lock().values().map(|(r, _)| r.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(door: &str, applied: u64) -> Reported {
        Reported {
            door: door.into(),
            desired: 1042,
            applied,
            status: Status::Pending,
            credentials: 1532,
            digest: "9f2c51a0be13d4e7".into(),
            reader: ReaderState {
                online: true,
                since: "2026-11-26T18:00:00Z".into(),
            },
            error: None,
        }
    }

    #[test]
    fn wire_format_matches_the_contract() {
        let v: serde_json::Value =
            serde_json::from_slice(&reported("lobby", 1041).to_json("2026-11-26T18:00:01Z"))
                .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"door": "lobby", "desired": 1042, "applied": 1041,
                "status": "pending", "credentials": 1532, "digest": "9f2c51a0be13d4e7",
                "reader": {"online": true, "since": "2026-11-26T18:00:00Z"},
                "error": null, "at": "2026-11-26T18:00:01Z"})
        );
        let mut r = reported("lobby", 1041);
        r.error = Some(ErrorReport {
            version: None,
            reason: "x".into(),
        });
        let v: serde_json::Value = serde_json::from_slice(&r.to_json("t")).unwrap();
        assert_eq!(
            v["error"],
            serde_json::json!({"version": null, "reason": "x"})
        );
    }

    #[test]
    fn status_text_is_the_wire_name() {
        use Status::*;
        for s in [InSync, Pending, Offline, Error, Unconfigured] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
    }

    #[test]
    fn board_marks_only_changes() {
        let board = Board::default();
        board.update(reported("a", 1));
        board.update(reported("b", 1));
        assert_eq!(board.take_marked(10).len(), 2);
        board.update(reported("a", 1));
        assert!(
            board.take_marked(10).is_empty(),
            "unchanged state is not republished"
        );
        board.update(reported("a", 2));
        board.update(reported("a", 3));
        let marked = board.take_marked(10);
        assert_eq!(marked.len(), 1);
        assert_eq!(marked[0].applied, 3, "latest state wins");
        board.mark_all();
        assert_eq!(board.take_marked(1).len(), 1);
        assert_eq!(board.take_marked(10).len(), 1);
    }

    #[test]
    fn a_removed_door_is_cleared_once_unless_reported_again() {
        let board = Board::default();
        board.update(reported("a", 1));
        board.update(reported("b", 1));
        board.take_marked(10);
        board.remove("a");
        board.remove("b");
        assert_eq!(board.snapshot().len(), 0);
        board.update(reported("b", 2));
        assert_eq!(board.take_cleared(10), vec!["a".to_owned()]);
        assert!(board.take_cleared(10).is_empty(), "queued once");
        board.reclear("a");
        board.reclear("b");
        assert_eq!(board.take_cleared(10), vec!["a".to_owned()]);
        // A reconnection before the broker's acknowledgement queues it again.
        board.mark_all();
        let republished = board.take_marked(10);
        assert_eq!(republished.len(), 1, "a removed door is not republished");
        assert_eq!(board.take_cleared(10), vec!["a".to_owned()]);
        board.cleared("a");
        board.mark_all();
        assert!(board.take_cleared(10).is_empty());
    }
}

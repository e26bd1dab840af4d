//! Events the hub reports upstream (`{prefix}/{hub}/events`), and the handle components use to
//! raise them. Each is stored durably in the outbox, with its `seq`, before it is queued.

use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::mpsc;

/// Why an access was granted or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessReason {
    /// The card is in the set and valid now.
    Ok,
    /// The card is not in the set.
    UnknownCard,
    /// Before its `not_before`.
    NotYetValid,
    /// After its `not_after`.
    Expired,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A card was presented.
    Access {
        /// Whether the door opened.
        granted: bool,
        /// Why.
        reason: AccessReason,
        /// The credential's id, `None` for an unknown card.
        credential: Option<String>,
        /// Card length in bits.
        bits: u8,
        /// Card bits, lowercase hex.
        data: String,
    },
    /// The reader started answering.
    ReaderOnline,
    /// The reader stopped answering.
    ReaderOffline,
    /// The reader reported tamper.
    Tamper,
}

/// One event, before it has a `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened.
    pub at: SystemTime,
    /// The door it concerns.
    pub door: String,
    /// What happened.
    pub kind: EventKind,
}

#[derive(Serialize)]
struct Wire<'a> {
    seq: u64,
    at: String,
    door: &'a str,
    #[serde(flatten)]
    kind: &'a EventKind,
}

impl Event {
    /// The event as published, with its sequence number.
    pub fn to_json(&self, seq: u64) -> Vec<u8> {
        let wire = Wire {
            seq,
            at: crate::time::rfc3339(self.at),
            door: &self.door,
            kind: &self.kind,
        };
        // A struct of strings, integers and booleans always serialises.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// Where components send events; the engine stores them in the outbox.
#[derive(Debug, Clone)]
pub struct EventSender(pub(crate) mpsc::Sender<Event>);

impl EventSender {
    /// Queues an event; waits while the engine is busy. Fails only once the daemon has stopped.
    pub async fn send(&self, event: Event) -> Result<(), Event> {
        self.0.send(event).await.map_err(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn wire_format_matches_the_contract() {
        let e = Event {
            at: UNIX_EPOCH + Duration::from_secs(1_795_716_192),
            door: "lobby".into(),
            kind: EventKind::Access {
                granted: true,
                reason: AccessReason::Ok,
                credential: Some("kc-8f3a91".into()),
                bits: 26,
                data: "bd88eb80".into(),
            },
        };
        let v: serde_json::Value = serde_json::from_slice(&e.to_json(90211)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"seq": 90211, "at": "2026-11-26T18:03:12Z", "door": "lobby",
                "type": "access", "granted": true, "reason": "ok", "credential": "kc-8f3a91",
                "bits": 26, "data": "bd88eb80"})
        );
        let off = Event {
            kind: EventKind::ReaderOffline,
            ..e
        };
        let v: serde_json::Value = serde_json::from_slice(&off.to_json(1)).unwrap();
        assert_eq!(v["type"], "reader_offline");
    }
}

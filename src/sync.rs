//! What the engine and the bus tasks tell each other about doors: the target each `stored` door
//! must reach, and what the readers report back.

use std::time::SystemTime;

use crate::snapshot::SetDigest;
use crate::store::SetState;

/// The desired set a `stored` door must reach: the set itself is in the store (`s/{door}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The desired version.
    pub version: u64,
    /// How many credentials it holds.
    pub count: usize,
    /// Its digest.
    pub digest: SetDigest,
}

/// Why a door's Secure Channel does not come up, for `reported.error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityProblem {
    /// The reason, in the contract's words.
    pub reason: String,
    /// Whether the door is `error` (the reader refused the door's key, or a new key could not
    /// be stored) rather than `offline` (the reader cannot run the Secure Channel at all).
    pub error: bool,
}

/// What a bus task learned about a door.
#[derive(Debug, Clone)]
pub enum DoorReport {
    /// The reader started or stopped answering.
    Reader {
        /// The door.
        door: String,
        /// Whether it answers now.
        online: bool,
        /// Since when.
        at: SystemTime,
    },
    /// A sync towards `version` has started.
    Syncing {
        /// The door.
        door: String,
        /// The version being pushed.
        version: u64,
    },
    /// The reader confirmed enforcing `state`, whose set is `set` (a [`crate::credset`] blob).
    Applied {
        /// The door.
        door: String,
        /// Version, count and digest the reader reported.
        state: SetState,
        /// The set, as the hub sent it.
        set: sled::IVec,
    },
    /// The reader holds something other than what the hub last confirmed (wiped or replaced).
    Lost {
        /// The door.
        door: String,
    },
    /// The door's Secure Channel does not come up (`Some`), or came up again (`None`).
    Security {
        /// The door.
        door: String,
        /// Why, while it does not.
        problem: Option<SecurityProblem>,
    },
    /// A sync attempt failed; it is retried with backoff.
    Failed {
        /// The door.
        door: String,
        /// The version it tried to push.
        version: u64,
        /// Why, for `reported.error`.
        reason: String,
    },
}

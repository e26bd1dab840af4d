//! The hub's health (`{prefix}/{hub}/health`): counters that components update, and the
//! payloads the MQTT link publishes, including the last will and the shutdown notice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::Notify;

use crate::store::OutboxStats;

/// Doors by status, as health reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DoorCounts {
    /// Configured doors.
    pub total: usize,
    /// Configured doors in sync.
    pub in_sync: usize,
    /// Configured doors with a sync queued or under way.
    pub pending: usize,
    /// Configured doors whose reader does not answer.
    pub offline: usize,
    /// Configured doors whose last sync failed.
    pub error: usize,
    /// Doors the cloud knows that are not configured here.
    pub unconfigured: usize,
}

/// Longest connection error kept, in bytes: enough for any rumqttc or TLS message.
const MAX_ERROR: usize = 300;

/// The MQTT link's state, for `doorhub status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttLink {
    /// Whether the link is up.
    pub connected: bool,
    /// Since when it has been up, or down (from the start until the first connection).
    pub since: SystemTime,
    /// The last connection failure and when it happened, kept after a reconnect.
    pub last_error: Option<(SystemTime, String)>,
}

/// Health figures shared by the components.
#[derive(Debug)]
pub struct Health {
    hub: String,
    started_at: SystemTime,
    started: Instant,
    rejected_invalid: AtomicU64,
    rejected_stale: AtomicU64,
    mqtt: Mutex<MqttLink>,
    doors: Mutex<DoorCounts>,
    buses: Mutex<Vec<Arc<BusCounters>>>,
    /// Signalled when door counts or a link changed, so health goes out within a second.
    pub changed: Notify,
}

#[derive(Serialize)]
struct Wire<'a> {
    hub: &'a str,
    online: bool,
    version: &'static str,
    started_at: String,
    uptime_s: u64,
    doors: DoorCounts,
    buses: Vec<BusFigures>,
    outbox: Outbox,
    rejected: Rejected,
    store: StoreFigures,
    at: String,
}

/// One bus's figures, updated by its task and read by health.
#[derive(Debug)]
pub struct BusCounters {
    name: String,
    port: String,
    /// Whether the serial port is open.
    pub open: AtomicBool,
    /// Readers configured on the bus.
    pub readers: AtomicU64,
    /// Readers answering.
    pub online: AtomicU64,
    /// Frames sent.
    pub tx_frames: AtomicU64,
    /// Replies received.
    pub rx_frames: AtomicU64,
    /// Frames dropped for a bad CRC or checksum.
    pub crc_errors: AtomicU64,
    /// Commands that got no reply in time (each retransmission counts).
    pub timeouts: AtomicU64,
    /// Table transfers under way, by door (`doorhub status`; not in the health message).
    transfers: Mutex<Vec<Transfer>>,
}

/// A transfer of files to one stored door, as its bus task last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The door.
    pub door: String,
    /// Its reader's address.
    pub address: u8,
    /// How far it has got.
    pub progress: crate::bus::sync::Progress,
}

/// One bus's figures at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusFigures {
    /// The bus's name.
    pub name: String,
    /// Its serial port.
    pub port: String,
    /// Whether the port is open.
    pub open: bool,
    /// Readers configured on the bus.
    pub readers: u64,
    /// Readers answering.
    pub online: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Replies received.
    pub rx_frames: u64,
    /// Frames dropped for a bad CRC or checksum.
    pub crc_errors: u64,
    /// Commands that got no reply in time.
    pub timeouts: u64,
}

impl BusCounters {
    /// The counters now.
    pub fn figures(&self) -> BusFigures {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BusFigures {
            name: self.name.clone(),
            port: self.port.clone(),
            open: self.open.load(Ordering::Relaxed),
            readers: get(&self.readers),
            online: get(&self.online),
            tx_frames: get(&self.tx_frames),
            rx_frames: get(&self.rx_frames),
            crc_errors: get(&self.crc_errors),
            timeouts: get(&self.timeouts),
        }
    }

    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records `door`'s transfer as it is now; `None` once there is none.
    pub fn set_transfer(
        &self,
        door: &str,
        address: u8,
        progress: Option<crate::bus::sync::Progress>,
    ) {
        let mut transfers = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        let at = transfers.iter().position(|t| t.door == door);
        match (at, progress) {
            (Some(i), Some(progress)) => transfers[i].progress = progress,
            (None, Some(progress)) => transfers.push(Transfer {
                door: door.to_owned(),
                address,
                progress,
            }),
            (Some(i), None) => {
                transfers.remove(i);
            }
            (None, None) => {}
        }
    }

    /// The transfers under way.
    pub fn transfers(&self) -> Vec<Transfer> {
        self.transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Serialize)]
struct Outbox {
    events: u64,
    dropped: u64,
}

#[derive(Serialize)]
struct Rejected {
    invalid: u64,
    stale: u64,
}

#[derive(Serialize)]
struct StoreFigures {
    bytes: u64,
}

#[derive(Serialize)]
struct Offline<'a> {
    hub: &'a str,
    online: bool,
    reason: &'a str,
}

impl Health {
    /// Fresh figures for `hub`, started now.
    pub fn new(hub: &str) -> Health {
        let now = SystemTime::now();
        Health {
            hub: hub.to_owned(),
            started_at: now,
            started: Instant::now(),
            rejected_invalid: AtomicU64::new(0),
            rejected_stale: AtomicU64::new(0),
            mqtt: Mutex::new(MqttLink {
                connected: false,
                since: now,
                last_error: None,
            }),
            doors: Mutex::new(DoorCounts::default()),
            buses: Mutex::new(Vec::new()),
            changed: Notify::new(),
        }
    }

    /// When the daemon started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// How long the daemon has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts a rejected input: a snapshot refused with a reason, or a topic that is not valid.
    pub fn count_invalid(&self) {
        self.rejected_invalid.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a stale or repeated snapshot that was ignored.
    pub fn count_stale(&self) {
        self.rejected_stale.fetch_add(1, Ordering::Relaxed);
    }

    /// `(invalid, stale)` so far.
    pub fn rejected(&self) -> (u64, u64) {
        (
            self.rejected_invalid.load(Ordering::Relaxed),
            self.rejected_stale.load(Ordering::Relaxed),
        )
    }

    fn mqtt_lock(&self) -> std::sync::MutexGuard<'_, MqttLink> {
        // Plain fields only; a panic elsewhere cannot leave them inconsistent.
        self.mqtt.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the MQTT link's state; `since` moves only when it changes.
    pub fn set_mqtt_connected(&self, connected: bool) {
        let mut mqtt = self.mqtt_lock();
        if mqtt.connected != connected {
            mqtt.connected = connected;
            mqtt.since = SystemTime::now();
        }
    }

    /// Records why the link failed or could not connect (cut to a bounded length).
    pub fn set_mqtt_error(&self, message: &str) {
        let mut end = message.len().min(MAX_ERROR);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        self.mqtt_lock().last_error = Some((SystemTime::now(), message[..end].to_owned()));
    }

    /// Whether the MQTT link is up.
    pub fn mqtt_connected(&self) -> bool {
        self.mqtt_lock().connected
    }

    /// The MQTT link's state.
    pub fn mqtt(&self) -> MqttLink {
        self.mqtt_lock().clone()
    }

    /// Records the door counts, signalling a change.
    pub fn set_doors(&self, counts: DoorCounts) {
        let mut doors = self.doors.lock().unwrap_or_else(|e| e.into_inner());
        if *doors != counts {
            *doors = counts;
            drop(doors);
            self.changed.notify_one();
        }
    }

    /// Forgets a bus whose task has stopped (a reload removed or restarted it).
    pub fn remove_bus(&self, name: &str) {
        self.buses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|b| b.name != name);
        self.changed.notify_one();
    }

    /// Registers a bus; its task keeps the returned counters up to date.
    pub fn add_bus(&self, name: &str, port: &str, readers: usize) -> Arc<BusCounters> {
        let counters = Arc::new(BusCounters {
            name: name.to_owned(),
            port: port.to_owned(),
            open: AtomicBool::new(false),
            readers: AtomicU64::new(readers as u64),
            online: AtomicU64::new(0),
            tx_frames: AtomicU64::new(0),
            rx_frames: AtomicU64::new(0),
            crc_errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            transfers: Mutex::new(Vec::new()),
        });
        self.buses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(counters.clone());
        counters
    }

    /// Every registered bus's figures, in the order the buses were made.
    pub fn buses(&self) -> Vec<BusFigures> {
        let buses = self.buses.lock().unwrap_or_else(|e| e.into_inner()).clone();
        buses.iter().map(|b| b.figures()).collect()
    }

    /// Every registered bus's transfers under way, with the bus's name.
    pub fn transfers(&self) -> Vec<(String, Transfer)> {
        let buses = self.buses.lock().unwrap_or_else(|e| e.into_inner()).clone();
        buses
            .iter()
            .flat_map(|b| b.transfers().into_iter().map(|t| (b.name.clone(), t)))
            .collect()
    }

    /// The current door counts.
    pub fn doors(&self) -> DoorCounts {
        *self.doors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The retained health payload.
    pub fn to_json(&self, outbox: OutboxStats, store_bytes: u64) -> Vec<u8> {
        let (invalid, stale) = self.rejected();
        let wire = Wire {
            hub: &self.hub,
            online: true,
            version: env!("CARGO_PKG_VERSION"),
            started_at: crate::time::rfc3339(self.started_at),
            uptime_s: self.started.elapsed().as_secs(),
            doors: self.doors(),
            buses: self.buses(),
            outbox: Outbox {
                events: outbox.events,
                dropped: outbox.dropped,
            },
            rejected: Rejected { invalid, stale },
            store: StoreFigures { bytes: store_bytes },
            at: crate::time::now(),
        };
        // Plain numbers and strings always serialise.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// The last will: the broker publishes it when the link is lost.
    pub fn will(&self) -> Vec<u8> {
        self.offline("connection_lost")
    }

    /// What a clean shutdown publishes.
    pub fn shutdown(&self) -> Vec<u8> {
        self.offline("shutdown")
    }

    fn offline(&self, reason: &str) -> Vec<u8> {
        serde_json::to_vec(&Offline {
            hub: &self.hub,
            online: false,
            reason,
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_contract_fields() {
        let h = Health::new("bldg-12-hub-1");
        h.count_stale();
        h.set_doors(DoorCounts {
            total: 4,
            in_sync: 3,
            pending: 1,
            ..DoorCounts::default()
        });
        let v: serde_json::Value = serde_json::from_slice(&h.to_json(
            OutboxStats {
                events: 2,
                dropped: 1,
            },
            123,
        ))
        .unwrap();
        for key in [
            "hub",
            "online",
            "version",
            "started_at",
            "uptime_s",
            "doors",
            "buses",
            "outbox",
            "rejected",
            "store",
            "at",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["doors"]["pending"], 1);
        assert_eq!(v["rejected"], serde_json::json!({"invalid": 0, "stale": 1}));
        assert_eq!(v["outbox"], serde_json::json!({"events": 2, "dropped": 1}));
        let will: serde_json::Value = serde_json::from_slice(&h.will()).unwrap();
        assert_eq!(
            will,
            serde_json::json!({"hub": "bldg-12-hub-1", "online": false, "reason": "connection_lost"})
        );
    }

    #[test]
    fn mqtt_link_state_moves_since_only_on_a_change_and_bounds_the_error() {
        let h = Health::new("h");
        let down = h.mqtt();
        assert!(!down.connected && down.last_error.is_none());
        h.set_mqtt_connected(false);
        assert_eq!(h.mqtt().since, down.since, "no change, same since");
        h.set_mqtt_connected(true);
        let up = h.mqtt();
        assert!(up.connected && up.since >= down.since);
        // A long message with a multi-byte character across the cut.
        let long = format!("{}é{}", "x".repeat(MAX_ERROR - 1), "y".repeat(500));
        h.set_mqtt_error(&long);
        let (_, kept) = h.mqtt().last_error.unwrap();
        assert_eq!(kept, "x".repeat(MAX_ERROR - 1));
        assert!(
            h.mqtt().connected,
            "an error alone does not change the state"
        );
    }
}

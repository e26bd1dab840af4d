//! `doorhub status`: a technician's view of the running daemon. The daemon answers every
//! connection to a local UNIX socket with one JSON [`Document`] ([`server`]); the command reads
//! it ([`fetch`]) and prints it as JSON or as a table ([`render`]). Everything comes from state
//! the components already share, so it answers whether or not the cloud is reachable.
//!
//! The document is a top-level object of named sections; sections and fields may be added, so
//! readers must ignore what they do not know (the table does).

mod render;
mod server;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Config;
use crate::health::{Health, Transfer};
use crate::reload::Outcome;
use crate::reported::{Board, Reported};
use crate::store::{ErrorReport, Store};

pub use render::table;
pub use server::StatusServer;

/// The largest document the client accepts: far above a hub's worth of doors.
const MAX_DOCUMENT: u64 = 16 << 20;
/// How long the client waits for each read from the daemon.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The status module's errors: the server's socket, and the client's connection.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The socket path holds something other than a socket, which is never removed.
    #[error("{} exists and is not a socket; not replacing it", path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Another process answers on the socket.
    #[error("another process answers on {}; not replacing its socket", path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// A file operation on the socket path failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The client cannot connect to the daemon.
    #[error("cannot connect to {}: {source}{}", path.display(), connect_hint(source))]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon closed the connection without an answer: it is answering others.
    #[error("doorhub on {} is busy answering other status requests; try again", path.display())]
    Busy {
        /// The socket path.
        path: PathBuf,
    },
    /// The daemon's answer is larger than any real one.
    #[error("the answer on {} is larger than {MAX_DOCUMENT} bytes", path.display())]
    TooLarge {
        /// The socket path.
        path: PathBuf,
    },
    /// The daemon's answer is not JSON.
    #[error("the daemon's answer is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The daemon's answer is JSON, but not a document this version can show as a table.
    #[error(
        "the daemon's answer is not a status document this version understands ({0}); --json shows it as sent"
    )]
    Document(serde_json::Error),
}

/// What to check, by the kind of connection failure.
fn connect_hint(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound | ConnectionRefused => {
            "\nIs doorhub running? (`systemctl status doorhub`)\nIs this its socket? Give its \
             hub.status_socket with --socket PATH, or its config with --config FILE."
        }
        PermissionDenied => {
            "\nAre you in group doorhub? (`sudo usermod -aG doorhub $USER`, then log in again)\n\
             Or try sudo."
        }
        _ => "\nIs doorhub running? Are you in group doorhub? Or try sudo.",
    }
}

/// What the daemon shows, all of it shared state that the server only reads.
#[derive(Clone)]
pub struct Sources {
    /// Health figures: the MQTT link, the buses, rejected snapshots.
    pub health: Arc<Health>,
    /// Each door's latest reported state.
    pub board: Arc<Board>,
    /// The store, for the outbox's figures.
    pub store: Store,
    /// The configuration in force (it may change at run time).
    pub config: watch::Receiver<Arc<Config>>,
    /// The outcome of the last config reload, if any.
    pub reload: watch::Receiver<Option<Outcome>>,
}

/// The status document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// The hub and the daemon.
    pub hub: HubSection,
    /// The MQTT link.
    pub mqtt: MqttSection,
    /// Every configured bus, with its readers.
    pub buses: Vec<BusSection>,
    /// Every configured door, in config order, then the doors the cloud knows that are not
    /// configured.
    pub doors: Vec<DoorSection>,
    /// Events waiting for the broker.
    pub outbox: OutboxSection,
    /// Snapshot parts or topics refused since the start.
    pub rejected: RejectedSection,
    /// The store.
    pub store: StoreSection,
    /// The last config reload (SIGHUP) since the start; `null` if none.
    #[serde(default)]
    pub reload: Option<Outcome>,
}

/// `hub`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubSection {
    /// `hub.id`.
    pub id: String,
    /// The daemon's version.
    pub version: String,
    /// When the daemon started (RFC 3339).
    pub started_at: String,
    /// Seconds since then.
    pub uptime_s: u64,
    /// When the document was made (RFC 3339).
    pub at: String,
}

/// `mqtt`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttSection {
    /// The broker URL (it never holds credentials: the config refuses them).
    pub url: String,
    /// The client id given to the broker.
    pub client_id: String,
    /// Whether the link is up.
    pub connected: bool,
    /// Since when it has been up or down (RFC 3339).
    pub since: String,
    /// The last connection failure, kept after a reconnect.
    pub last_error: Option<LinkError>,
}

/// A connection failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkError {
    /// When (RFC 3339).
    pub at: String,
    /// What the MQTT client said.
    pub message: String,
}

/// One entry of `buses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusSection {
    /// Its name.
    pub name: String,
    /// The serial port.
    pub port: String,
    /// Line speed.
    pub baud: u32,
    /// Whether the port is open.
    pub open: bool,
    /// Frames sent.
    pub tx_frames: u64,
    /// Replies received.
    pub rx_frames: u64,
    /// Frames dropped for a bad CRC or checksum.
    pub crc_errors: u64,
    /// Commands that got no reply in time.
    pub timeouts: u64,
    /// Its readers, by address.
    pub readers: Vec<ReaderSection>,
    /// Table transfers under way to its stored doors, by address (absent from older daemons).
    #[serde(default)]
    pub transfers: Vec<TransferSection>,
}

/// A table transfer under way to a stored door: its files go out in fragments between polls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSection {
    /// The door.
    pub door: String,
    /// Its reader's address.
    pub address: u8,
    /// Files the reader has taken whole.
    pub files_sent: usize,
    /// Files in the transfer.
    pub files_total: usize,
    /// Bytes the reader has taken (a file resent after a lost fragment counts from its start).
    pub bytes_sent: usize,
    /// Bytes of every file in the transfer.
    pub bytes_total: usize,
    /// When its first fragment went out (RFC 3339).
    pub started_at: String,
    /// Bytes a second since then; `None` until a byte has gone.
    pub rate_bytes_per_s: Option<u64>,
    /// Seconds left at that rate; `None` while the rate is.
    pub eta_s: Option<u64>,
}

impl TransferSection {
    fn new(t: &Transfer, now: tokio::time::Instant, wall: SystemTime) -> TransferSection {
        let p = &t.progress;
        let elapsed = now.saturating_duration_since(p.started);
        let millis = elapsed.as_millis() as u64;
        let rate =
            (millis > 0 && p.bytes_sent > 0).then(|| (p.bytes_sent as u64 * 1000 / millis).max(1));
        let left = p.bytes_total.saturating_sub(p.bytes_sent) as u64;
        TransferSection {
            door: t.door.clone(),
            address: t.address,
            files_sent: p.files_sent,
            files_total: p.files_total,
            bytes_sent: p.bytes_sent,
            bytes_total: p.bytes_total,
            started_at: crate::time::rfc3339(wall.checked_sub(elapsed).unwrap_or(wall)),
            rate_bytes_per_s: rate,
            eta_s: rate.map(|r| left.div_ceil(r)),
        }
    }
}

/// One reader on a bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderSection {
    /// OSDP address.
    pub address: u8,
    /// The door it serves.
    pub door: String,
    /// `stored` or `hub`.
    pub mode: String,
    /// Whether it answers.
    pub online: bool,
    /// Since when it has (RFC 3339); `None` before the engine has reported the door.
    pub since: Option<String>,
}

/// One entry of `doors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoorSection {
    /// The door id.
    pub id: String,
    /// Its bus; `None` for an unconfigured door.
    pub bus: Option<String>,
    /// Its reader's address; `None` for an unconfigured door.
    pub address: Option<u8>,
    /// `stored` or `hub`; `None` for an unconfigured door.
    pub mode: Option<String>,
    /// `in_sync`, `pending`, `offline`, `error` or `unconfigured` as in `reported`, or `unknown`
    /// before the engine has reported the door.
    pub status: String,
    /// The stored desired version (0 if none).
    pub desired: u64,
    /// The version the door has confirmed enforcing (0 if none).
    pub applied: u64,
    /// Credentials in the applied set.
    pub credentials: usize,
    /// Digest of the applied set.
    pub digest: String,
    /// The last rejected snapshot or failed sync.
    pub error: Option<ErrorReport>,
}

/// `outbox`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxSection {
    /// Events waiting to be acknowledged by the broker.
    pub events: u64,
    /// Events dropped because the outbox was full.
    pub dropped: u64,
}

/// `rejected`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedSection {
    /// Snapshots refused with a reason, and topics that are not valid.
    pub invalid: u64,
    /// Stale or repeated snapshot parts ignored.
    pub stale: u64,
}

/// `store`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSection {
    /// Its size on disk.
    pub bytes: u64,
}

impl Sources {
    /// The document as of now. Takes each shared lock only long enough to copy what it holds.
    pub fn document(&self) -> Document {
        // Cloned out at once: holding the borrow would hold up a reload.
        let config = self.config.borrow().clone();
        let health = &self.health;
        let mqtt = health.mqtt();
        let mut board: BTreeMap<String, Reported> = self
            .board
            .snapshot()
            .into_iter()
            .map(|r| (r.door.clone(), r))
            .collect();
        let figures = health.buses();
        let transfers = health.transfers();
        let (now, wall) = (tokio::time::Instant::now(), SystemTime::now());
        let buses = config
            .bus
            .iter()
            .map(|bus| {
                let f = figures.iter().find(|f| f.name == bus.name);
                let mut readers: Vec<ReaderSection> = config
                    .door
                    .iter()
                    .filter(|d| d.bus == bus.name)
                    .map(|d| {
                        let reader = board.get(&d.id).map(|r| &r.reader);
                        ReaderSection {
                            address: d.address,
                            door: d.id.clone(),
                            mode: d.mode.as_str().to_owned(),
                            online: reader.is_some_and(|r| r.online),
                            since: reader.map(|r| r.since.clone()),
                        }
                    })
                    .collect();
                readers.sort_by_key(|r| r.address);
                let mut sending: Vec<TransferSection> = transfers
                    .iter()
                    .filter(|(b, _)| *b == bus.name)
                    .map(|(_, t)| TransferSection::new(t, now, wall))
                    .collect();
                sending.sort_by_key(|t| t.address);
                BusSection {
                    name: bus.name.clone(),
                    port: bus.port.display().to_string(),
                    baud: bus.baud,
                    open: f.is_some_and(|f| f.open),
                    tx_frames: f.map_or(0, |f| f.tx_frames),
                    rx_frames: f.map_or(0, |f| f.rx_frames),
                    crc_errors: f.map_or(0, |f| f.crc_errors),
                    timeouts: f.map_or(0, |f| f.timeouts),
                    readers,
                    transfers: sending,
                }
            })
            .collect();
        let mut doors: Vec<DoorSection> = config
            .door
            .iter()
            .map(|d| {
                let mut door = match board.remove(&d.id) {
                    Some(r) => door_section(r),
                    None => DoorSection {
                        id: d.id.clone(),
                        bus: None,
                        address: None,
                        mode: None,
                        status: "unknown".to_owned(),
                        desired: 0,
                        applied: 0,
                        credentials: 0,
                        digest: String::new(),
                        error: None,
                    },
                };
                door.bus = Some(d.bus.clone());
                door.address = Some(d.address);
                door.mode = Some(d.mode.as_str().to_owned());
                door
            })
            .collect();
        // What is left on the board are the doors the cloud knows and the config does not.
        doors.extend(board.into_values().map(door_section));
        let outbox = self.store.outbox_stats();
        let (invalid, stale) = health.rejected();
        Document {
            hub: HubSection {
                id: config.hub.id.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                started_at: crate::time::rfc3339(health.started_at()),
                uptime_s: health.uptime().as_secs(),
                at: crate::time::now(),
            },
            mqtt: MqttSection {
                url: config.mqtt.url.clone(),
                client_id: config.mqtt.client_id.clone(),
                connected: mqtt.connected,
                since: crate::time::rfc3339(mqtt.since),
                last_error: mqtt.last_error.map(|(at, message)| LinkError {
                    at: crate::time::rfc3339(at),
                    message,
                }),
            },
            buses,
            doors,
            outbox: OutboxSection {
                events: outbox.events,
                dropped: outbox.dropped,
            },
            rejected: RejectedSection { invalid, stale },
            store: StoreSection {
                bytes: self.store.size_on_disk(),
            },
            reload: self.reload.borrow().clone(),
        }
    }
}

/// A door as the board has it; the caller adds what the config says.
fn door_section(r: Reported) -> DoorSection {
    DoorSection {
        id: r.door,
        bus: None,
        address: None,
        mode: None,
        status: r.status.to_string(),
        desired: r.desired,
        applied: r.applied,
        credentials: r.credentials,
        digest: r.digest,
        error: r.error,
    }
}

/// Reads the daemon's document from the socket at `path`, as sent.
pub fn fetch(path: &Path) -> Result<Vec<u8>, StatusError> {
    let connect = |source| StatusError::Connect {
        path: path.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(path).map_err(connect)?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(connect)?;
    let mut bytes = Vec::new();
    stream
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| StatusError::Io {
            action: "read the status from",
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.is_empty() {
        return Err(StatusError::Busy {
            path: path.to_path_buf(),
        });
    }
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(StatusError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// Parses what [`fetch`] read.
pub fn parse(bytes: &[u8]) -> Result<Document, StatusError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => StatusError::Document(e),
        _ => StatusError::NotJson(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reported::{ReaderState, Status};

    /// Shared state for a hub with two doors on one bus, its store and config in `dir`.
    pub(super) fn sources(dir: &Path) -> Sources {
        let path = dir.join("doorhub.toml");
        std::fs::write(
            &path,
            "[hub]\nid = \"hub-1\"\ndata_dir = \"data\"\nstatus_socket = \"status.sock\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\nallow_plaintext = true\n\
             [[bus]]\nname = \"a\"\nport = \"/dev/null\"\n\
             [[door]]\nid = \"lobby\"\nbus = \"a\"\naddress = 2\nmode = \"stored\"\n\
             [[door]]\nid = \"garage\"\nbus = \"a\"\naddress = 1\nmode = \"hub\"\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        let health = Arc::new(Health::new(&config.hub.id));
        health.add_bus("a", "/dev/null", 2);
        Sources {
            health,
            board: Arc::new(Board::default()),
            store: Store::open(&config.hub.data_dir).unwrap(),
            config: watch::channel(Arc::new(config)).1,
            reload: watch::channel(None).1,
        }
    }

    pub(super) fn reported(door: &str, status: Status) -> Reported {
        Reported {
            door: door.into(),
            desired: 7,
            applied: 6,
            status,
            credentials: 12,
            digest: "9f2c51a0be13d4e7".into(),
            reader: ReaderState {
                online: true,
                since: "2026-11-26T18:00:00Z".into(),
            },
            error: None,
        }
    }

    #[test]
    fn the_document_joins_config_board_and_health() {
        let dir = tempfile::tempdir().unwrap();
        let s = sources(dir.path());
        s.board.update(reported("lobby", Status::Pending));
        s.board.update(reported("visitor", Status::Unconfigured));
        s.health.set_mqtt_error("I/O: Connection refused");
        s.health.count_invalid();
        let doc = s.document();
        assert_eq!(doc.hub.id, "hub-1");
        assert_eq!(doc.mqtt.url, "mqtt://127.0.0.1:1");
        assert_eq!(doc.mqtt.client_id, "hub-1");
        assert!(!doc.mqtt.connected);
        assert_eq!(
            doc.mqtt.last_error.map(|e| e.message).as_deref(),
            Some("I/O: Connection refused")
        );
        assert_eq!(
            doc.rejected,
            RejectedSection {
                invalid: 1,
                stale: 0
            }
        );
        // Readers by address; the one the engine has not reported yet has no `since`.
        let bus = &doc.buses[0];
        assert_eq!((bus.name.as_str(), bus.baud, bus.open), ("a", 9600, false));
        let readers: Vec<_> = bus
            .readers
            .iter()
            .map(|r| (r.address, r.door.as_str(), r.online, r.since.is_some()))
            .collect();
        assert_eq!(
            readers,
            [(1, "garage", false, false), (2, "lobby", true, true)]
        );
        // Configured doors in config order, then the unconfigured ones.
        let doors: Vec<_> = doc
            .doors
            .iter()
            .map(|d| {
                (
                    d.id.as_str(),
                    d.status.as_str(),
                    d.bus.as_deref(),
                    d.address,
                )
            })
            .collect();
        assert_eq!(
            doors,
            [
                ("lobby", "pending", Some("a"), Some(2)),
                ("garage", "unknown", Some("a"), Some(1)),
                ("visitor", "unconfigured", None, None),
            ]
        );
        assert_eq!(doc.doors[0].mode.as_deref(), Some("stored"));
        assert_eq!((doc.doors[0].desired, doc.doors[0].applied), (7, 6));
    }

    #[test]
    fn the_document_round_trips_and_ignores_unknown_sections() {
        let dir = tempfile::tempdir().unwrap();
        let doc = sources(dir.path()).document();
        let mut value = serde_json::to_value(&doc).unwrap();
        for section in [
            "hub", "mqtt", "buses", "doors", "outbox", "rejected", "store", "reload",
        ] {
            assert!(value.get(section).is_some(), "{section}");
        }
        // A newer daemon may add sections; this reader still understands the rest.
        value["firmware"] = serde_json::json!({"at": "2026-11-26T18:00:00Z"});
        let bytes = serde_json::to_vec(&value).unwrap();
        assert_eq!(parse(&bytes).unwrap(), doc);
        assert!(matches!(parse(b"{}"), Err(StatusError::Document(_))));
        assert!(matches!(parse(b"{"), Err(StatusError::NotJson(_))));
    }

    #[test]
    fn connect_errors_say_what_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let message = fetch(&path).unwrap_err().to_string();
        assert!(message.contains("Is doorhub running?"), "{message}");
        let denied = StatusError::Connect {
            path,
            source: std::io::ErrorKind::PermissionDenied.into(),
        }
        .to_string();
        assert!(denied.contains("group doorhub"), "{denied}");
        assert!(denied.contains("sudo"), "{denied}");
    }

    #[test]
    fn a_connection_closed_without_an_answer_means_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let closer = std::thread::spawn(move || drop(listener.accept().unwrap()));
        let e = fetch(&path).unwrap_err();
        closer.join().unwrap();
        assert!(matches!(e, StatusError::Busy { .. }), "{e}");
        assert!(e.to_string().contains("try again"), "{e}");
    }
}

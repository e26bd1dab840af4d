//! The durable store, in sled: every door's desired set and applied state, the parts of a
//! snapshot still being assembled, and the event outbox with its sequence numbers.
//!
//! Everything lives in one sled tree under key prefixes, so that each change is one atomic
//! `apply_batch`: a power cut at any instant leaves either the state before a change or the
//! state after it. Nothing is acknowledged upstream before [`Store::flush`] returns.
//!
//! | key | value |
//! |---|---|
//! | `d/{door}` | [`DoorRecord`], JSON (small; fields can be added later) |
//! | `s/{door}` | the desired credential set, sorted by card ([`crate::credset`]) |
//! | `a/{door}` | the set a `stored` door's reader confirmed, same format |
//! | `p/{door}/{part u16 BE}` | a staged [`Part`], postcard |
//! | `c/{door}` | empty: the door's record was removed and its retained `reported` is still to be cleared |
//! | `o/{seq u64 BE}` | one event as published, JSON |
//! | `m/next_seq`, `m/dropped` | outbox counters, u64 BE |

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::credset::SetView;
use crate::snapshot::{Credential, Part, SetDigest};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created or secured.
    #[error("data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds the store.
    #[error("the store in {0} is in use by another process (is doorhub already running?)")]
    Locked(PathBuf),
    /// sled failed.
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A value on disk could not be decoded.
    #[error("store: the value at {key} is corrupt: {reason}")]
    Corrupt {
        /// The key, printable.
        key: String,
        /// What the decoder said.
        reason: String,
    },
    /// A value could not be encoded (never expected; reported rather than unwrapped).
    #[error("store: cannot encode {key}: {reason}")]
    Encode {
        /// The key, printable.
        key: String,
        /// What the encoder said.
        reason: String,
    },
}

/// What the hub keeps about one door.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DoorRecord {
    /// The adopted desired snapshot, if any.
    pub desired: Option<DesiredMeta>,
    /// What the door has confirmed enforcing, if anything.
    pub applied: Option<SetState>,
    /// The last rejected snapshot or failed sync.
    pub error: Option<ErrorReport>,
    /// The newest version being assembled from its parts.
    pub assembly: Option<Assembly>,
    /// A version rejected as a whole while being assembled; its remaining parts are ignored.
    pub rejected: Option<u64>,
}

/// The adopted desired snapshot's summary; the set itself is under `s/{door}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredMeta {
    /// Version, count and digest.
    pub set: SetState,
    /// Content hash of each part, to tell a redelivery from a changed republish.
    pub part_hashes: Vec<String>,
}

/// A version of a set, with its size and digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetState {
    /// The snapshot version.
    pub version: u64,
    /// How many credentials.
    pub count: usize,
    /// The set digest.
    pub digest: SetDigest,
}

/// The `reported.error` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// The version concerned, `None` when it could not be read.
    pub version: Option<u64>,
    /// Why.
    pub reason: String,
}

/// A version whose parts are arriving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assembly {
    /// The version.
    pub version: u64,
    /// Its part count.
    pub parts: u16,
    /// The content hash of each part received so far.
    pub received: Vec<Option<String>>,
    /// Credentials received so far, to enforce the per-door limit early.
    pub count: usize,
}

impl Assembly {
    /// Whether every part has arrived.
    pub fn complete(&self) -> bool {
        self.received.iter().all(Option::is_some)
    }
}

/// One atomic change to the store.
pub struct Change {
    batch: sled::Batch,
}

impl Change {
    /// Starts an empty change.
    pub fn new() -> Change {
        Change {
            batch: sled::Batch::default(),
        }
    }

    /// Writes a door's record.
    pub fn put_door(&mut self, door: &str, record: &DoorRecord) -> Result<(), StoreError> {
        let key = door_key(door);
        let value = serde_json::to_vec(record).map_err(|e| encode_error(&key, e))?;
        self.batch.insert(key, value);
        Ok(())
    }

    /// Stages one part of a version being assembled.
    pub fn put_part(&mut self, door: &str, part: &Part) -> Result<(), StoreError> {
        let key = part_key(door, part.part);
        let value = postcard::to_stdvec(part).map_err(|e| encode_error(&key, e))?;
        self.batch.insert(key, value);
        Ok(())
    }

    /// Removes staged parts `0..parts` of a door.
    pub fn remove_parts(&mut self, door: &str, parts: u16) {
        for p in 0..parts {
            self.batch.remove(part_key(door, p));
        }
    }

    /// Records the set a `stored` door's reader confirmed (a [`crate::credset`] blob).
    pub fn put_applied_set(&mut self, door: &str, set: sled::IVec) {
        self.batch.insert(applied_key(door), set);
    }

    /// Forgets the set a `stored` door's reader holds (it was wiped or replaced).
    pub fn remove_applied_set(&mut self, door: &str) {
        self.batch.remove(applied_key(door));
    }

    /// Removes everything stored for a door: its record, its sets, and staged parts `0..parts`;
    /// and notes that its retained `reported` is to be cleared ([`Store::pending_clears`]).
    pub fn remove_door(&mut self, door: &str, parts: u16) {
        self.batch.insert(clear_key(door), &[][..]);
        self.batch.remove(door_key(door));
        self.batch.remove(set_key(door));
        self.batch.remove(applied_key(door));
        self.remove_parts(door, parts);
    }

    /// Replaces a door's desired set with version `version`'s.
    pub fn put_set(
        &mut self,
        door: &str,
        version: u64,
        set: &[Credential],
    ) -> Result<(), StoreError> {
        let key = set_key(door);
        let value = crate::credset::encode(version, set).map_err(|e| encode_error(&key, e))?;
        self.batch.insert(key, value);
        Ok(())
    }
}

impl Default for Change {
    fn default() -> Self {
        Change::new()
    }
}

/// The store. Cloning is cheap and shares the same database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    outbox: Arc<Mutex<OutboxMeta>>,
}

#[derive(Debug)]
struct OutboxMeta {
    next_seq: u64,
    len: u64,
    dropped: u64,
}

/// The outbox's figures for health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    /// Events waiting to be acknowledged by the broker.
    pub events: u64,
    /// Events dropped because the outbox was full.
    pub dropped: u64,
}

/// How long opening waits for the store's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
const NEXT_SEQ: &[u8] = b"m/next_seq";
const DROPPED: &[u8] = b"m/dropped";
const OUTBOX: &[u8] = b"o/";
const CLEAR: &[u8] = b"c/";

impl Store {
    /// Opens (or creates, mode 0700) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let dir_err = |source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(dir_err)?;
        }
        // The store holds every door's credentials: nobody but the service may read it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
        let config = sled::Config::new()
            .path(dir.join("db"))
            // sled's default cache is 1 GiB; a hub's working set is far smaller.
            .cache_capacity(8 * 1024 * 1024);
        let db = open_locked(&config, dir)?;
        let next_seq = read_u64(&db, NEXT_SEQ)?.unwrap_or(1);
        let dropped = read_u64(&db, DROPPED)?.unwrap_or(0);
        let len = db.scan_prefix(OUTBOX).count() as u64;
        Ok(Store {
            db,
            outbox: Arc::new(Mutex::new(OutboxMeta {
                next_seq,
                len,
                dropped,
            })),
        })
    }

    /// Applies one change atomically (not yet flushed).
    pub fn apply(&self, change: Change) -> Result<(), StoreError> {
        Ok(self.db.apply_batch(change.batch)?)
    }

    /// Makes everything applied so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Every door record, by door id; a record that cannot be decoded is an error of its own,
    /// so one bad record does not hide the others.
    #[allow(clippy::type_complexity)]
    pub fn doors(&self) -> Result<Vec<(String, Result<DoorRecord, StoreError>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(b"d/") {
            let (k, v) = item?;
            let door = String::from_utf8_lossy(&k[2..]).into_owned();
            let record = serde_json::from_slice(&v).map_err(|e| corrupt(&k, e));
            out.push((door, record));
        }
        Ok(out)
    }

    /// Doors whose record was removed and whose retained `reported` is not known to be cleared.
    pub fn pending_clears(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for key in self.db.scan_prefix(CLEAR).keys() {
            out.push(String::from_utf8_lossy(&key?[CLEAR.len()..]).into_owned());
        }
        Ok(out)
    }

    /// The broker took the clearing of a door's retained `reported` (or the door has a record
    /// again). Not flushed: a crash merely clears it again.
    pub fn cleared(&self, door: &str) -> Result<(), StoreError> {
        self.db.remove(clear_key(door))?;
        Ok(())
    }

    /// A door's desired set as stored (see [`crate::credset`]); `None` if it has none.
    pub fn set_blob(&self, door: &str) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.db.get(set_key(door))?)
    }

    /// The set a `stored` door's reader last confirmed, as stored; `None` if none.
    pub fn applied_set_blob(&self, door: &str) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.db.get(applied_key(door))?)
    }

    /// Checks that a door's stored desired set reads back whole as `state` (version, count and
    /// digest); [`StoreError::Corrupt`] says why it does not.
    pub fn check_set(&self, door: &str, state: &SetState) -> Result<(), StoreError> {
        let key = set_key(door);
        let Some(blob) = self.db.get(&key)? else {
            return Err(corrupt(&key, "the stored credential set is missing"));
        };
        let view = SetView::new(&blob).map_err(|e| corrupt(&key, e))?;
        let digest = view.digest().map_err(|e| corrupt(&key, e))?;
        if (view.version(), view.len(), digest) != (state.version, state.count, state.digest) {
            return Err(corrupt(
                &key,
                format!(
                    "the stored credential set is version {}, {} credentials, digest {digest}, \
                     not version {}, {} credentials, digest {}",
                    view.version(),
                    view.len(),
                    state.version,
                    state.count,
                    state.digest
                ),
            ));
        }
        Ok(())
    }

    /// A door's desired set, decoded (empty if none).
    pub fn set(&self, door: &str) -> Result<Vec<Credential>, StoreError> {
        let key = set_key(door);
        match self.db.get(&key)? {
            Some(v) => SetView::new(&v)
                .and_then(|view| view.to_vec())
                .map_err(|e| corrupt(&key, e)),
            None => Ok(Vec::new()),
        }
    }

    /// A door's staged parts `0..parts` except `skip`, in order; a missing part is an error.
    pub fn parts_except(&self, door: &str, parts: u16, skip: u16) -> Result<Vec<Part>, StoreError> {
        (0..parts)
            .filter(|&p| p != skip)
            .map(|p| {
                let key = part_key(door, p);
                let v = self.db.get(&key)?.ok_or_else(|| StoreError::Corrupt {
                    key: printable(&key),
                    reason: "staged part is missing".to_owned(),
                })?;
                postcard::from_bytes(&v).map_err(|e| corrupt(&key, e))
            })
            .collect()
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn outbox_meta(&self) -> MutexGuard<'_, OutboxMeta> {
        // A panic while holding this lock would already have ended the daemon; recover the data.
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends events, giving each the next `seq`; `render(seq)` makes its payload. When the
    /// outbox already holds `max_queued` events, the oldest are dropped and counted.
    pub fn append_events<T>(
        &self,
        events: &[T],
        max_queued: u64,
        render: impl Fn(u64, &T) -> Vec<u8>,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut meta = self.outbox_meta();
        let mut batch = sled::Batch::default();
        let mut seq = meta.next_seq;
        for e in events {
            batch.insert(&event_key(seq)[..], render(seq, e));
            seq += 1;
        }
        let added = events.len() as u64;
        let over = (meta.len + added).saturating_sub(max_queued);
        let mut doomed = Vec::new();
        if over > 0 {
            // Oldest first: what is still stored, then the oldest of this batch.
            for item in self.db.scan_prefix(OUTBOX).keys().take(over as usize) {
                doomed.push(item?);
            }
            let mut s = meta.next_seq;
            while (doomed.len() as u64) < over {
                doomed.push(sled::IVec::from(&event_key(s)[..]));
                s += 1;
            }
            for k in &doomed {
                batch.remove(k.clone());
            }
            batch.insert(DROPPED, &(meta.dropped + over).to_be_bytes()[..]);
        }
        batch.insert(NEXT_SEQ, &seq.to_be_bytes()[..]);
        self.db.apply_batch(batch)?;
        meta.next_seq = seq;
        meta.len = meta.len + added - over;
        meta.dropped += over;
        Ok(())
    }

    /// Up to `limit` stored events with `seq >= from`, in order.
    pub fn events_from(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .range(event_key(from)..event_key(u64::MAX))
            .take(limit)
        {
            let (k, v) = item?;
            let mut seq = [0u8; 8];
            if k.len() != 10 {
                return Err(StoreError::Corrupt {
                    key: printable(&k),
                    reason: "bad outbox key".to_owned(),
                });
            }
            seq.copy_from_slice(&k[2..]);
            out.push((u64::from_be_bytes(seq), v.to_vec()));
        }
        Ok(out)
    }

    /// Removes an event the broker acknowledged. Not flushed: a crash merely resends it.
    pub fn remove_event(&self, seq: u64) -> Result<(), StoreError> {
        let mut meta = self.outbox_meta();
        if self.db.remove(event_key(seq))?.is_some() {
            meta.len = meta.len.saturating_sub(1);
        }
        Ok(())
    }

    /// The lowest stored event's seq, or the next one to be given if the outbox is empty.
    pub fn first_event_seq(&self) -> Result<u64, StoreError> {
        let next = self.outbox_meta().next_seq;
        match self.events_from(0, 1)?.first() {
            Some((seq, _)) => Ok(*seq),
            None => Ok(next),
        }
    }

    /// The outbox's figures.
    pub fn outbox_stats(&self) -> OutboxStats {
        let meta = self.outbox_meta();
        OutboxStats {
            events: meta.len,
            dropped: meta.dropped,
        }
    }
}

/// Opens sled, waiting a little if its lock is still held: sled releases it from a background
/// thread shortly after the previous owner (an earlier run in this process, or a process that
/// just exited) closed the store.
fn open_locked(config: &sled::Config, dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                return Err(StoreError::Locked(dir.to_owned()));
            }
            other => return Ok(other?),
        }
    }
}

fn door_key(door: &str) -> Vec<u8> {
    format!("d/{door}").into_bytes()
}

fn clear_key(door: &str) -> Vec<u8> {
    format!("c/{door}").into_bytes()
}

fn set_key(door: &str) -> Vec<u8> {
    format!("s/{door}").into_bytes()
}

fn applied_key(door: &str) -> Vec<u8> {
    format!("a/{door}").into_bytes()
}

fn part_key(door: &str, part: u16) -> Vec<u8> {
    let mut k = format!("p/{door}/").into_bytes();
    k.extend_from_slice(&part.to_be_bytes());
    k
}

fn event_key(seq: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(OUTBOX);
    k[2..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn read_u64(db: &sled::Db, key: &[u8]) -> Result<Option<u64>, StoreError> {
    match db.get(key)? {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                key: printable(key),
                reason: format!("{} bytes, expected 8", v.len()),
            })?;
            Ok(Some(u64::from_be_bytes(bytes)))
        }
    }
}

fn printable(key: &[u8]) -> String {
    key.iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

fn corrupt(key: impl AsRef<[u8]>, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: printable(key.as_ref()),
        reason: e.to_string(),
    }
}

fn encode_error(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Encode {
        key: printable(key),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(store: &Store) -> Vec<u64> {
        store
            .events_from(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.0)
            .collect()
    }

    fn render(seq: u64, body: &&str) -> Vec<u8> {
        format!("{seq}:{body}").into_bytes()
    }

    #[tokio::test]
    async fn outbox_keeps_seq_across_reopen_and_drops_oldest() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.append_events(&["a", "b", "c"], 4, render).unwrap();
            store.remove_event(1).unwrap();
            store.flush().await.unwrap();
            assert_eq!(
                store.outbox_stats(),
                OutboxStats {
                    events: 2,
                    dropped: 0
                }
            );
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.first_event_seq().unwrap(), 2);
        store.append_events(&["d", "e", "f"], 4, render).unwrap();
        // 2 stored + 3 new = 5 > 4: the oldest (seq 2) goes.
        assert_eq!(
            store.outbox_stats(),
            OutboxStats {
                events: 4,
                dropped: 1
            }
        );
        assert_eq!(seqs(&store), vec![3, 4, 5, 6]);
        assert_eq!(store.events_from(5, 10).unwrap()[0].1, b"5:e".to_vec());
        // A batch larger than the bound keeps only its newest.
        store
            .append_events(&["g", "h", "i", "j", "k"], 4, render)
            .unwrap();
        assert_eq!(seqs(&store), vec![8, 9, 10, 11]);
        assert_eq!(
            store.outbox_stats(),
            OutboxStats {
                events: 4,
                dropped: 6
            }
        );
    }

    #[tokio::test]
    async fn door_records_sets_and_parts_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cred = Credential {
            id: "a".into(),
            bits: 8,
            data: vec![1],
            not_before: 0,
            not_after: 7,
        };
        let part = Part {
            version: 3,
            part: 1,
            parts: 2,
            credentials: vec![cred.clone()],
        };
        let record = DoorRecord {
            error: Some(ErrorReport {
                version: None,
                reason: "x".into(),
            }),
            ..DoorRecord::default()
        };
        let mut change = Change::new();
        change.put_door("lobby", &record).unwrap();
        change.put_part("lobby", &part).unwrap();
        change
            .put_set("lobby", 3, std::slice::from_ref(&cred))
            .unwrap();
        store.apply(change).unwrap();
        let doors = store.doors().unwrap();
        assert_eq!(doors.len(), 1);
        assert_eq!(doors[0].0, "lobby");
        assert_eq!(doors[0].1.as_ref().unwrap(), &record);
        assert_eq!(store.set("lobby").unwrap(), vec![cred]);
        assert!(
            store.parts_except("lobby", 2, 9).is_err(),
            "part 0 is missing"
        );
        let mut change = Change::new();
        change
            .put_part(
                "lobby",
                &Part {
                    part: 0,
                    ..part.clone()
                },
            )
            .unwrap();
        store.apply(change).unwrap();
        assert_eq!(store.parts_except("lobby", 2, 0).unwrap(), vec![part]);
        let mut change = Change::new();
        change.remove_parts("lobby", 2);
        store.apply(change).unwrap();
        assert!(store.parts_except("lobby", 1, 9).is_err());
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[tokio::test]
    async fn a_removed_door_stays_to_be_cleared_until_the_broker_took_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut change = Change::new();
            change.put_door("junk", &DoorRecord::default()).unwrap();
            change.put_door("lobby", &DoorRecord::default()).unwrap();
            store.apply(change).unwrap();
            let mut change = Change::new();
            change.remove_door("junk", 0);
            store.apply(change).unwrap();
            store.flush().await.unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.doors().unwrap().len(), 1);
        assert_eq!(store.pending_clears().unwrap(), ["junk"]);
        store.cleared("junk").unwrap();
        assert!(store.pending_clears().unwrap().is_empty());
    }

    #[test]
    fn a_store_in_use_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path())
            .err()
            .expect("second open must fail");
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
    }

    #[test]
    fn corrupt_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.db.insert(b"d/lobby", &b"{not json"[..]).unwrap();
        store.db.insert(b"s/lobby", &b"\xff\xff\xff"[..]).unwrap();
        assert!(matches!(
            store.doors().unwrap()[0].1,
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.set("lobby"),
            Err(StoreError::Corrupt { .. })
        ));
    }
}

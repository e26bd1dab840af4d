//! The engine: the one owner of door state. It takes the desired parts the MQTT link receives
//! and the events components raise, writes them to the store, and only after the store is
//! flushed acknowledges the parts and hands the new state to the link.
//!
//! Work is done in groups (group commit): everything that arrived while the last flush ran is
//! applied, flushed once, then acknowledged in arrival order. One fsync then covers many
//! messages, which keeps durable adoption close to the broker's delivery rate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rumqttc::{AsyncClient, Publish, QoS};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::config::{Config, DoorConfig, DoorMode};
use crate::events::Event;
use crate::health::{DoorCounts, Health};
use crate::logging::ratelimit::{RateLimit, cut, shown};
use crate::notify::Beat;
use crate::reported::{Board, ReaderState, Reported, Status};
use crate::snapshot::{
    Limits, Part, SetDigest, SnapshotError, check_unique, parse_part, read_version,
};
use crate::store::{
    Assembly, Change, DesiredMeta, DoorRecord, ErrorReport, SetState, Store, StoreError,
};
use crate::sync::{DoorReport, SecurityProblem, Target};
use crate::topics::{Incoming, Topics};

/// Longest rejection reason logged, in characters: a reason can quote a whole received field.
const LOGGED_REASON: usize = 256;
/// How long a stopping engine waits for the other components to hand over their events.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);
/// Most messages applied under one flush.
const GROUP: usize = 512;
/// Payload bytes that may wait for, or be in, the engine at once; the link takes its share before
/// forwarding a message, and the share is returned once the message is acknowledged. This bounds
/// the hub's memory under a burst: the rest of the backlog stays in the broker.
pub const INBOUND_BYTES: usize = 8 << 20;

/// A message the link received, with what is needed to acknowledge it.
#[derive(Debug)]
pub struct Inbound {
    /// The message.
    pub publish: Publish,
    /// The client to acknowledge through; `None` when nothing is to be acknowledged.
    pub client: Option<AsyncClient>,
    /// The message's share of [`INBOUND_BYTES`], released when it is dropped.
    pub budget: Option<OwnedSemaphorePermit>,
}

/// The engine's errors: the store failed, and the daemon cannot go on safely.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the engine shares with the other components.
#[derive(Clone)]
pub struct Shared {
    /// The store.
    pub store: Store,
    /// Health figures.
    pub health: Arc<Health>,
    /// The latest reported state of each door.
    pub board: Arc<Board>,
    /// Signalled when new events are in the outbox.
    pub events_ready: Arc<Notify>,
    /// [`INBOUND_BYTES`] as permits.
    pub inbound_bytes: Arc<Semaphore>,
}

/// The engine's inputs.
pub struct Inputs {
    /// Messages from the link.
    pub inbound: mpsc::Receiver<Inbound>,
    /// Events from components.
    pub events: mpsc::Receiver<Event>,
    /// What the bus tasks learn about doors.
    pub reports: mpsc::Receiver<DoorReport>,
    /// The engine's part in the watchdog's liveness check.
    pub beat: Beat,
    /// Reloaded door configs.
    pub reconfigure: mpsc::Receiver<Reconfigure>,
    /// Test hook: makes the engine loop stall for a while, as a stuck loop would.
    pub stall: mpsc::Receiver<std::time::Duration>,
    /// Says stop.
    pub shutdown: broadcast::Receiver<()>,
}

/// A reloaded config's doors, for the engine to adopt.
#[derive(Debug)]
pub struct Reconfigure {
    /// Every configured door.
    pub doors: Vec<DoorConfig>,
    /// Doors whose bus task restarts: their readers are offline until found again.
    pub reset: BTreeSet<String>,
    /// Where the engine answers with the configured doors' links.
    pub reply: oneshot::Sender<HashMap<String, DoorLink>>,
}

/// What a door's bus task starts from.
#[derive(Debug)]
pub struct DoorLink {
    /// The target of a `stored` door.
    pub target: Option<watch::Receiver<Option<Target>>>,
    /// What its reader was last confirmed holding (for a `hub` door, the hub's own state).
    pub applied: Option<SetState>,
}

/// What the engine knows of a door's reader; not stored: it is learnt again after a restart.
#[derive(Debug, Clone)]
struct ReaderRuntime {
    online: bool,
    since: SystemTime,
    syncing: bool,
    failure: Option<ErrorReport>,
    /// Why the reader's Secure Channel does not come up.
    security: Option<SecurityProblem>,
}

/// The engine's repeated warnings, each rate-limited: junk on the hub's topics must not fill the
/// log.
#[derive(Debug, Default)]
struct Warnings {
    invalid_door: RateLimit,
    foreign: RateLimit,
    rejected: RateLimit,
    unknown_rejected: RateLimit,
    unknown_refused: RateLimit,
}

/// The engine task.
pub struct Engine {
    topics: Topics,
    limits: Limits,
    /// `limits.unconfigured_doors`.
    unconfigured_doors: usize,
    warnings: Warnings,
    max_queued: u64,
    modes: HashMap<String, DoorMode>,
    shared: Shared,
    inputs: Inputs,
    doors: BTreeMap<String, DoorRecord>,
    /// Each door's last status, to log changes for the technician.
    statuses: HashMap<String, Status>,
    /// What the readers said, since the daemon started.
    readers: HashMap<String, ReaderRuntime>,
    /// The target of each `stored` door, watched by its bus task.
    targets: HashMap<String, watch::Sender<Option<Target>>>,
    /// Doors whose target changes once the current group is flushed.
    retarget: BTreeSet<String>,
    /// Set when a damaged record was dropped: the link then subscribes afresh, so that the broker
    /// sends the retained snapshots again.
    resubscribe: bool,
    /// Doors whose stored desired set does not read back whole, and why: reported `error`, never
    /// applied, until their snapshot is adopted again.
    damaged: BTreeMap<String, ErrorReport>,
}

impl Engine {
    /// Loads every door from the store and brings `hub` doors' applied state up to date.
    pub fn new(config: &Config, shared: Shared, inputs: Inputs) -> Result<Engine, EngineError> {
        let mut engine = Engine {
            topics: Topics::new(&config.mqtt.topic_prefix, &config.hub.id),
            limits: Limits {
                max_payload: config.mqtt.max_payload,
                credentials_per_door: config.limits.credentials_per_door,
            },
            unconfigured_doors: config.limits.unconfigured_doors,
            warnings: Warnings::default(),
            max_queued: config.events.max_queued,
            modes: HashMap::new(),
            readers: HashMap::new(),
            targets: HashMap::new(),
            retarget: BTreeSet::new(),
            shared,
            inputs,
            doors: BTreeMap::new(),
            statuses: HashMap::new(),
            resubscribe: false,
            damaged: BTreeMap::new(),
        };
        for (door, record) in engine.shared.store.doors()? {
            match record {
                Ok(record) => {
                    engine.doors.insert(door, record);
                }
                Err(e) => {
                    error!(%door, "dropping a damaged door record; the broker will resend its snapshot: {e}");
                    engine.resubscribe = true;
                }
            }
        }
        // Clearings of retained `reported` that the broker had not taken when the daemon last
        // stopped; a door that has a record again is reported instead.
        for door in engine.shared.store.pending_clears()? {
            if engine.doors.contains_key(&door) {
                engine.shared.store.cleared(&door)?;
            } else {
                engine.shared.board.remove(&door);
            }
        }
        engine.check_sets(&config.door)?;
        let started = engine.shared.health.started_at();
        // Every door's state is on the board, and health's counts are right, before the link's
        // first connection publishes them.
        engine.configure(&config.door, &BTreeSet::new(), started)?;
        Ok(engine)
    }

    /// Makes `doors` the configured doors: doors no longer configured are reported
    /// `unconfigured` (their snapshots are kept), new ones start offline, and the readers of the
    /// doors in `reset` (whose bus task restarts) are offline until their new task finds them.
    fn configure(
        &mut self,
        doors: &[DoorConfig],
        reset: &BTreeSet<String>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.modes = doors.iter().map(|d| (d.id.clone(), d.mode)).collect();
        self.readers.retain(|door, _| self.modes.contains_key(door));
        self.targets
            .retain(|door, _| self.modes.get(door) == Some(&DoorMode::Stored));
        for door in doors {
            let record = self.doors.entry(door.id.clone()).or_default();
            if reset.contains(&door.id) || !self.readers.contains_key(&door.id) {
                self.readers.insert(
                    door.id.clone(),
                    ReaderRuntime {
                        online: false,
                        since: now,
                        syncing: false,
                        failure: None,
                        security: None,
                    },
                );
            }
            if door.mode == DoorMode::Stored && !self.targets.contains_key(&door.id) {
                let (tx, _) = watch::channel(target(record));
                self.targets.insert(door.id.clone(), tx);
            }
        }
        // A hub door's applied state is the hub's own store: a door that was unconfigured, or
        // configured as stored, when its snapshot arrived is applied now.
        let mut change = Change::new();
        for (door, record) in self.doors.iter_mut() {
            let Some(d) = &record.desired else { continue };
            if self.modes.get(door) == Some(&DoorMode::Hub)
                && !self.damaged.contains_key(door)
                && record.applied.map(|a| a.version) < Some(d.set.version)
            {
                record.applied = Some(d.set);
                change.put_door(door, record)?;
            }
        }
        self.shared.store.apply(change)?;
        // A record of a door that is not configured stays only while it holds a valid snapshot,
        // adopted or being assembled: junk stored by an earlier version of the hub, or a door
        // removed from the config before it had any, goes now.
        let empty: Vec<String> = self
            .doors
            .iter()
            .filter(|(door, r)| {
                !self.modes.contains_key(*door) && r.desired.is_none() && r.assembly.is_none()
            })
            .map(|(door, _)| door.clone())
            .collect();
        if !empty.is_empty() {
            info!(
                doors = empty.len(),
                "removed the records of doors that are not configured and have no snapshot"
            );
        }
        for door in &empty {
            self.forget(door)?;
        }
        let all: Vec<String> = self.doors.keys().cloned().collect();
        self.report(all.iter());
        Ok(())
    }

    /// Removes a door's record and everything stored under it, and clears its retained
    /// `reported`. Only for a door that is not configured.
    fn forget(&mut self, door: &str) -> Result<(), StoreError> {
        let Some(record) = self.doors.remove(door) else {
            return Ok(());
        };
        let mut change = Change::new();
        change.remove_door(door, record.assembly.map_or(0, |a| a.parts));
        self.shared.store.apply(change)?;
        self.statuses.remove(door);
        self.damaged.remove(door);
        self.shared.board.remove(door);
        debug!(%door, "removed the record of a door that is not configured");
        Ok(())
    }

    /// Records kept for doors that are not configured.
    fn unconfigured(&self) -> usize {
        self.doors
            .keys()
            .filter(|door| !self.modes.contains_key(*door))
            .count()
    }

    /// Finds the doors whose stored desired set does not read back whole (a damaged store, or a
    /// set an older encoding cut): each is reported `error`, a `hub` door's set counts as not
    /// applied, and the link subscribes afresh so that the broker resends the snapshot.
    fn check_sets(&mut self, doors: &[DoorConfig]) -> Result<(), StoreError> {
        for (door, record) in &mut self.doors {
            let Some(d) = &record.desired else { continue };
            match self.shared.store.check_set(door, &d.set) {
                Ok(()) => {}
                Err(e @ StoreError::Corrupt { .. }) => {
                    error!(%door, version = d.set.version, "the stored desired set is damaged; the broker will resend its snapshot: {e}");
                    let report = ErrorReport {
                        version: Some(d.set.version),
                        reason: "the hub's stored credential set is damaged; waiting for the \
                                 snapshot to be delivered again"
                            .to_owned(),
                    };
                    self.damaged.insert(door.clone(), report);
                    if doors
                        .iter()
                        .any(|c| c.id == *door && c.mode == DoorMode::Hub)
                    {
                        record.applied = None;
                    }
                    self.resubscribe = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the link must subscribe afresh on its first connection.
    pub fn needs_resubscribe(&self) -> bool {
        self.resubscribe
    }

    /// What the bus tasks of the configured doors start from.
    pub fn links(&self) -> HashMap<String, DoorLink> {
        self.modes
            .keys()
            .map(|door| {
                let link = DoorLink {
                    target: self.targets.get(door).map(watch::Sender::subscribe),
                    applied: self.doors.get(door).and_then(|r| r.applied),
                };
                (door.clone(), link)
            })
            .collect()
    }

    /// Runs until shutdown, or until the link has gone.
    pub async fn run(mut self) -> Result<(), EngineError> {
        self.shared.store.flush().await?;
        let mut events_open = true;
        let mut reports_open = true;
        loop {
            let mut inbound = Vec::new();
            let mut events = Vec::new();
            let mut reports = Vec::new();
            tokio::select! {
                biased;
                _ = self.inputs.shutdown.recv() => break,
                _ = self.inputs.beat.raised() => {
                    self.inputs.beat.ack();
                    continue;
                }
                Some(r) = self.inputs.reconfigure.recv() => {
                    self.reconfigure(r).await?;
                    continue;
                }
                Some(d) = self.inputs.stall.recv() => {
                    warn!("stalling the engine for {d:?} (test hook)");
                    tokio::time::sleep(d).await;
                    continue;
                }
                r = self.inputs.reports.recv(), if reports_open => match r {
                    Some(r) => reports.push(r),
                    None => reports_open = false,
                },
                m = self.inputs.inbound.recv() => match m {
                    Some(m) => inbound.push(m),
                    None => break,
                },
                e = self.inputs.events.recv(), if events_open => match e {
                    Some(e) => events.push(e),
                    None => events_open = false,
                },
            }
            drain(&mut self.inputs.inbound, &mut inbound);
            drain(&mut self.inputs.events, &mut events);
            drain(&mut self.inputs.reports, &mut reports);
            self.commit(inbound, events, reports).await?;
        }
        // Events and reports already raised are stored before the process goes: the contract
        // loses none. The bus tasks are stopping too; wait for them to hand over what they have.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
        let (mut events, mut reports) = (Vec::new(), Vec::new());
        while events_open || reports_open {
            tokio::select! {
                e = self.inputs.events.recv(), if events_open => match e {
                    Some(e) => events.push(e),
                    None => events_open = false,
                },
                r = self.inputs.reports.recv(), if reports_open => match r {
                    Some(r) => reports.push(r),
                    None => reports_open = false,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.commit(Vec::new(), events, reports).await?;
        debug!("engine stopped");
        Ok(())
    }

    /// Applies a reloaded config's doors, after what the stopped bus tasks last reported.
    async fn reconfigure(&mut self, r: Reconfigure) -> Result<(), EngineError> {
        let mut reports = Vec::new();
        drain(&mut self.inputs.reports, &mut reports);
        self.commit(Vec::new(), Vec::new(), reports).await?;
        self.configure(&r.doors, &r.reset, SystemTime::now())?;
        self.shared.store.flush().await?;
        info!(doors = r.doors.len(), "doors reconfigured");
        // The reloader has gone only if the daemon is stopping.
        let _ = r.reply.send(self.links());
        Ok(())
    }

    async fn commit(
        &mut self,
        inbound: Vec<Inbound>,
        events: Vec<Event>,
        reports: Vec<DoorReport>,
    ) -> Result<(), EngineError> {
        let mut touched = BTreeSet::new();
        for r in reports {
            if let Some(door) = self.on_report(r)? {
                touched.insert(door);
            }
        }
        for m in &inbound {
            if let Some(door) = self.handle(&m.publish)? {
                touched.insert(door);
            }
        }
        self.shared
            .store
            .append_events(&events, self.max_queued, |seq, e| e.to_json(seq))?;
        self.shared.store.flush().await?;
        for m in inbound {
            if let (Some(client), true) = (&m.client, m.publish.qos != QoS::AtMostOnce) {
                // Fails only when the MQTT event loop is gone, i.e. during shutdown; the broker
                // then redelivers, and the store makes the redelivery harmless.
                if let Err(e) = client.ack(&m.publish).await {
                    debug!("could not acknowledge: {e}");
                }
            }
        }
        if !events.is_empty() {
            self.shared.events_ready.notify_one();
        }
        for door in std::mem::take(&mut self.retarget) {
            if let (Some(tx), Some(record)) = (self.targets.get(&door), self.doors.get(&door)) {
                tx.send_replace(target(record));
            }
        }
        self.report(touched.iter());
        Ok(())
    }

    /// Applies what a bus task learnt; returns the door whose state may have changed.
    fn on_report(&mut self, report: DoorReport) -> Result<Option<String>, StoreError> {
        let door = match &report {
            DoorReport::Reader { door, .. }
            | DoorReport::Syncing { door, .. }
            | DoorReport::Applied { door, .. }
            | DoorReport::Lost { door }
            | DoorReport::Security { door, .. }
            | DoorReport::Failed { door, .. } => door.clone(),
        };
        let (Some(reader), Some(record)) = (self.readers.get_mut(&door), self.doors.get_mut(&door))
        else {
            debug!(%door, "report for a door that is not configured");
            return Ok(None);
        };
        match report {
            DoorReport::Reader { online, at, .. } => {
                if reader.online != online {
                    reader.online = online;
                    reader.since = at;
                }
            }
            DoorReport::Syncing { .. } => reader.syncing = true,
            DoorReport::Security { problem, .. } => reader.security = problem,
            DoorReport::Failed {
                version, reason, ..
            } => {
                reader.syncing = false;
                reader.failure = Some(ErrorReport {
                    version: Some(version),
                    reason,
                });
            }
            DoorReport::Applied { state, set, .. } => {
                reader.syncing = false;
                reader.failure = None;
                record.applied = Some(state);
                let mut change = Change::new();
                change.put_door(&door, record)?;
                change.put_applied_set(&door, set);
                self.shared.store.apply(change)?;
            }
            DoorReport::Lost { .. } => {
                // A wiped or replaced reader: the only time `applied` goes backwards.
                record.applied = None;
                let mut change = Change::new();
                change.put_door(&door, record)?;
                change.remove_applied_set(&door);
                self.shared.store.apply(change)?;
            }
        }
        Ok(Some(door))
    }

    /// Applies one message; returns the door whose state may have changed.
    fn handle(&mut self, publish: &Publish) -> Result<Option<String>, StoreError> {
        let (door, level) = match self.topics.classify(&publish.topic) {
            Incoming::Desired { door, part } => (door.to_owned(), part),
            Incoming::InvalidDoor(door) => {
                self.shared.health.count_invalid();
                if let Some(more) = self.warnings.invalid_door.check(Instant::now()) {
                    warn!(
                        door = %shown(door),
                        "ignored a desired snapshot for a door id that breaks the naming rules{more}"
                    );
                }
                return Ok(None);
            }
            Incoming::Foreign => {
                self.shared.health.count_invalid();
                if let Some(more) = self.warnings.foreign.check(Instant::now()) {
                    warn!(topic = %shown(&publish.topic), "ignored a message on a topic that is not ours{more}");
                }
                return Ok(None);
            }
        };
        let configured = self.modes.contains_key(&door);
        let known = self.doors.contains_key(&door);
        if publish.payload.is_empty() {
            // A zero-length retained message is the cloud clearing a part: nothing to do, except
            // that clearing part 0 of a door that is not configured drops what the hub keeps.
            if !configured && known && level == Ok(0) {
                info!(%door, "the cloud cleared the snapshot of a door that is not configured; its record is removed");
                self.forget(&door)?;
            }
            return Ok(None);
        }
        if !configured && !known && self.unconfigured() >= self.unconfigured_doors {
            // No eviction: the doors kept are the ones whose snapshots came first.
            self.shared.health.count_invalid();
            if let Some(more) = self.warnings.unknown_refused.check(Instant::now()) {
                warn!(
                    %door,
                    max = self.unconfigured_doors,
                    "refused a snapshot for a door that is not configured: limits.unconfigured_doors reached{more}"
                );
            }
            return Ok(None);
        }
        let mut record = self.doors.get(&door).cloned().unwrap_or_default();
        let mut change = Change::new();
        self.desired_part(&door, level, &publish.payload, &mut record, &mut change)?;
        if !known && record.desired.is_none() && record.assembly.is_none() {
            // Only a valid snapshot creates a record for a door that is not configured (a
            // configured door's record exists from the start).
            return Ok(None);
        }
        change.put_door(&door, &record)?;
        self.shared.store.apply(change)?;
        self.doors.insert(door.clone(), record);
        Ok(Some(door))
    }

    fn desired_part(
        &mut self,
        door: &str,
        level: Result<u64, SnapshotError>,
        payload: &[u8],
        record: &mut DoorRecord,
        change: &mut Change,
    ) -> Result<(), StoreError> {
        let topic_part = match level {
            Ok(p) => p,
            Err(e) => {
                let version = (payload.len() <= self.limits.max_payload)
                    .then(|| read_version(payload))
                    .flatten();
                self.reject(door, record, version, e);
                return Ok(());
            }
        };
        let part = match parse_part(payload, topic_part, self.limits) {
            Ok(p) => p,
            Err(r) => {
                // An old version is stale whatever its content: it must not mark a door whose
                // newer state is fine as in error.
                if let Some(v) = r.version.filter(|&v| superseded(record, v)) {
                    self.stale(door, v, "older than the stored or assembling version");
                } else {
                    self.reject(door, record, r.version, r.error);
                }
                return Ok(());
            }
        };
        let version = part.version;
        if record.rejected == Some(version) {
            self.stale(door, version, "this version was rejected as a whole");
            return Ok(());
        }
        let hash = hex::encode(&part.content_hash()[..16]);
        if let Some(d) = &record.desired {
            if version < d.set.version {
                self.stale(door, version, "older than the stored desired version");
                return Ok(());
            }
            // A damaged set's version is adopted again when the broker resends it.
            if version == d.set.version && !self.damaged.contains_key(door) {
                let same = d.part_hashes.len() == usize::from(part.parts)
                    && d.part_hashes[usize::from(part.part)] == hash;
                self.repeated(door, record, version, same);
                return Ok(());
            }
        }
        if let Some(a) = &record.assembly {
            if a.version > version {
                self.stale(door, version, "a newer version is being assembled");
                return Ok(());
            }
            if a.version == version {
                if a.parts != part.parts {
                    self.repeated(door, record, version, false);
                    return Ok(());
                }
                if let Some(h) = &a.received[usize::from(part.part)] {
                    let same = *h == hash;
                    self.repeated(door, record, version, same);
                    return Ok(());
                }
            } else {
                // A newer version supersedes the one being assembled.
                change.remove_parts(door, a.parts);
                record.assembly = None;
            }
        }
        let assembly = record.assembly.get_or_insert_with(|| Assembly {
            version,
            parts: part.parts,
            received: vec![None; usize::from(part.parts)],
            count: 0,
        });
        assembly.count += part.credentials.len();
        if assembly.count > self.limits.credentials_per_door {
            let error = SnapshotError::TooMany {
                count: assembly.count,
                max: self.limits.credentials_per_door,
            };
            change.remove_parts(door, assembly.parts);
            record.assembly = None;
            record.rejected = Some(version);
            self.reject(door, record, Some(version), error);
            return Ok(());
        }
        assembly.received[usize::from(part.part)] = Some(hash);
        if !assembly.complete() {
            debug!(%door, version, part = part.part, parts = part.parts, "staged part");
            change.put_part(door, &part)?;
            return Ok(());
        }
        let assembly = assembly.clone();
        self.adopt(door, part, assembly, record, change)
    }

    /// Every part of a version is here: check the whole and adopt it, in the same change that
    /// removes the staged parts, so a crash leaves either the assembly or the adoption.
    fn adopt(
        &mut self,
        door: &str,
        last: Part,
        assembly: Assembly,
        record: &mut DoorRecord,
        change: &mut Change,
    ) -> Result<(), StoreError> {
        let version = assembly.version;
        let mut set = Vec::with_capacity(assembly.count);
        let staged = self
            .shared
            .store
            .parts_except(door, assembly.parts, last.part)?;
        for part in staged {
            if part.version != version {
                return Err(StoreError::Corrupt {
                    key: format!("p/{door}/{}", part.part),
                    reason: format!("staged version {} is not {version}", part.version),
                });
            }
            set.extend(part.credentials);
        }
        set.extend(last.credentials);
        change.remove_parts(door, assembly.parts);
        record.assembly = None;
        if let Err(e) = check_unique(set.iter()) {
            record.rejected = Some(version);
            self.reject(door, record, Some(version), e);
            return Ok(());
        }
        let state = SetState {
            version,
            count: set.len(),
            digest: SetDigest::of(&set),
        };
        change.put_set(door, version, &set)?;
        self.damaged.remove(door);
        record.desired = Some(DesiredMeta {
            set: state,
            part_hashes: assembly.received.into_iter().flatten().collect(),
        });
        record.error = None;
        record.rejected = None;
        if self.modes.get(door) == Some(&DoorMode::Hub) {
            record.applied = Some(state);
        }
        if self.targets.contains_key(door) {
            // Told to the bus task once the set is flushed: a reader must never hold a version
            // the hub could still lose.
            self.retarget.insert(door.to_owned());
        }
        if self.modes.contains_key(door) {
            info!(%door, version, credentials = state.count, digest = %state.digest, "adopted desired snapshot");
        } else {
            debug!(%door, version, credentials = state.count, "kept the snapshot of a door that is not configured");
        }
        Ok(())
    }

    /// Keeps the door's previous state and records why, for `reported.error` and health.
    fn reject(
        &mut self,
        door: &str,
        record: &mut DoorRecord,
        version: Option<u64>,
        error: SnapshotError,
    ) {
        self.shared.health.count_invalid();
        let reason = error.to_string();
        let limit = if self.modes.contains_key(door) {
            &mut self.warnings.rejected
        } else {
            &mut self.warnings.unknown_rejected
        };
        if let Some(more) = limit.check(Instant::now()) {
            let version = version.map_or("none".to_owned(), |v| v.to_string());
            let shown = cut(&reason, LOGGED_REASON);
            info!(%door, %version, "rejected desired snapshot: {shown}{more}");
        }
        record.error = Some(ErrorReport { version, reason });
    }

    /// A part of a version the door already holds, adopted or staged: a redelivery of the same
    /// content is stale; anything else is the same version with different content.
    fn repeated(&mut self, door: &str, record: &mut DoorRecord, version: u64, same: bool) {
        if same {
            self.stale(door, version, "part already stored");
        } else {
            let error = SnapshotError::ContentChanged(version);
            self.reject(door, record, Some(version), error);
        }
    }

    fn stale(&self, door: &str, version: u64, why: &str) {
        self.shared.health.count_stale();
        debug!(%door, version, "ignored desired part: {why}");
    }

    fn status(&self, door: &str, record: &DoorRecord) -> Status {
        let desired = record.desired.as_ref().map_or(0, |d| d.set.version);
        let applied = record.applied.map_or(0, |a| a.version);
        match self.readers.get(door) {
            None => Status::Unconfigured,
            Some(r) if r.security.as_ref().is_some_and(|p| p.error) => Status::Error,
            Some(r) if !r.online => Status::Offline,
            Some(_) if self.damaged.contains_key(door) => Status::Error,
            Some(_) if applied == desired => Status::InSync,
            Some(r) if r.failure.is_some() && !r.syncing => Status::Error,
            Some(_) => Status::Pending,
        }
    }

    fn reported(&self, door: &str, record: &DoorRecord) -> Reported {
        let desired = record.desired.as_ref().map_or(0, |d| d.set.version);
        let applied = record.applied.map_or(0, |a| a.version);
        let reader = self.readers.get(door);
        let status = self.status(door, record);
        Reported {
            door: door.to_owned(),
            desired,
            applied,
            status,
            credentials: record.applied.map_or(0, |a| a.count),
            digest: record
                .applied
                .map_or(SetDigest::default(), |a| a.digest)
                .to_string(),
            reader: ReaderState {
                online: reader.is_some_and(|r| r.online),
                since: crate::time::rfc3339(
                    reader.map_or(self.shared.health.started_at(), |r| r.since),
                ),
            },
            error: reader
                .and_then(|r| {
                    r.security.as_ref().map(|p| ErrorReport {
                        version: None,
                        reason: p.reason.clone(),
                    })
                })
                .or_else(|| self.damaged.get(door).cloned())
                .or_else(|| reader.and_then(|r| r.failure.clone()))
                .or_else(|| record.error.clone()),
        }
    }

    fn report<'a>(&mut self, doors: impl Iterator<Item = &'a String>) {
        for door in doors {
            // A door that is not configured is reported once it has a snapshot, not while one
            // is being assembled.
            if let Some(record) = self
                .doors
                .get(door)
                .filter(|r| self.modes.contains_key(door) || r.desired.is_some())
            {
                let reported = self.reported(door, record);
                if self.statuses.insert(door.clone(), reported.status) != Some(reported.status) {
                    info!(
                        %door,
                        status = %reported.status,
                        desired = reported.desired,
                        applied = reported.applied,
                        "door status"
                    );
                }
                self.shared.board.update(reported);
            }
        }
        let mut counts = DoorCounts::default();
        for (door, record) in &self.doors {
            if !self.modes.contains_key(door) {
                counts.unconfigured += usize::from(record.desired.is_some());
                continue;
            }
            counts.total += 1;
            // Counted on every commit: the status alone, not the whole reported state.
            match self.status(door, record) {
                Status::InSync => counts.in_sync += 1,
                Status::Pending => counts.pending += 1,
                Status::Offline => counts.offline += 1,
                Status::Error => counts.error += 1,
                Status::Unconfigured => {}
            }
        }
        self.shared.health.set_doors(counts);
    }
}

/// Takes what is already queued, up to a group.
fn drain<T>(rx: &mut mpsc::Receiver<T>, into: &mut Vec<T>) {
    while into.len() < GROUP {
        match rx.try_recv() {
            Ok(m) => into.push(m),
            Err(_) => break,
        }
    }
}

/// The target a `stored` door's record implies.
fn target(record: &DoorRecord) -> Option<Target> {
    record.desired.as_ref().map(|d| Target {
        version: d.set.version,
        count: d.set.count,
        digest: d.set.digest,
    })
}

/// Whether version `v` is older than what the door has adopted or is assembling.
fn superseded(record: &DoorRecord, v: u64) -> bool {
    record.desired.as_ref().is_some_and(|d| v < d.set.version)
        || record.assembly.as_ref().is_some_and(|a| v < a.version)
}

//! The bus supervisor: runs one [`Bus`] task per configured bus, and applies a reloaded config's
//! buses and doors. A bus whose settings or doors changed (or whose doors' keys changed) is
//! stopped and started again; the other buses keep running untouched, and the engine is told the
//! new doors in between, so it never takes a report from a door it no longer knows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::bus::Bus;
use crate::bus::reader::ReaderCtl;
use crate::bus::secure::ReaderSecurity;
use crate::config::{BusConfig, Config, DoorConfig, ScbkError};
use crate::engine::{DoorLink, Reconfigure};
use crate::events::EventSender;
use crate::health::Health;
use crate::notify::{Beat, Liveness};
use crate::osdp::secure::KeyBytes;
use crate::store::Store;
use crate::sync::DoorReport;

/// How long a stopping bus task may take before it is aborted (it stops between two exchanges,
/// which take well under a second even at 9,600 baud).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Why a reload's buses and doors were not applied.
#[derive(Debug, thiserror::Error)]
pub enum BusesError {
    /// A door's Secure Channel key can't be used; nothing was changed.
    #[error("door {door}: scbk_file: {source}")]
    Key {
        /// The door.
        door: String,
        /// Why.
        source: ScbkError,
    },
    /// The engine has stopped (the daemon is stopping).
    #[error("the engine has stopped")]
    EngineGone,
}

/// What a reload changed, bus by bus and door by door.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// Buses started.
    pub buses_added: Vec<String>,
    /// Buses stopped.
    pub buses_removed: Vec<String>,
    /// Buses restarted because their settings or doors changed.
    pub buses_restarted: Vec<String>,
    /// Doors now configured that were not.
    pub doors_added: Vec<String>,
    /// Doors no longer configured (reported `unconfigured`; their snapshots are kept).
    pub doors_removed: Vec<String>,
    /// Doors whose settings changed.
    pub doors_changed: Vec<String>,
}

/// A request to apply a config's buses and doors.
pub struct Reload {
    /// The new config (only its buses and doors are used).
    pub config: Config,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<Applied, BusesError>>,
}

/// What the supervisor needs to start bus tasks.
pub struct Channels {
    /// Health, where each bus registers its counters.
    pub health: Arc<Health>,
    /// The store (sets are read from it during syncs).
    pub store: Store,
    /// Door reports to the engine.
    pub reports: mpsc::Sender<DoorReport>,
    /// Events to the engine.
    pub events: EventSender,
    /// Reloaded doors to the engine.
    pub engine: mpsc::Sender<Reconfigure>,
    /// Where each bus loop gets its beat.
    pub liveness: Liveness,
    /// Reload requests.
    pub reloads: mpsc::Receiver<Reload>,
    /// Says stop.
    pub shutdown: broadcast::Receiver<()>,
}

/// One running bus task and what it was started with.
struct Running {
    config: BusConfig,
    /// Its doors, by id.
    doors: BTreeMap<String, DoorConfig>,
    /// Each door's key as read when the task started.
    keys: BTreeMap<String, Option<[u8; 16]>>,
    stop: broadcast::Sender<()>,
    task: JoinHandle<()>,
}

/// The bus supervisor task.
pub struct Buses {
    running: BTreeMap<String, Running>,
    channels: Channels,
    beat: Beat,
}

impl Buses {
    /// Starts every bus of `config`, from the engine's `links`. Fails, starting nothing, if a
    /// door's key can't be read: a door with a key must not run in the clear.
    pub fn start(
        config: &Config,
        mut links: HashMap<String, DoorLink>,
        channels: Channels,
    ) -> Result<Buses, BusesError> {
        let keys = read_keys(&config.door)?;
        let beat = channels.liveness.beat();
        let mut buses = Buses {
            running: BTreeMap::new(),
            channels,
            beat,
        };
        for bus in &config.bus {
            buses.spawn(bus, &config.door, &keys, &mut links);
        }
        Ok(buses)
    }

    /// Serves reload requests until shutdown, then stops every bus and waits for it.
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                _ = self.channels.shutdown.recv() => break,
                _ = self.beat.raised() => self.beat.ack(),
                r = self.channels.reloads.recv() => match r {
                    Some(Reload { config, reply }) => {
                        let outcome = self.apply(&config).await;
                        let _ = reply.send(outcome);
                    }
                    None => break,
                },
            }
        }
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            self.stop(&name).await;
        }
        debug!("buses stopped");
    }

    /// Applies `config`'s buses and doors.
    async fn apply(&mut self, config: &Config) -> Result<Applied, BusesError> {
        let keys = read_keys(&config.door)?;
        let mut applied = Applied::default();
        let old_doors: BTreeMap<&str, &DoorConfig> = self
            .running
            .values()
            .flat_map(|r| r.doors.values())
            .map(|d| (d.id.as_str(), d))
            .collect();
        let new_doors: BTreeMap<&str, &DoorConfig> =
            config.door.iter().map(|d| (d.id.as_str(), d)).collect();
        for (id, d) in &new_doors {
            match old_doors.get(id) {
                None => applied.doors_added.push(id.to_string()),
                Some(old) if *old != *d => applied.doors_changed.push(id.to_string()),
                Some(_) => {}
            }
        }
        applied.doors_removed = old_doors
            .keys()
            .filter(|id| !new_doors.contains_key(*id))
            .map(|id| id.to_string())
            .collect();

        // Which buses stop (removed or changed) and which start (added or changed).
        let wanted: BTreeMap<&str, &BusConfig> =
            config.bus.iter().map(|b| (b.name.as_str(), b)).collect();
        let mut to_stop = Vec::new();
        for (name, running) in &self.running {
            match wanted.get(name.as_str()) {
                None => {
                    applied.buses_removed.push(name.clone());
                    to_stop.push(name.clone());
                }
                Some(bus) if !running.same(bus, &config.door, &keys) => {
                    applied.buses_restarted.push(name.clone());
                    to_stop.push(name.clone());
                }
                Some(_) => {}
            }
        }
        let mut reset = BTreeSet::new();
        for name in &to_stop {
            if let Some(r) = self.running.get(name) {
                reset.extend(r.doors.keys().cloned());
            }
        }
        for bus in &config.bus {
            if !self.running.contains_key(&bus.name) {
                applied.buses_added.push(bus.name.clone());
            }
        }
        for name in &to_stop {
            self.stop(name).await;
        }
        for name in applied.buses_added.iter().chain(&applied.buses_restarted) {
            reset.extend(
                config
                    .door
                    .iter()
                    .filter(|d| &d.bus == name)
                    .map(|d| d.id.clone()),
            );
        }

        let (reply, answer) = oneshot::channel();
        let request = Reconfigure {
            doors: config.door.clone(),
            reset,
            reply,
        };
        self.channels
            .engine
            .send(request)
            .await
            .map_err(|_| BusesError::EngineGone)?;
        let mut links = answer.await.map_err(|_| BusesError::EngineGone)?;
        for bus in &config.bus {
            if !self.running.contains_key(&bus.name) {
                self.spawn(bus, &config.door, &keys, &mut links);
            }
        }
        Ok(applied)
    }

    /// Starts the task of `bus` serving its doors out of `doors`.
    fn spawn(
        &mut self,
        bus: &BusConfig,
        doors: &[DoorConfig],
        keys: &BTreeMap<String, Option<[u8; 16]>>,
        links: &mut HashMap<String, DoorLink>,
    ) {
        let mine: BTreeMap<String, DoorConfig> = doors
            .iter()
            .filter(|d| d.bus == bus.name)
            .map(|d| (d.id.clone(), d.clone()))
            .collect();
        let mut readers = Vec::new();
        let mut my_keys = BTreeMap::new();
        for d in mine.values() {
            let link = links.remove(&d.id).unwrap_or(DoorLink {
                target: None,
                applied: None,
            });
            let reader = ReaderCtl::new(
                d.clone(),
                bus.vendor_code_bytes(),
                bus.max_file_bytes,
                bus.offline_after,
                Duration::from_secs(bus.verify_interval_s),
                link.target,
                link.applied,
                self.channels.store.clone(),
            )
            .with_baud(bus.baud);
            let key = keys.get(&d.id).copied().flatten();
            readers.push(match (key, &d.scbk_file) {
                (Some(key), Some(path)) => {
                    reader.with_security(ReaderSecurity::new(KeyBytes(key), path.clone()))
                }
                // `install_key` and no key file yet (`read_keys` refuses anything else).
                (None, Some(path)) => reader.with_security(ReaderSecurity::pairing(path.clone())),
                (_, None) => reader,
            });
            my_keys.insert(d.id.clone(), key);
        }
        let (stop, stopped) = broadcast::channel(1);
        let task = Bus::new(
            bus.clone(),
            readers,
            self.channels.health.clone(),
            self.channels.reports.clone(),
            self.channels.events.clone(),
            self.channels.liveness.beat(),
            stopped,
        );
        let task = tokio::spawn(task.run().instrument(info_span!("bus", bus = %bus.name)));
        info!(bus = %bus.name, doors = mine.len(), "bus task started");
        self.running.insert(
            bus.name.clone(),
            Running {
                config: bus.clone(),
                doors: mine,
                keys: my_keys,
                stop,
                task,
            },
        );
    }

    /// Stops the task of bus `name` and waits for it (aborting it if it does not stop in time),
    /// so that its port is closed and its last reports are queued for the engine.
    async fn stop(&mut self, name: &str) {
        let Some(mut r) = self.running.remove(name) else {
            return;
        };
        // No receiver means the task has already ended.
        let _ = r.stop.send(());
        match tokio::time::timeout(STOP_WAIT, &mut r.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(bus = %name, "bus task failed: {e}"),
            Err(_) => {
                warn!(bus = %name, "bus task did not stop in {STOP_WAIT:?}; aborting it");
                r.task.abort();
                let _ = r.task.await;
            }
        }
        self.channels.health.remove_bus(name);
        info!(bus = %name, "bus task stopped");
    }
}

impl Running {
    /// Whether this task already runs `bus` with the same doors and keys.
    fn same(
        &self,
        bus: &BusConfig,
        doors: &[DoorConfig],
        keys: &BTreeMap<String, Option<[u8; 16]>>,
    ) -> bool {
        let mine: Vec<&DoorConfig> = doors.iter().filter(|d| d.bus == bus.name).collect();
        self.config == *bus
            && mine.len() == self.doors.len()
            && mine.iter().all(|d| {
                self.doors.get(&d.id) == Some(*d) && self.keys.get(&d.id) == keys.get(&d.id)
            })
    }
}

/// Reads every door's key, so that a reload with an unusable key changes nothing.
fn read_keys(doors: &[DoorConfig]) -> Result<BTreeMap<String, Option<[u8; 16]>>, BusesError> {
    doors
        .iter()
        .map(|d| {
            let key = d.read_scbk().map_err(|source| BusesError::Key {
                door: d.id.clone(),
                source,
            })?;
            Ok((d.id.clone(), key))
        })
        .collect()
}

//! Wiring: opens the store, starts the engine and the MQTT link, and stops them in order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

use crate::buses::{Applied, Buses, BusesError, Channels, Reload};
use crate::config::{Config, ConfigErrors};
use crate::engine::{Engine, INBOUND_BYTES, Inputs, Shared};
use crate::events::EventSender;
use crate::health::Health;
use crate::link::{Link, LinkSettings};
use crate::notify::{Liveness, Notifier, watchdog, watchdog_interval};
use crate::reload::{Outcome, effective, needs_restart};
use crate::reported::Board;
use crate::status::{Sources, StatusServer};
use crate::store::Store;

/// Messages from the link waiting for the engine (their bytes are bounded by `INBOUND_BYTES`).
const INBOUND_QUEUE: usize = 1024;
/// Events from components waiting for the engine.
const EVENT_QUEUE: usize = 1024;

/// A running daemon.
pub struct Daemon {
    control: Control,
    events: EventSender,
    health: Arc<Health>,
    engine: JoinHandle<anyhow::Result<()>>,
    link: JoinHandle<anyhow::Result<()>>,
    buses: JoinHandle<()>,
    store: Store,
    stall: mpsc::Sender<Duration>,
    status: JoinHandle<()>,
}

/// What can be done to a running daemon from outside it (signals, tests): stop it, reload it.
#[derive(Clone)]
pub struct Control {
    shutdown: broadcast::Sender<()>,
    notifier: Option<Arc<Notifier>>,
    reloads: mpsc::Sender<Reload>,
    /// The config running now; the lock also keeps two reloads from interleaving.
    running: Arc<tokio::sync::Mutex<Config>>,
    /// The config in force, for `doorhub status`.
    config: watch::Sender<Arc<Config>>,
    outcome: watch::Sender<Option<Outcome>>,
}

impl Daemon {
    /// Opens the store and starts every component. Must be called inside a tokio runtime.
    pub fn start(config: Config) -> anyhow::Result<Daemon> {
        let store = Store::open(&config.hub.data_dir)
            .with_context(|| format!("opening the store in {}", config.hub.data_dir.display()))?;
        let health = Arc::new(Health::new(&config.hub.id));
        let board = Arc::new(Board::default());
        let config_tx = watch::Sender::new(Arc::new(config.clone()));
        let outcome_tx = watch::Sender::new(None);
        let shared = Shared {
            store: store.clone(),
            health: health.clone(),
            board: board.clone(),
            events_ready: Arc::new(Notify::new()),
            inbound_bytes: Arc::new(Semaphore::new(INBOUND_BYTES)),
        };
        let (shutdown, _) = broadcast::channel(1);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (reports_tx, reports_rx) = mpsc::channel(EVENT_QUEUE);
        let (reconfigure_tx, reconfigure_rx) = mpsc::channel(1);
        let (reloads_tx, reloads_rx) = mpsc::channel(1);
        let (stall_tx, stall_rx) = mpsc::channel(1);
        let liveness = Liveness::new();
        let engine = Engine::new(
            &config,
            shared.clone(),
            Inputs {
                inbound: inbound_rx,
                events: events_rx,
                reports: reports_rx,
                reconfigure: reconfigure_rx,
                beat: liveness.beat(),
                stall: stall_rx,
                shutdown: shutdown.subscribe(),
            },
        )
        .context("loading door state from the store")?;
        let link = Link::new(
            LinkSettings {
                mqtt: config.mqtt.clone(),
                hub: config.hub.id.clone(),
                health_interval: Duration::from_secs(config.health.interval_s),
                resubscribe: engine.needs_resubscribe(),
            },
            shared,
            inbound_tx,
            liveness.beat(),
            shutdown.subscribe(),
        );
        // A door with a key runs the Secure Channel; a key that can't be read stops the start
        // rather than let the door run in the clear.
        let buses = Buses::start(
            &config,
            engine.links(),
            Channels {
                health: health.clone(),
                store: store.clone(),
                reports: reports_tx,
                events: EventSender(events_tx.clone()),
                engine: reconfigure_tx,
                liveness: liveness.clone(),
                reloads: reloads_rx,
                shutdown: shutdown.subscribe(),
            },
        )?;
        let buses = tokio::spawn(buses.run().instrument(info_span!("buses")));
        let hub = config.hub.id.clone();
        let engine = tokio::spawn(
            async move { engine.run().await.context("engine") }
                .instrument(info_span!("engine", hub = %hub)),
        );
        let hub = config.hub.id.clone();
        let link = tokio::spawn(
            async move { link.run().await.context("mqtt link") }
                .instrument(info_span!("mqtt", hub = %hub)),
        );
        let status = StatusServer::new(
            config.hub.status_socket.clone(),
            Sources {
                health: health.clone(),
                board,
                store: store.clone(),
                config: config_tx.subscribe(),
                reload: outcome_tx.subscribe(),
            },
            shutdown.subscribe(),
        );
        let status = tokio::spawn(status.run().instrument(info_span!("status")));
        let notifier = Notifier::from_env().map(Arc::new);
        if let (Some(notifier), Some(interval)) = (&notifier, watchdog_interval()) {
            tokio::spawn(watchdog(
                notifier.clone(),
                interval,
                liveness,
                shutdown.subscribe(),
            ));
        }
        // The store is open and the buses run: the doors are served, with or without the broker.
        if let Some(n) = &notifier
            && let Err(e) = n.notify("READY=1")
        {
            warn!("cannot notify systemd: {e}");
        }
        info!("doorhub {} started", env!("CARGO_PKG_VERSION"));
        Ok(Daemon {
            control: Control {
                shutdown,
                notifier,
                reloads: reloads_tx,
                running: Arc::new(tokio::sync::Mutex::new(config)),
                config: config_tx,
                outcome: outcome_tx,
            },
            events: EventSender(events_tx),
            health,
            stall: stall_tx,
            status,
            engine,
            link,
            buses,
            store,
        })
    }

    /// A handle to stop or reload the daemon from elsewhere.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Where components (and tests) raise events.
    pub fn events(&self) -> EventSender {
        self.events.clone()
    }

    /// The daemon's health figures.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The daemon's store (for inspection).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Test hook: the engine's loop stalls for `d`, as a stuck loop would (the watchdog then
    /// stops pinging systemd).
    #[doc(hidden)]
    pub async fn stall_engine(&self, d: Duration) {
        let _ = self.stall.send(d).await;
    }

    /// Says stop; [`Daemon::wait`] then returns once everything is stored and closed.
    pub fn shutdown(&self) {
        self.control.shutdown();
    }

    /// Applies a new config's buses and doors (see [`Control::reload`]).
    pub async fn reload(&self, config: Config) -> Result<Applied, ReloadError> {
        self.control.reload(config).await
    }

    /// Waits for the components to stop, then flushes the store. Fails if any of them failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        let Daemon {
            control,
            events,
            health: _,
            stall: _,
            status,
            engine,
            link,
            buses,
            store,
        } = self;
        drop(events);
        let mut engine = engine;
        let mut link = link;
        // Whichever ends first, the other is told to stop too.
        let first = tokio::select! {
            r = &mut engine => ("engine", r),
            r = &mut link => ("link", r),
        };
        let _ = control.shutdown.send(());
        // The buses stop first, so that what they report reaches the engine before it stops.
        if let Err(e) = buses.await {
            warn!("bus supervisor failed: {e}");
        }
        // It removes its socket on the way out.
        let _ = status.await;
        let second = if first.0 == "engine" {
            ("link", link.await)
        } else {
            ("engine", engine.await)
        };
        store.flush().await.context("flushing the store")?;
        for (name, r) in [first, second] {
            r.with_context(|| format!("{name} task panicked"))??;
        }
        info!("doorhub stopped");
        Ok(())
    }
}

/// Why a reload was refused; the old config keeps running.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file has problems (every one of them).
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The buses and doors could not be applied.
    #[error(transparent)]
    Buses(#[from] BusesError),
}

impl Control {
    /// Says stop.
    pub fn shutdown(&self) {
        if let Some(n) = &self.notifier {
            let _ = n.notify("STOPPING=1");
        }
        // No receiver means every task has already stopped.
        let _ = self.shutdown.send(());
    }

    /// Reads `path` again and applies it (SIGHUP). A file with problems is refused, each
    /// problem logged, and the old config keeps running.
    pub async fn reload_file(&self, path: &Path) -> Result<Applied, ReloadError> {
        info!(path = %path.display(), "reloading the config");
        match Config::load(path) {
            Ok(config) => self.reload(config).await,
            Err(errors) => {
                for e in &errors.errors {
                    error!("config reload refused: {e}");
                }
                self.record(Outcome::refused(
                    errors.errors.iter().map(|e| e.to_string()).collect(),
                ));
                Err(ReloadError::Config(errors))
            }
        }
    }

    /// Applies `config`'s buses and doors: added, removed or changed ones, without touching the
    /// MQTT session or the buses that did not change. The other sections keep their running
    /// values until a restart ([`crate::reload`]).
    pub async fn reload(&self, config: Config) -> Result<Applied, ReloadError> {
        let mut running = self.running.lock().await;
        let restart = needs_restart(&running, &config);
        let next = effective(&running, config);
        let (reply, answer) = oneshot::channel();
        let outcome = match self
            .reloads
            .send(Reload {
                config: next.clone(),
                reply,
            })
            .await
        {
            Ok(()) => answer.await.unwrap_or(Err(BusesError::EngineGone)),
            Err(_) => Err(BusesError::EngineGone),
        };
        match outcome {
            Ok(applied) => {
                self.config.send_replace(Arc::new(next.clone()));
                *running = next;
                info!(
                    buses_added = ?applied.buses_added,
                    buses_removed = ?applied.buses_removed,
                    buses_restarted = ?applied.buses_restarted,
                    doors_added = ?applied.doors_added,
                    doors_removed = ?applied.doors_removed,
                    doors_changed = ?applied.doors_changed,
                    "config reloaded"
                );
                if !restart.is_empty() {
                    warn!(
                        sections = ?restart,
                        "these sections changed but take effect only after a restart (systemctl restart doorhub)"
                    );
                }
                self.record(Outcome::applied(applied.clone(), &restart));
                Ok(applied)
            }
            Err(e) => {
                error!("config reload refused: {e}");
                self.record(Outcome::refused(vec![e.to_string()]));
                Err(e.into())
            }
        }
    }

    /// The outcome of the last reload, as it changes.
    pub fn outcomes(&self) -> watch::Receiver<Option<Outcome>> {
        self.outcome.subscribe()
    }

    fn record(&self, outcome: Outcome) {
        self.outcome.send_replace(Some(outcome));
    }
}

/// Runs the daemon until SIGTERM or SIGINT, then stops it cleanly; SIGHUP reloads `path`.
pub async fn run(config: Config, path: &Path) -> anyhow::Result<()> {
    use futures::StreamExt;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    let daemon = Daemon::start(config)?;
    let control = daemon.control();
    let handle = signals.handle();
    let wait = daemon.wait();
    tokio::pin!(wait);
    let result = loop {
        tokio::select! {
            r = &mut wait => break r,
            Some(sig) = signals.next() => {
                if sig == SIGHUP {
                    // Refusals are logged and recorded for `doorhub status`.
                    let _ = control.reload_file(path).await;
                } else {
                    info!(signal = sig, "stopping");
                    control.shutdown();
                }
            }
        }
    };
    handle.close();
    result
}

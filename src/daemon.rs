//! Wiring: opens the store, starts the engine and the MQTT link, and stops them in order.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, info, info_span, warn};

use crate::bus::Bus;
use crate::bus::reader::ReaderCtl;
use crate::bus::secure::ReaderSecurity;
use crate::config::Config;
use crate::engine::{Engine, INBOUND_BYTES, Inputs, Shared};
use crate::events::EventSender;
use crate::health::Health;
use crate::link::{Link, LinkSettings};
use crate::notify::{Liveness, Notifier, watchdog, watchdog_interval};
use crate::reported::Board;
use crate::status::{Sources, StatusServer};
use crate::store::Store;

/// Messages from the link waiting for the engine (their bytes are bounded by `INBOUND_BYTES`).
const INBOUND_QUEUE: usize = 1024;
/// Events from components waiting for the engine.
const EVENT_QUEUE: usize = 1024;

/// A running daemon.
pub struct Daemon {
    shutdown: broadcast::Sender<()>,
    events: EventSender,
    health: Arc<Health>,
    engine: JoinHandle<anyhow::Result<()>>,
    link: JoinHandle<anyhow::Result<()>>,
    buses: JoinSet<()>,
    store: Store,
    notifier: Option<Arc<Notifier>>,
    stall: mpsc::Sender<Duration>,
    config: watch::Sender<Arc<Config>>,
    status: JoinHandle<()>,
}

impl Daemon {
    /// Opens the store and starts every component. Must be called inside a tokio runtime.
    pub fn start(config: Config) -> anyhow::Result<Daemon> {
        let store = Store::open(&config.hub.data_dir)
            .with_context(|| format!("opening the store in {}", config.hub.data_dir.display()))?;
        let health = Arc::new(Health::new(&config.hub.id));
        let board = Arc::new(Board::default());
        let config_tx = watch::Sender::new(Arc::new(config.clone()));
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
        let (stall_tx, stall_rx) = mpsc::channel(1);
        // One beat for the engine, one for the link, one per bus.
        let (liveness, beats) = Liveness::new(2 + config.bus.len());
        let mut beats = beats.into_iter();
        // Called exactly once per main loop below: 2 + the number of buses, as made.
        let mut beat = || beats.next().expect("one beat was made for each main loop");
        let engine = Engine::new(
            &config,
            shared.clone(),
            Inputs {
                inbound: inbound_rx,
                events: events_rx,
                reports: reports_rx,
                beat: beat(),
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
            beat(),
            shutdown.subscribe(),
        );
        let mut buses = JoinSet::new();
        let targets = engine.targets();
        for bus in &config.bus {
            let mut readers = Vec::new();
            for d in config.door.iter().filter(|d| d.bus == bus.name) {
                let reader = ReaderCtl::new(
                    d.clone(),
                    bus.vendor_code_bytes(),
                    bus.max_file_bytes,
                    bus.offline_after,
                    Duration::from_secs(bus.verify_interval_s),
                    targets.get(&d.id).cloned(),
                    engine.applied(&d.id),
                    store.clone(),
                )
                .with_baud(bus.baud);
                // A door with a key runs the Secure Channel; a key that can't be read stops the
                // start rather than let the door run in the clear.
                let key = d
                    .read_scbk()
                    .with_context(|| format!("door {}: scbk_file", d.id))?;
                readers.push(match (key, &d.scbk_file) {
                    (Some(key), Some(path)) => {
                        reader.with_security(ReaderSecurity::new(key, path.clone()))
                    }
                    _ => reader,
                });
            }
            let task = Bus::new(
                bus.clone(),
                readers,
                health.clone(),
                reports_tx.clone(),
                EventSender(events_tx.clone()),
                beat(),
                shutdown.subscribe(),
            );
            buses.spawn(task.run().instrument(info_span!("bus", bus = %bus.name)));
        }
        drop(reports_tx);
        let hub = config.hub.id.clone();
        let engine = tokio::spawn(
            async move { engine.run().await.context("engine") }
                .instrument(info_span!("engine", hub = %hub)),
        );
        let link = tokio::spawn(
            async move { link.run().await.context("mqtt link") }
                .instrument(info_span!("mqtt", hub = %config.hub.id)),
        );
        let status = StatusServer::new(
            config.hub.status_socket.clone(),
            Sources {
                health: health.clone(),
                board,
                store: store.clone(),
                config: config_tx.subscribe(),
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
            shutdown,
            events: EventSender(events_tx),
            health,
            notifier,
            stall: stall_tx,
            config: config_tx,
            status,
            engine,
            link,
            buses,
            store,
        })
    }

    /// Where components (and tests) raise events.
    pub fn events(&self) -> EventSender {
        self.events.clone()
    }

    /// The daemon's health figures.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The configuration in force; what is sent here is what `doorhub status` shows.
    pub fn config(&self) -> &watch::Sender<Arc<Config>> {
        &self.config
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
        if let Some(n) = &self.notifier {
            let _ = n.notify("STOPPING=1");
        }
        // No receiver means every task has already stopped.
        let _ = self.shutdown.send(());
    }

    /// Waits for the components to stop, then flushes the store. Fails if any of them failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        let Daemon {
            shutdown,
            events,
            health: _,
            notifier: _,
            stall: _,
            config: _,
            status,
            engine,
            link,
            mut buses,
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
        let _ = shutdown.send(());
        // The buses stop first, so that what they report reaches the engine before it stops.
        while buses.join_next().await.is_some() {}
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

/// Runs the daemon until SIGTERM or SIGINT, then stops it cleanly.
pub async fn run(config: Config) -> anyhow::Result<()> {
    use futures::StreamExt;
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook_tokio::Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let daemon = Daemon::start(config)?;
    let stopper = daemon.shutdown.clone();
    let notifier = daemon.notifier.clone();
    let handle = signals.handle();
    tokio::spawn(async move {
        if let Some(sig) = signals.next().await {
            info!(signal = sig, "stopping");
            if let Some(n) = notifier {
                let _ = n.notify("STOPPING=1");
            }
            let _ = stopper.send(());
        }
    });
    let result = daemon.wait().await;
    handle.close();
    result
}

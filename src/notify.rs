//! systemd's notify protocol (`sd_notify`): READY=1 once the daemon serves its doors, STOPPING=1
//! on the way out, and WATCHDOG=1 while every main loop is alive.
//!
//! Liveness is checked, not assumed: the watchdog task raises an epoch, every main loop (engine,
//! MQTT link, each bus) acknowledges it from inside its loop, and WATCHDOG=1 goes out only when
//! all of them acknowledged the previous epoch. A loop that is stuck stops the pings, and systemd
//! restarts the service.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The socket named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace);
    /// `None` when not started by systemd with notify.
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_string_lossy();
        let addr = if let Some(abstract_name) = name.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes()).ok()?
        } else {
            SocketAddr::from_pathname(name.as_ref()).ok()?
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, addr })
    }

    /// Sends one state string, e.g. `READY=1`.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        Ok(())
    }
}

/// How often systemd wants WATCHDOG=1, from `WATCHDOG_USEC` (and `WATCHDOG_PID`, if set, must be
/// this process).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The epoch the watchdog raises and the main loops acknowledge. Loops come and go (a reload
/// stops and starts buses): each holds a [`Beat`], and a loop whose beat was dropped no longer
/// counts.
#[derive(Debug, Clone)]
pub struct Liveness {
    epoch: watch::Sender<u64>,
    acks: Arc<Mutex<Vec<Weak<AtomicU64>>>>,
}

/// One main loop's part of [`Liveness`].
#[derive(Debug)]
pub struct Beat {
    epoch: watch::Receiver<u64>,
    ack: Arc<AtomicU64>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::new()
    }
}

impl Liveness {
    /// Liveness with no loops yet.
    pub fn new() -> Liveness {
        let (epoch, _) = watch::channel(0);
        Liveness {
            epoch,
            acks: Arc::default(),
        }
    }

    /// A beat for a new main loop, counted from now on, until it is dropped.
    pub fn beat(&self) -> Beat {
        let mut epoch = self.epoch.subscribe();
        // A new loop has acknowledged everything raised before it existed.
        let ack = Arc::new(AtomicU64::new(*epoch.borrow_and_update()));
        self.lock().push(Arc::downgrade(&ack));
        Beat { epoch, ack }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<AtomicU64>>> {
        // A panic while holding this lock leaves only a list of weak pointers: still valid.
        self.acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether every live loop acknowledged the current epoch; forgets the loops that are gone.
    fn all_acked(&self) -> bool {
        let current = *self.epoch.borrow();
        let mut acks = self.lock();
        acks.retain(|a| a.strong_count() > 0);
        acks.iter()
            .filter_map(Weak::upgrade)
            .all(|a| a.load(Ordering::Acquire) >= current)
    }

    /// Raises the epoch.
    fn raise(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }
}

impl Beat {
    /// Acknowledges the current epoch (call from inside the loop).
    pub fn ack(&mut self) {
        let current = *self.epoch.borrow_and_update();
        self.ack.store(current, Ordering::Release);
    }

    /// Completes when the epoch was raised; the loop then calls [`Beat::ack`]. Pends forever once
    /// the watchdog has gone (shutdown), so it never wins a `select!` for nothing.
    pub async fn raised(&mut self) {
        if self.epoch.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Acknowledges at once if the epoch was raised (for busy loops between their steps).
    pub fn ack_if_raised(&mut self) {
        if self.epoch.has_changed().unwrap_or(false) {
            self.ack();
        }
    }
}

/// Sends WATCHDOG=1 every half interval while every loop keeps acknowledging; stops on shutdown.
pub async fn watchdog(
    notifier: Arc<Notifier>,
    interval: Duration,
    liveness: Liveness,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        if liveness.all_acked() {
            if let Err(e) = notifier.notify("WATCHDOG=1") {
                warn!("cannot notify systemd: {e}");
            }
        } else {
            debug!("a main loop did not answer: no watchdog ping");
        }
        liveness.raise();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_does_not_ack_holds_the_pings() {
        let live = Liveness::new();
        let mut beats = [live.beat(), live.beat()];
        assert!(live.all_acked());
        live.raise();
        assert!(!live.all_acked());
        beats[0].ack();
        assert!(!live.all_acked());
        beats[1].ack_if_raised();
        assert!(live.all_acked());
    }

    #[test]
    fn loops_come_and_go() {
        let live = Liveness::new();
        let mut engine = live.beat();
        live.raise();
        let stopped_bus = live.beat();
        engine.ack();
        // A loop that joins after a raise is not behind.
        assert!(live.all_acked());
        live.raise();
        engine.ack();
        assert!(!live.all_acked());
        drop(stopped_bus);
        assert!(live.all_acked());
    }
}

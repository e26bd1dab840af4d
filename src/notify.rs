//! systemd's notify protocol (`sd_notify`): READY=1 once the daemon serves its doors, STOPPING=1
//! on the way out, and WATCHDOG=1 while every main loop is alive.
//!
//! Liveness is checked, not assumed: the watchdog task raises an epoch, every main loop (engine,
//! MQTT link, each bus) acknowledges it from inside its loop, and WATCHDOG=1 goes out only when
//! all of them acknowledged the previous epoch. A loop that is stuck stops the pings, and systemd
//! restarts the service.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The epoch the watchdog raises and the main loops acknowledge.
#[derive(Debug, Clone)]
pub struct Liveness {
    epoch: watch::Sender<u64>,
    acks: Arc<Vec<AtomicU64>>,
}

/// One main loop's part of [`Liveness`].
#[derive(Debug)]
pub struct Beat {
    epoch: watch::Receiver<u64>,
    acks: Arc<Vec<AtomicU64>>,
    index: usize,
}

impl Liveness {
    /// Liveness for `loops` main loops; returns their beats, one each.
    pub fn new(loops: usize) -> (Liveness, Vec<Beat>) {
        let (epoch, _) = watch::channel(0);
        let acks: Arc<Vec<AtomicU64>> = Arc::new((0..loops).map(|_| AtomicU64::new(0)).collect());
        let beats = (0..loops)
            .map(|index| Beat {
                epoch: epoch.subscribe(),
                acks: acks.clone(),
                index,
            })
            .collect();
        (Liveness { epoch, acks }, beats)
    }

    /// Whether every loop acknowledged the current epoch.
    fn all_acked(&self) -> bool {
        let current = *self.epoch.borrow();
        self.acks
            .iter()
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
        if let Some(a) = self.acks.get(self.index) {
            a.store(current, Ordering::Release);
        }
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
        let (live, mut beats) = Liveness::new(2);
        assert!(live.all_acked());
        live.raise();
        assert!(!live.all_acked());
        beats[0].ack();
        assert!(!live.all_acked());
        beats[1].ack_if_raised();
        assert!(live.all_acked());
    }
}

//! One task per RS-485 bus: the OSDP control panel (`reader-link.md`). It opens the serial port
//! (again, with backoff, when it fails), serves the bus's readers round-robin one command at a
//! time, and passes what they report to the engine (door reports) and the outbox (events).
//!
//! - [`reader`]: one reader's state: what to send next, what its replies mean.
//! - [`sync`]: the table sync of one `stored` door.
//!
//! The line itself is any `AsyncRead + AsyncWrite` ([`Bus::serve`]), so tests run it over a pty
//! pair or an in-memory pipe.

pub mod reader;
pub mod secure;
pub mod sync;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use crate::config::BusConfig;
use crate::events::EventSender;
use crate::health::{BusCounters, Health};
use crate::notify::Beat;
use crate::osdp::frame::Frame;
use crate::osdp::stream::{FrameReader, write_frame};
use crate::sync::DoorReport;
use reader::{Effect, ReaderCtl};

/// How long a reply may take to start, besides the command's and the reply's own transmit time.
const REPLY_WAIT: Duration = Duration::from_millis(200);
/// Reply bytes allowed for in the reply deadline (the longest reply the hub expects).
const REPLY_ALLOWANCE: usize = 160;
/// The port is reopened after a failure from 1 s, doubling, up to this.
const MAX_REOPEN: Duration = Duration::from_secs(30);

/// The bus task's errors; all end in reopening the port.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Reading or writing the line failed.
    #[error("serial line: {0}")]
    Io(#[from] std::io::Error),
    /// The port could not be opened.
    #[error("cannot open {port}: {source}")]
    Open {
        /// The port.
        port: String,
        /// Why.
        source: tokio_serial::Error,
    },
}

/// The bus task.
pub struct Bus {
    config: BusConfig,
    readers: Vec<ReaderCtl>,
    counters: Arc<BusCounters>,
    health: Arc<Health>,
    reports: mpsc::Sender<DoorReport>,
    events: EventSender,
    shutdown: broadcast::Receiver<()>,
    turn: usize,
    /// Whether the last turn went to a revoking reader out of order.
    revoking_turn: bool,
    beat: Beat,
}

impl Bus {
    /// A bus serving `readers`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: BusConfig,
        readers: Vec<ReaderCtl>,
        health: Arc<Health>,
        reports: mpsc::Sender<DoorReport>,
        events: EventSender,
        beat: Beat,
        shutdown: broadcast::Receiver<()>,
    ) -> Bus {
        let counters = health.add_bus(
            &config.name,
            &config.port.display().to_string(),
            readers.len(),
        );
        Bus {
            config,
            readers,
            counters,
            health,
            reports,
            events,
            shutdown,
            turn: 0,
            revoking_turn: false,
            beat,
        }
    }

    /// Opens the port and serves it until shutdown, reopening it with backoff after a failure.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match open(&self.config.port, self.config.baud) {
                Ok(port) => {
                    info!(port = %self.config.port.display(), baud = self.config.baud, "bus open");
                    self.set_open(true);
                    let result = self.serve(port).await;
                    self.set_open(false);
                    match result {
                        // Shutdown: the readers did not go offline, the hub is stopping.
                        Ok(()) => return,
                        Err(e) => {
                            warn!("bus failed, reopening: {e}");
                            self.all_offline().await;
                        }
                    }
                    backoff = Duration::from_secs(1);
                }
                Err(e) => warn!("{e}; retrying in {backoff:?}"),
            }
            let wake = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    _ = self.beat.raised() => self.beat.ack(),
                    _ = self.shutdown.recv() => return,
                }
            }
            backoff = (backoff * 2).min(MAX_REOPEN);
        }
    }

    fn set_open(&self, open: bool) {
        self.counters.open.store(open, Ordering::Relaxed);
        self.health.changed.notify_one();
    }

    async fn all_offline(&mut self) {
        let now = Instant::now();
        for i in 0..self.readers.len() {
            self.readers[i].port_lost(now);
            let reader = &self.readers[i];
            self.counters
                .set_transfer(reader.door(), reader.address(), None);
            let effects = self.readers[i].take_effects();
            self.pass_on(effects).await;
        }
        self.count_online();
    }

    /// Serves the readers over `io` until shutdown (`Ok`) or a line error.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: S,
    ) -> Result<(), BusError> {
        let (mut rx, mut tx) = tokio::io::split(io);
        let mut frames = FrameReader::crc_only();
        loop {
            self.beat.ack_if_raised();
            let now = Instant::now();
            let Some(i) = self.pick(now) else {
                // Nobody wants the line: wait for the next probe, or stop.
                let wake = self
                    .readers
                    .iter()
                    .map(ReaderCtl::next_probe)
                    .min()
                    .unwrap_or(now + reader::PROBE_EVERY);
                tokio::select! {
                    _ = sleep_until(wake) => continue,
                    _ = self.beat.raised() => {
                        self.beat.ack();
                        continue;
                    }
                    _ = self.shutdown.recv() => return Ok(()),
                }
            };
            if let Ok(()) | Err(broadcast::error::TryRecvError::Closed) = self.shutdown.try_recv() {
                return Ok(());
            }
            let hold = self.readers.iter().any(ReaderCtl::revoking) && !self.readers[i].revoking();
            let reader = &mut self.readers[i];
            let (cmd, purpose) = reader.next(now, hold);
            let seq = reader.take_seq();
            let address = reader.address();
            let frame = match reader.frame(&cmd, seq) {
                Ok(frame) => frame,
                Err(e) => {
                    reader.security_failed(&e.to_string(), now);
                    continue;
                }
            };
            write_frame(&mut tx, &frame, true).await?;
            BusCounters::bump(&self.counters.tx_frames);
            let sent = frame.encoded_len().unwrap_or(0) + 1;
            let deadline = Instant::now()
                + REPLY_WAIT
                + self.transmit_time(sent)
                + self.transmit_time(REPLY_ALLOWANCE);
            let crc_before = frames.stats().crc_errors;
            let reply = read_reply(&mut rx, &mut frames, address, seq, deadline).await?;
            let crc_errors = frames.stats().crc_errors - crc_before;
            self.counters
                .crc_errors
                .fetch_add(crc_errors, Ordering::Relaxed);
            let now = Instant::now();
            let reader = &mut self.readers[i];
            match reply.map(|f| reader.decode(&f)) {
                Some(Ok(reply)) => {
                    BusCounters::bump(&self.counters.rx_frames);
                    reader.on_reply(cmd, purpose, reply, now);
                }
                Some(Err(e)) => {
                    BusCounters::bump(&self.counters.rx_frames);
                    debug!(address, "unreadable reply: {e}");
                    if reader.secure() {
                        reader.security_failed(&e, now);
                    } else {
                        reader.on_timeout(cmd, purpose, now);
                    }
                }
                None => {
                    BusCounters::bump(&self.counters.timeouts);
                    frames.line_idle();
                    reader.on_timeout(cmd, purpose, now);
                }
            }
            let reader = &self.readers[i];
            self.counters
                .set_transfer(reader.door(), address, reader.transfer());
            let effects = self.readers[i].take_effects();
            let changed = !effects.is_empty();
            self.pass_on(effects).await;
            if changed {
                self.count_online();
            }
        }
    }

    /// The next reader to serve: one with a strike waiting, else the next due reader in turn.
    fn pick(&mut self, now: Instant) -> Option<usize> {
        if let Some(i) = self.readers.iter().position(ReaderCtl::urgent) {
            return Some(i);
        }
        // A revocation gets every other turn: a lost card stops working sooner, and the other
        // readers are still polled in between.
        if !self.revoking_turn
            && let Some(i) = self.readers.iter().position(ReaderCtl::revoking)
        {
            self.revoking_turn = true;
            return Some(i);
        }
        self.revoking_turn = false;
        let n = self.readers.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            if self.readers[i].due(now) {
                self.turn = i + 1;
                return Some(i);
            }
        }
        None
    }

    /// The time `bytes` take on the wire: 10 bits a byte.
    fn transmit_time(&self, bytes: usize) -> Duration {
        Duration::from_micros(bytes as u64 * 10_000_000 / u64::from(self.config.baud.max(1)))
    }

    async fn pass_on(&self, effects: Vec<Effect>) {
        for effect in effects {
            let sent = match effect {
                Effect::Report(r) => self.reports.send(r).await.is_ok(),
                Effect::Event(e) => self.events.send(e).await.is_ok(),
            };
            if !sent {
                debug!("engine gone; dropping a report during shutdown");
            }
        }
    }

    fn count_online(&self) {
        let online = self.readers.iter().filter(|r| r.online()).count() as u64;
        if self.counters.online.swap(online, Ordering::Relaxed) != online {
            self.health.changed.notify_one();
        }
    }
}

fn open(port: &Path, baud: u32) -> Result<tokio_serial::SerialStream, BusError> {
    use tokio_serial::SerialPortBuilderExt;
    tokio_serial::new(port.to_string_lossy(), baud)
        .open_native_async()
        .map_err(|source| BusError::Open {
            port: port.display().to_string(),
            source,
        })
}

/// Reads until the reply to (`address`, `seq`) arrives, or the deadline. Other frames (our own
/// echo on a half-duplex line, other addresses, stale replies) are skipped.
async fn read_reply<R: AsyncRead + Unpin>(
    rx: &mut R,
    frames: &mut FrameReader,
    address: u8,
    seq: u8,
    deadline: Instant,
) -> Result<Option<Frame>, BusError> {
    loop {
        match tokio::time::timeout_at(deadline, frames.read_frame(rx)).await {
            Err(_) => return Ok(None),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(None)) => {
                return Err(BusError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the line closed",
                )));
            }
            Ok(Ok(Some(f))) if f.reply && f.address == address && f.sequence == seq => {
                return Ok(Some(f));
            }
            Ok(Ok(Some(f))) => {
                debug!(address = f.address, reply = f.reply, "skipped a frame");
            }
        }
    }
}

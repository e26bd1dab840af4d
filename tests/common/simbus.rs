//! Simulated doors on a pty pair, served in-process by `doorhub::sim`: the hub opens the pty's
//! slave path like a real serial port. Optionally every byte crossing the line can be corrupted
//! with a given probability, to show the link survives a noisy RS-485 cable.

use std::time::Duration;

use doorhub::sim::{Action, Reader, ReaderOptions, Script, SimEvent};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_serial::{SerialPort, SerialStream};

/// A simulated multi-drop bus.
pub struct SimBus {
    /// The path the hub opens.
    pub path: String,
    script: mpsc::Sender<Script>,
    events: mpsc::UnboundedReceiver<SimEvent>,
    seen: Vec<Value>,
    tasks: Vec<JoinHandle<()>>,
    _slave: SerialStream,
}

impl SimBus {
    /// Readers with `options` on a clean line.
    pub fn start(options: Vec<ReaderOptions>) -> SimBus {
        SimBus::start_noisy(options, 0.0, 0)
    }

    /// Readers with `options`; each byte in either direction is corrupted (one bit flipped)
    /// with probability `error_rate`, from a seeded generator so a failure can be replayed.
    pub fn start_noisy(options: Vec<ReaderOptions>, error_rate: f64, seed: u64) -> SimBus {
        let (master, slave) = SerialStream::pair().expect("a pty pair");
        let path = slave.name().expect("the pty slave has a path");
        let (script_tx, script_rx) = mpsc::channel(64);
        let (events_tx, events) = mpsc::unbounded_channel();
        let reader = Reader::multidrop(options);
        let mut tasks = Vec::new();
        if error_rate > 0.0 {
            let (near, far) = tokio::io::duplex(4096);
            tasks.push(tokio::spawn(noisy_copy(master, near, error_rate, seed)));
            tasks.push(tokio::spawn(async move {
                let _ = reader.run(far, script_rx, events_tx).await;
            }));
        } else {
            tasks.push(tokio::spawn(async move {
                let _ = reader.run(master, script_rx, events_tx).await;
            }));
        }
        SimBus {
            path,
            script: script_tx,
            events,
            seen: Vec::new(),
            tasks,
            _slave: slave,
        }
    }

    /// Does `action` at the reader at `address`.
    pub async fn act(&self, address: u8, action: Action) {
        self.script
            .send(Script {
                to: Some(address),
                action,
            })
            .await
            .expect("simulator running");
    }

    /// Waits for a simulator event (as JSON) matching `pred`; earlier ones are passed over.
    pub async fn wait_for(
        &mut self,
        deadline: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            match tokio::time::timeout_at(end, self.events.recv()).await {
                Ok(Some(e)) => {
                    let v: Value = serde_json::from_str(&e.to_json()).expect("event JSON");
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Ok(None) => panic!("simulator stopped; seen: {:?}", self.tail()),
                Err(_) => panic!(
                    "no matching simulator event within {deadline:?}; last: {:#?}",
                    self.tail()
                ),
            }
        }
    }

    /// Passes over every event so far, so the next wait sees only what happens from now on.
    pub fn drain(&mut self) {
        self.seen();
    }

    /// Every event seen so far.
    pub fn seen(&mut self) -> &[Value] {
        while let Ok(e) = self.events.try_recv() {
            if let Ok(v) = serde_json::from_str(&e.to_json()) {
                self.seen.push(v);
            }
        }
        &self.seen
    }

    fn tail(&self) -> Vec<String> {
        let n = self.seen.len().saturating_sub(15);
        self.seen[n..].iter().map(|v| v.to_string()).collect()
    }
}

impl Drop for SimBus {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Copies both ways between the pty master and the simulator, flipping a bit now and then.
async fn noisy_copy(master: SerialStream, sim: DuplexStream, rate: f64, seed: u64) {
    let (mr, mw) = tokio::io::split(master);
    let (sr, sw) = tokio::io::split(sim);
    tokio::join!(
        pump(mr, sw, rate, fastrand::Rng::with_seed(seed)),
        pump(sr, mw, rate, fastrand::Rng::with_seed(seed ^ 0x5eed)),
    );
}

/// Copies `from` to `to` until either end closes, corrupting bytes at `rate`.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    rate: f64,
    mut rng: fastrand::Rng,
) {
    let mut buf = [0u8; 512];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        corrupt(&mut buf[..n], rate, &mut rng);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

fn corrupt(bytes: &mut [u8], rate: f64, rng: &mut fastrand::Rng) {
    for b in bytes {
        if rng.f64() < rate {
            *b ^= 1 << rng.u8(0..8);
        }
    }
}

//! The interop peer: an OSDP PD built on libosdp (`tests/interop/pd_peer.py`) on the far side of
//! a pty, and a minimal in-test CP ([`RawCp`]) that speaks to it with doorhub's own codec.
//!
//! The peer prints one JSON object per line on stdout (`{"event": ...}`); [`Peer::wait_for`]
//! awaits the next line matching a predicate, with a deadline, and panics with everything the
//! peer printed (stdout and its stderr log) when it does not come.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use doorhub::osdp::frame::Frame;
use doorhub::osdp::message::{Command, Reply};
use doorhub::osdp::stream::{FrameReader, write_frame};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio_serial::{SerialPort, SerialStream};

/// How long the peer may take to start (Python, libosdp, the port).
pub const PEER_START: Duration = Duration::from_secs(15);
/// How long [`RawCp`] waits for a reply by default.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// The venv python with libosdp: `DOORHUB_INTEROP_PYTHON`, else what `scripts/interop-venv`
/// prints (it creates the venv on first use). Looked up once per test binary.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("DOORHUB_INTEROP_PYTHON") {
                return PathBuf::from(p);
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/interop-venv");
            let out = std::process::Command::new(&script)
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} failed ({}); set DOORHUB_INTEROP_PYTHON to a python with libosdp 3.2.9",
                script.display(),
                out.status
            );
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert!(
                !path.is_empty(),
                "{} printed no python path",
                script.display()
            );
            PathBuf::from(path)
        })
        .clone()
}

/// `tests/interop/pd_peer.py`.
pub fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/pd_peer.py")
}

/// A pty pair: the master (the CP's end, for the test or the hub) and the slave's path (for the
/// peer). The slave handle is returned too: keep it open until the peer has opened the path
/// ([`Peer::spawn`] takes it and holds it while the peer lives), or reads on the master fail
/// with EIO while no one has the slave open.
pub fn pty_pair() -> (SerialStream, String, SerialStream) {
    let (master, slave) = SerialStream::pair().expect("open a pty pair");
    let path = slave.name().expect("the pty slave has a path");
    (master, path, slave)
}

/// Which kind of door the peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A `hub` door's plain reader: reports cards (osdp_RAW), records commands.
    Plain,
    /// A `stored` door's controller: keeps the pushed table, decides locally.
    Stored,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Stored => "stored",
        }
    }
}

/// How to start the peer.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// PD address, 0..=126.
    pub address: u8,
    /// Plain reader or stored-table controller.
    pub mode: Mode,
    /// Receive buffer the peer declares (PDCAP 0x0A) and enforces; libosdp's is 256, the most.
    pub rx_buffer: Option<u16>,
    /// Secure Channel base key; the peer then enforces the Secure Channel.
    pub scbk: Option<[u8; 16]>,
    /// Vendor code of the MFG commands (libosdp's integer, default 0x48440A).
    pub vendor_code: Option<u32>,
    /// Print an `rx` line (code, security block) for every frame the peer receives.
    pub trace: bool,
    /// Spoil the MAC of every sealed reply, printing a `bad-mac` line for each.
    pub bad_mac: bool,
}

impl PeerOptions {
    /// A peer at `address` in `mode`, everything else default.
    pub fn new(address: u8, mode: Mode) -> PeerOptions {
        PeerOptions {
            address,
            mode,
            rx_buffer: None,
            scbk: None,
            vendor_code: None,
            trace: false,
            bad_mac: false,
        }
    }
}

/// A running `pd_peer.py`. Killed on drop.
pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Every stdout line seen so far, for panic messages.
    history: Vec<Value>,
    stderr: Arc<Mutex<String>>,
    port: String,
    _slave: Option<SerialStream>,
}

impl Peer {
    /// Starts the peer on the pty slave `port` (keeping `slave`, the test's handle of it, open
    /// while the peer runs; `None` works too, once the peer has the path open) and waits for
    /// its `ready` line. The test then talks on the pty's master.
    pub async fn spawn(port: &str, slave: Option<SerialStream>, opts: &PeerOptions) -> Peer {
        Peer::start(port, slave, opts).await
    }

    /// Starts the peer on a pty of its own (`--port pty`): it serves the master end, and
    /// [`Peer::port`] is the slave's path, for the CP (the hub) to open as its serial port.
    pub async fn spawn_pty(opts: &PeerOptions) -> Peer {
        Peer::start("pty", None, opts).await
    }

    /// The serial device the CP opens: with [`Peer::spawn_pty`] the peer's pty slave; with
    /// [`Peer::spawn`] the path the peer itself opened.
    pub fn port(&self) -> &str {
        &self.port
    }

    async fn start(port: &str, slave: Option<SerialStream>, opts: &PeerOptions) -> Peer {
        let mut cmd = tokio::process::Command::new(python());
        cmd.arg(peer_script())
            .args(["--port", port])
            .args(["--address", &opts.address.to_string()])
            .args(["--mode", opts.mode.arg()]);
        if let Some(rx) = opts.rx_buffer {
            cmd.args(["--rx-buffer", &rx.to_string()]);
        }
        if let Some(key) = opts.scbk {
            cmd.args(["--scbk", &hex::encode(key)]);
        }
        if let Some(v) = opts.vendor_code {
            cmd.args(["--vendor-code", &format!("{v:#x}")]);
        }
        if opts.trace {
            cmd.arg("--trace");
        }
        if opts.bad_mac {
            cmd.arg("--bad-mac");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", python().display()));

        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "event": "non-json", "line": line }));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let log = Arc::clone(&stderr);
        let err_pipe = child.stderr.take().expect("piped stderr");
        tokio::spawn(async move {
            let mut reader = BufReader::new(err_pipe).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });

        let stdin = child.stdin.take();
        let mut peer = Peer {
            child,
            stdin,
            lines,
            history: Vec::new(),
            stderr,
            port: String::new(),
            _slave: slave,
        };
        let ready = peer.wait_for(PEER_START, |v| v["event"] == "ready").await;
        peer.port = ready["port"].as_str().unwrap_or(port).to_owned();
        peer
    }

    /// The next stdout line (JSON) that satisfies `pred`; lines before it are consumed. Panics
    /// after `deadline` or when the peer exits, with everything it printed.
    pub async fn wait_for(
        &mut self,
        deadline: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(v)) => {
                    self.history.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Ok(None) => panic!("the peer exited while waiting{}", self.report()),
                Err(_) => panic!("no matching peer line within {deadline:?}{}", self.report()),
            }
        }
    }

    /// Lines already printed that no wait consumed yet, without waiting.
    pub fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(v) = self.lines.try_recv() {
            self.history.push(v.clone());
            out.push(v);
        }
        out
    }

    /// Sends one stdin command (`card 26 bd88eb80`, `wipe`, `state`).
    pub async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        let mut bytes = line.trim_end().as_bytes().to_vec();
        bytes.push(b'\n');
        if let Err(e) = stdin.write_all(&bytes).await {
            panic!("writing {line:?} to the peer: {e}{}", self.report());
        }
        stdin.flush().await.unwrap();
    }

    /// Closes stdin (the peer's signal to exit) and waits up to `deadline` for it; returns its
    /// exit code (None if killed by a signal).
    pub async fn shutdown(mut self, deadline: Duration) -> Option<i32> {
        drop(self.stdin.take());
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            Ok(Err(e)) => panic!("waiting for the peer: {e}"),
            Err(_) => panic!("the peer did not exit within {deadline:?}{}", self.report()),
        }
    }

    /// The peer's stderr (libosdp's log and Python errors) so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Every stdout line seen so far.
    pub fn history(&self) -> &[Value] {
        &self.history
    }

    fn report(&self) -> String {
        let lines: Vec<String> = self.history.iter().map(Value::to_string).collect();
        format!(
            "\n--- peer stdout ---\n{}\n--- peer stderr ---\n{}",
            lines.join("\n"),
            self.stderr()
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A bare-bones CP for tests that talk OSDP to the peer directly: one PD, plain frames, CRC-16,
/// the mark byte, sequence 0 first and then 1, 2, 3, 1, ...
pub struct RawCp {
    /// The line (the pty master).
    pub port: SerialStream,
    /// The PD's address.
    pub address: u8,
    reader: FrameReader,
    next_seq: u8,
}

impl RawCp {
    /// A CP for the PD at `address` on `port`; its first command carries sequence 0.
    pub fn new(port: SerialStream, address: u8) -> RawCp {
        RawCp {
            port,
            address,
            reader: FrameReader::crc_only(),
            next_seq: 0,
        }
    }

    /// Sends `cmd` and waits up to `timeout` for the PD's reply frame: `None` if none came.
    /// Panics on a reply from another address or with another sequence number.
    ///
    /// The sequence number advances only when a reply comes: after a timeout the next command
    /// reuses it. A libosdp PD NAKs (0x04) a command whose sequence is neither its last one + 1
    /// nor a repeat, so after a frame it never saw (dropped as too long, lost on the line) the
    /// next sequence number would be refused.
    pub async fn try_exchange(&mut self, cmd: &Command, timeout: Duration) -> Option<Frame> {
        let address = self.address;
        self.try_exchange_frame(|seq| cmd.to_frame(address, seq), timeout)
            .await
    }

    /// Like [`RawCp::try_exchange`] for a frame `build` makes from the sequence number (a
    /// Secure Channel frame, say).
    pub async fn try_exchange_frame(
        &mut self,
        build: impl FnOnce(u8) -> Frame,
        timeout: Duration,
    ) -> Option<Frame> {
        let seq = self.next_seq;
        let frame = build(seq);
        let code = frame.code;
        write_frame(&mut self.port, &frame, true)
            .await
            .unwrap_or_else(|e| panic!("writing command {code:#04x}: {e}"));
        let reply =
            match tokio::time::timeout(timeout, self.reader.read_frame(&mut self.port)).await {
                Err(_) => {
                    self.reader.line_idle();
                    return None;
                }
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) => panic!("the line closed waiting for the reply to {code:#04x}"),
                Ok(Err(e)) => panic!("reading the reply to {code:#04x}: {e}"),
            };
        assert!(reply.reply, "a command frame came back: {reply:?}");
        assert_eq!(reply.address, self.address, "reply from another address");
        assert_eq!(
            reply.sequence, seq,
            "reply with another sequence to {code:#04x}: {reply:?}"
        );
        self.next_seq = if seq >= 3 { 1 } else { seq + 1 };
        Some(reply)
    }

    /// [`RawCp::try_exchange_frame`] that panics when no reply comes in [`REPLY_TIMEOUT`].
    pub async fn exchange_frame(&mut self, build: impl FnOnce(u8) -> Frame) -> Frame {
        self.try_exchange_frame(build, REPLY_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no reply within {REPLY_TIMEOUT:?}"))
    }

    /// Sends `cmd` and returns the decoded reply; panics if none comes within
    /// [`REPLY_TIMEOUT`] or it does not decode.
    pub async fn exchange(&mut self, cmd: &Command) -> Reply {
        let frame = self
            .try_exchange(cmd, REPLY_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no reply to {cmd:?} within {REPLY_TIMEOUT:?}"));
        Reply::from_frame(&frame).unwrap_or_else(|e| panic!("bad reply {frame:?}: {e}"))
    }

    /// POLLs (every 20 ms) until a reply other than ACK comes, up to `deadline`; returns it.
    pub async fn poll_until_reply(&mut self, deadline: Duration) -> Reply {
        let end = Instant::now() + deadline;
        loop {
            match self.exchange(&Command::Poll).await {
                Reply::Ack => {}
                other => return other,
            }
            assert!(Instant::now() < end, "only ACKs to POLL for {deadline:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

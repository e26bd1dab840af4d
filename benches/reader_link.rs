//! The reader-link performance benchmark: `cargo bench --bench reader_link`.
//!
//! Simulated readers (`doorhub::sim`, paced at wire speed: each reply waits the transmit time of
//! the command and of the reply at 10 bits a byte) sit on a pty pair, behind a counting proxy
//! that copies every byte between the pty master and the simulator and parses copies of them into
//! frames, timed as they pass. Every scenario starts its own mosquitto (the test harness's). A
//! summary table at the end compares the figures with the goals. A missed goal is reported, not
//! fatal; an error or a timeout panics (exit status non-zero).
//!
//! 1. Revoking one card at a door holding 10,000 credentials (one stored door, 115,200 baud): the
//!    exchanges and bytes on the wire from publishing the revocation to `reported.applied`.
//! 2. A full table of 10,000 credentials at 115,200 baud, to a reader with a 1,440-byte and with
//!    a 256-byte receive buffer: the transfer time against the line's time for the table's bytes.
//! 3. Revocation latency with 8 stored doors on one bus, at 115,200 and at 9,600 baud.
//! 4. The daemon's CPU while idly polling 32 readers on one 115,200 bus (the release binary).
//!
//! Scenarios 1-3 run the daemon in this process, on a tokio runtime of its own (one worker per
//! core, as the binary), apart from the runtime of the simulators, the proxies and the bench's
//! MQTT clients. Its log (info, the binary's default level) goes to a file.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/report.rs"]
mod report;

use daemon::{Process, binary, init_logging, start_daemon, stop_daemon};
use report::{Row, cpu_model, ms, print_table};

use std::process::Command as Program;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hub::{Hub, credentials, publish_snapshot, topic};
use common::{Broker, Subscriber};
use doorhub::osdp::message::{
    CMD_ABORT, CMD_CAP, CMD_FILETRANSFER, CMD_ID, CMD_MFG, CMD_POLL, Command, REPLY_ACK,
    REPLY_BUSY, REPLY_FTSTAT, REPLY_MFGREP, REPLY_NAK, REPLY_PDCAP, REPLY_PDID, Reply,
};
use doorhub::osdp::stream::FrameReader;
use doorhub::push::file::full_table_files;
use doorhub::push::mfg::MfgReply;
use doorhub::sim::{Mode, Reader, ReaderOptions, Script};
use doorhub::snapshot::Credential;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_serial::{SerialPort, SerialStream};

/// How long any one wait may take before the bench fails.
const TIMEOUT: Duration = Duration::from_secs(60);
/// A door whose reader gets no sync command for this long while its version is outstanding
/// has stalled.
const STALL: Duration = Duration::from_secs(5);
/// The fast line.
const FAST: u32 = 115_200;
/// The slow line.
const SLOW: u32 = 9_600;
/// Bits per byte on the line: start, 8 data, stop.
const BITS_PER_BYTE: u64 = 10;
/// `bus.max_file_bytes`' default: the size of each table file.
const MAX_FILE_BYTES: usize = 4096;
/// Parts of a large snapshot on MQTT (as the cloud bench: about 96 KB each for 10,000).
const PARTS: usize = 5;

// Scenarios 1 and 2.
const TABLE: usize = 10_000;
const REVOKE_RUNS: usize = 5;
const REVOKE_BYTES_GOAL: usize = 200;
const REVOKE_TRIPS_GOAL: usize = 6;
const RATIO_GOAL_1440: f64 = 1.10;
const RATIO_GOAL_256: f64 = 1.25;

// Scenario 3.
const DOORS: usize = 8;
/// Credentials each of the 8 doors holds before the revocations.
const DOOR_TABLE: usize = 100;
const FAST_REVOCATIONS: usize = 100;
const SLOW_REVOCATIONS: usize = 30;
const FAST_P99_GOAL: Duration = Duration::from_millis(150);
const SLOW_P99_GOAL: Duration = Duration::from_millis(500);

// Scenario 4.
const IDLE_READERS: usize = 32;
const IDLE_TABLE: usize = 10;
const IDLE_WINDOW: Duration = Duration::from_secs(10);
const CPU_GOAL_PERCENT: f64 = 2.0;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks scenarios ("revoke", "table",
    // "latency", "9600", "cpu"), as in `cargo bench --bench reader_link -- cpu`.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));

    let log_path =
        std::env::temp_dir().join(format!("doorhub-bench-reader-{}.log", std::process::id()));
    init_logging(&log_path);

    let bench = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("doorhub reader-link benchmark");
    println!(
        "  {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
    );
    println!("  in-process daemon log (info): {}\n", log_path.display());

    // (figure order, row): the table is printed in the figures' order.
    let mut rows: Vec<(u32, Row)> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    if wanted("table") {
        rows.extend(table(&bench, 1440, false));
    }
    if wanted("table") || wanted("revoke") {
        // The revocations (1) run on the door the 256-byte table (2b) filled.
        rows.extend(table(&bench, 256, true));
    }
    if wanted("latency-115200") {
        rows.extend(latency(
            &bench,
            FAST,
            FAST_REVOCATIONS,
            FAST_P99_GOAL,
            30,
            &mut errors,
        ));
    }
    if wanted("latency-9600") {
        rows.extend(latency(
            &bench,
            SLOW,
            SLOW_REVOCATIONS,
            SLOW_P99_GOAL,
            31,
            &mut errors,
        ));
    }
    if wanted("cpu") {
        rows.extend(cpu(&bench));
    }
    rows.sort_by_key(|(order, _)| *order);
    let rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
    print_table(&rows);
    if errors.is_empty() {
        let _ = std::fs::remove_file(&log_path);
    } else {
        eprintln!("\nbench errors (the in-process daemon's log is kept):");
        for e in &errors {
            eprintln!("  {e}");
        }
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// The line: simulated readers behind a counting proxy

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Hub to reader.
    Command = 0,
    /// Reader to hub.
    Reply = 1,
}

/// One frame the proxy passed on.
#[derive(Debug, Clone)]
struct Seen {
    /// When its last byte reached the proxy.
    at: Instant,
    dir: Dir,
    address: u8,
    sequence: u8,
    code: u8,
    data: Vec<u8>,
    /// Bytes on the wire: the frame with its mark byte (and any noise before it).
    bytes: usize,
}

/// What the proxy has seen.
#[derive(Default)]
struct Tap {
    frames: Vec<Seen>,
    /// All bytes each way.
    bytes: [u64; 2],
}

/// Simulated readers on one pty pair, the hub's side being `path`.
struct Line {
    path: String,
    tap: Arc<Mutex<Tap>>,
    tasks: Vec<JoinHandle<()>>,
    _script: mpsc::Sender<Script>,
    _slave: SerialStream,
}

impl Line {
    /// Starts the readers and the proxy on the current runtime.
    fn start(readers: Vec<ReaderOptions>) -> Line {
        let (master, slave) = SerialStream::pair().expect("a pty pair");
        let path = slave.name().expect("the pty slave has a path");
        let (script, script_rx) = mpsc::channel(8);
        // Nobody listens to the simulator's events: sending to a closed channel is a no-op.
        let (events_tx, _) = mpsc::unbounded_channel();
        let (near, far) = tokio::io::duplex(8192);
        let tap = Arc::new(Mutex::new(Tap::default()));
        let reader = Reader::multidrop(readers);
        let (mr, mw) = tokio::io::split(master);
        let (sr, sw) = tokio::io::split(near);
        let tasks = vec![
            tokio::spawn(pump(mr, sw, Dir::Command, tap.clone())),
            tokio::spawn(pump(sr, mw, Dir::Reply, tap.clone())),
            tokio::spawn(async move {
                let _ = reader.run(far, script_rx, events_tx).await;
            }),
        ];
        Line {
            path,
            tap,
            tasks,
            _script: script,
            _slave: slave,
        }
    }

    /// The exchanges whose command passed within `[from, to]`, for `address` (or all).
    fn exchanges(&self, address: Option<u8>, from: Instant, to: Instant) -> Vec<Exchange> {
        let tap = self.tap.lock().unwrap();
        // Frames from `from` on, and replies up to a second after `to`.
        let start = tap.frames.partition_point(|f| f.at < from);
        let end = tap
            .frames
            .partition_point(|f| f.at <= to + Duration::from_secs(1));
        pair(&tap.frames[start..end.max(start)])
            .into_iter()
            .filter(|e| e.at <= to && address.is_none_or(|a| a == e.address))
            .collect()
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Copies `from` to `to`, recording every frame in the bytes (parsed from a copy).
async fn pump<R, W>(mut from: R, mut to: W, dir: Dir, tap: Arc<Mutex<Tap>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = FrameReader::new();
    let mut buf = vec![0u8; 4096];
    // Bytes pushed into `frames`, and bytes accounted to frames so far.
    let (mut pushed, mut taken) = (0usize, 0usize);
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let at = Instant::now();
        let chunk = &buf[..n];
        frames.push(chunk);
        pushed += n;
        {
            let mut tap = tap.lock().unwrap();
            tap.bytes[dir as usize] += n as u64;
            while let Some(f) = frames.next_frame() {
                let done = pushed - frames.pending();
                tap.frames.push(Seen {
                    at,
                    dir,
                    address: f.address,
                    sequence: f.sequence,
                    code: f.code,
                    data: f.data,
                    bytes: done - taken,
                });
                taken = done;
            }
        }
        if to.write_all(chunk).await.is_err() || to.flush().await.is_err() {
            return;
        }
    }
}

/// A command and its reply.
#[derive(Debug, Clone)]
struct Exchange {
    /// When the command passed the proxy.
    at: Instant,
    /// When its reply passed the proxy (`None`: no reply).
    end: Option<Instant>,
    address: u8,
    sequence: u8,
    command: u8,
    command_data: Vec<u8>,
    command_bytes: usize,
    reply: Option<u8>,
    reply_data: Vec<u8>,
    reply_bytes: usize,
}

impl Exchange {
    fn bytes(&self) -> usize {
        self.command_bytes + self.reply_bytes
    }

    /// A reply that is an MFGREP, decoded.
    fn mfgrep(&self) -> Option<MfgReply> {
        if self.reply != Some(REPLY_MFGREP) {
            return None;
        }
        match Reply::decode(REPLY_MFGREP, &self.reply_data) {
            Ok(Reply::MfgRep(m)) => MfgReply::decode(&m.data).ok(),
            _ => None,
        }
    }

    /// The table version of a STATE reply.
    fn state_version(&self) -> Option<u64> {
        match self.mfgrep() {
            Some(MfgReply::State { version, .. }) => Some(version),
            _ => None,
        }
    }

    /// Part of a table sync: any command but POLL, or a POLL that brought a STATE or ERROR.
    fn is_sync(&self) -> bool {
        self.command != CMD_POLL
            || matches!(
                self.mfgrep(),
                Some(MfgReply::State { .. } | MfgReply::Error { .. })
            )
    }

    /// (file type, total size, offset, fragment bytes) of a FILETRANSFER.
    fn file_transfer(&self) -> Option<(u8, u32, u32, usize)> {
        if self.command != CMD_FILETRANSFER {
            return None;
        }
        match Command::decode(CMD_FILETRANSFER, &self.command_data) {
            Ok(Command::FileTransfer(ft)) => {
                Some((ft.file_type, ft.total_size, ft.offset, ft.data.len()))
            }
            _ => None,
        }
    }

    /// The command's name, with what came back when it tells more.
    fn name(&self) -> String {
        let command = match self.command {
            CMD_POLL => "POLL".to_owned(),
            CMD_ID => "ID".to_owned(),
            CMD_CAP => "CAP".to_owned(),
            CMD_ABORT => "ABORT".to_owned(),
            CMD_FILETRANSFER => match self.file_transfer() {
                Some((t, size, offset, len)) => format!(
                    "FILETRANSFER({} {size} B @{offset}+{len})",
                    if t == 0x81 { "delta" } else { "table" }
                ),
                None => "FILETRANSFER".to_owned(),
            },
            CMD_MFG => match self.command_data.get(3) {
                Some(1) => "MFG QUERY".to_owned(),
                Some(2) => "MFG TIME".to_owned(),
                _ => "MFG".to_owned(),
            },
            c => format!("0x{c:02X}"),
        };
        let reply = match (self.reply, self.mfgrep()) {
            (None, _) => "timeout".to_owned(),
            (_, Some(MfgReply::State { version, .. })) => format!("STATE v{version}"),
            (_, Some(MfgReply::Error { code, .. })) => format!("ERROR {code}"),
            (_, Some(_)) => "MFGREP".to_owned(),
            (Some(REPLY_ACK), _) => "ACK".to_owned(),
            (Some(REPLY_NAK), _) => "NAK".to_owned(),
            (Some(REPLY_BUSY), _) => "BUSY".to_owned(),
            (Some(REPLY_FTSTAT), _) => "FTSTAT".to_owned(),
            (Some(REPLY_PDID), _) => "PDID".to_owned(),
            (Some(REPLY_PDCAP), _) => "PDCAP".to_owned(),
            (Some(r), _) => format!("0x{r:02X}"),
        };
        format!("{command}->{reply}")
    }
}

/// Pairs each command with the reply that follows it from the same address and sequence.
fn pair(frames: &[Seen]) -> Vec<Exchange> {
    let mut out: Vec<Exchange> = Vec::new();
    for f in frames {
        match f.dir {
            Dir::Command => out.push(Exchange {
                at: f.at,
                end: None,
                address: f.address,
                sequence: f.sequence,
                command: f.code,
                command_data: f.data.clone(),
                command_bytes: f.bytes,
                reply: None,
                reply_data: Vec::new(),
                reply_bytes: 0,
            }),
            Dir::Reply => {
                if let Some(e) = out.last_mut()
                    && e.reply.is_none()
                    && e.address == f.address
                    && e.sequence == f.sequence
                {
                    e.end = Some(f.at);
                    e.reply = Some(f.code);
                    e.reply_data = f.data.clone();
                    e.reply_bytes = f.bytes;
                }
            }
        }
    }
    out
}

/// Time to send `bytes` at `baud`, 10 bits a byte.
fn wire(bytes: usize, baud: u32) -> Duration {
    Duration::from_nanos(bytes as u64 * BITS_PER_BYTE * 1_000_000_000 / u64::from(baud))
}

/// Where the time of a run of exchanges went.
struct Breakdown {
    /// Time from the first command to the last reply.
    span: Duration,
    /// Bytes both ways.
    bytes: usize,
    /// The line's time for those bytes.
    busy: Duration,
    /// Σ (reply − command − wire time of both): what the simulator's pacing took beyond the
    /// wire time (its timer rounds each sleep up to the next millisecond).
    sim_extra: Duration,
    /// Σ (next command − previous reply): the hub's turnaround.
    hub_gap: Duration,
}

fn breakdown(exchanges: &[Exchange], baud: u32) -> Breakdown {
    let bytes: usize = exchanges.iter().map(Exchange::bytes).sum();
    let mut sim_extra = Duration::ZERO;
    let mut hub_gap = Duration::ZERO;
    let mut last_end: Option<Instant> = None;
    for e in exchanges {
        if let Some(prev) = last_end {
            hub_gap += e.at.saturating_duration_since(prev);
        }
        if let Some(end) = e.end {
            sim_extra += (end - e.at).saturating_sub(wire(e.bytes(), baud));
        }
        last_end = e.end.or(last_end);
    }
    let span = match (exchanges.first(), exchanges.last().and_then(|e| e.end)) {
        (Some(first), Some(end)) => end - first.at,
        _ => Duration::ZERO,
    };
    Breakdown {
        span,
        bytes,
        busy: wire(bytes, baud),
        sim_extra,
        hub_gap,
    }
}

/// Counts of exchanges by name, in order of first appearance: "FILETRANSFER(...)->FTSTAT x3".
fn by_name(exchanges: &[&Exchange]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for e in exchanges {
        let mut name = e.name();
        // Fragments of a table differ only in offset: count them as one kind.
        if let Some(cut) = name.find(" @") {
            let close = name[cut..].find(')').map_or(name.len(), |c| cut + c);
            name.replace_range(cut..close, "");
        }
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
        .iter()
        .map(|(n, c)| {
            if *c > 1 {
                format!("{n} x{c}")
            } else {
                n.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// The daemon and MQTT

/// Waits until `door` reports `applied` ≥ `version` (panics after `deadline`); returns when.
async fn applied(sub: &mut Subscriber, door: &str, version: u64, deadline: Duration) -> Instant {
    let t = topic(&format!("doors/{door}/reported"));
    sub.wait_for(deadline, |m| {
        m.topic == t && m.json()["applied"].as_u64().is_some_and(|a| a >= version)
    })
    .await;
    Instant::now()
}

/// A door that stopped making progress: what its reader got meanwhile.
struct Stall {
    door: String,
    version: u64,
    /// The reader's exchanges in the last [`STALL`], by name.
    exchanges: String,
    /// How often the reader got the line in that time (the bus's round-robin cycle).
    cycle: Duration,
}

/// Waits until `door` (at `address`) reports `applied` ≥ `version`; a stall if its reader has
/// had no FILETRANSFER, QUERY or STATE for [`STALL`] meanwhile (panics after [`TIMEOUT`]).
async fn applied_or_stall(
    sub: &mut Subscriber,
    line: &Line,
    door: &str,
    address: u8,
    version: u64,
) -> Result<Instant, Stall> {
    let t = topic(&format!("doors/{door}/reported"));
    let start = Instant::now();
    loop {
        let wait = sub.wait_for(TIMEOUT, |m| {
            m.topic == t && m.json()["applied"].as_u64().is_some_and(|a| a >= version)
        });
        // `wait_for` keeps what arrives in its backlog, so cancelling it loses nothing.
        if tokio::time::timeout(Duration::from_secs(1), wait)
            .await
            .is_ok()
        {
            return Ok(Instant::now());
        }
        let now = Instant::now();
        if now - start < STALL {
            continue;
        }
        let recent = line.exchanges(Some(address), now - STALL, now);
        if recent.iter().any(Exchange::is_sync) {
            assert!(
                now - start < TIMEOUT,
                "{door} v{version}: not applied within {TIMEOUT:?}"
            );
            continue;
        }
        // The exchange still in flight at `now` is left out.
        let refs: Vec<&Exchange> = recent.iter().filter(|e| e.end.is_some()).collect();
        return Err(Stall {
            door: door.to_owned(),
            version,
            exchanges: by_name(&refs),
            cycle: STALL / recent.len().max(1) as u32,
        });
    }
}

/// Waits until `door` reports its reader online.
async fn online(sub: &mut Subscriber, door: &str) {
    let t = topic(&format!("doors/{door}/reported"));
    sub.wait_for(TIMEOUT, |m| {
        m.topic == t && m.json()["reader"]["online"] == true
    })
    .await;
}

fn stored(address: u8, rx_buffer: u16, baud: u32) -> ReaderOptions {
    ReaderOptions {
        rx_buffer,
        baud: Some(baud),
        ..ReaderOptions::new(address, Mode::Stored)
    }
}

/// `set` without its card `i`.
fn without(set: &[Credential], i: usize) -> Vec<Credential> {
    let mut out = set.to_vec();
    out.remove(i);
    out
}

// ---------------------------------------------------------------------------------------------
// Scenarios 2 and 1: a full table, then revocations on the same door

fn table(bench: &Runtime, rx_buffer: u16, revoke: bool) -> Vec<(u32, Row)> {
    let letter = if rx_buffer >= 1440 { "a" } else { "b" };
    let goal = if rx_buffer >= 1440 {
        RATIO_GOAL_1440
    } else {
        RATIO_GOAL_256
    };
    println!(
        "[2{letter}] full table: {TABLE} credentials to one stored door at {FAST} baud, reader \
         receive buffer {rx_buffer} bytes, paced at wire speed"
    );
    let broker = Broker::start();
    let line = {
        let _g = bench.enter();
        Line::start(vec![stored(1, rx_buffer, FAST)])
    };
    let hub = Hub::with_bus(&broker, &line.path, FAST, &[("door", "stored", 1)], "");
    let (daemon_rt, daemon) = start_daemon(&hub);
    let set = credentials("t", TABLE);
    let files = full_table_files(1, &set, MAX_FILE_BYTES).expect("the table's files");
    let file_bytes: usize = files.iter().map(Vec::len).sum();
    let theory = wire(file_bytes, FAST);

    let mut rows = Vec::new();
    bench.block_on(async {
        let mut sub = Subscriber::connect(&broker, &[&topic("doors/+/reported")]).await;
        online(&mut sub, "door").await;
        // Let the coming-online commands (TIME, the first QUERY) pass.
        tokio::time::sleep(Duration::from_millis(300)).await;
        sub.drain();
        let start = Instant::now();
        publish_snapshot(&mut sub, "door", 1, &set, PARTS).await;
        let done = applied(&mut sub, "door", 1, TIMEOUT).await;
        let all = line.exchanges(Some(1), start, done);
        let first_ft = all
            .iter()
            .position(|e| e.command == CMD_FILETRANSFER)
            .expect("no FILETRANSFER seen");
        let last_state = all
            .iter()
            .rposition(|e| e.state_version() == Some(1))
            .expect("no STATE v1 seen");
        let span = &all[first_ft..=last_state];
        let b = breakdown(span, FAST);
        let ratio = b.span.as_secs_f64() / theory.as_secs_f64();
        let to_applied = done - start;

        let fts: Vec<&Exchange> = span
            .iter()
            .filter(|e| e.command == CMD_FILETRANSFER)
            .collect();
        let ft_data: usize = fts
            .iter()
            .filter_map(|e| e.file_transfer())
            .map(|f| f.3)
            .sum();
        let ft_command_bytes: usize = fts.iter().map(|e| e.command_bytes).sum();
        let ft_reply_bytes: usize = fts.iter().map(|e| e.reply_bytes).sum();
        let polls: Vec<&Exchange> = span.iter().filter(|e| !e.is_sync()).collect();
        let poll_bytes: usize = polls.iter().map(|e| e.bytes()).sum();
        let others: Vec<&Exchange> = span
            .iter()
            .filter(|e| e.is_sync() && e.command != CMD_FILETRANSFER)
            .collect();
        let other_bytes: usize = others.iter().map(|e| e.bytes()).sum();
        let exchanges = span.len();
        let turnaround = b.span.saturating_sub(b.busy);
        println!(
            "    table: {} files, {file_bytes} bytes = {} on the line at {FAST} baud",
            files.len(),
            ms(theory)
        );
        println!(
            "    publish -> applied {}; first FILETRANSFER -> final STATE {} = {ratio:.3} x the \
             table's time",
            ms(to_applied),
            ms(b.span)
        );
        println!(
            "    in that span: {exchanges} exchanges, {} bytes both ways = {} of line time \
             ({:.3} x the table's)",
            b.bytes,
            ms(b.busy),
            b.busy.as_secs_f64() / theory.as_secs_f64()
        );
        println!(
            "      {} fragments: {ft_data} data + {} overhead bytes (mark, header, transfer \
             header, CRC), FTSTAT replies {ft_reply_bytes} bytes",
            fts.len(),
            ft_command_bytes - ft_data
        );
        println!(
            "      {} POLLs between fragments ({poll_bytes} bytes); other sync exchanges \
             ({other_bytes} bytes): {}",
            polls.len(),
            by_name(&others)
        );
        println!(
            "      turnarounds {} ({:.2} ms per exchange): simulator timer beyond the wire time \
             {}, hub (reply -> next command) {}",
            ms(turnaround),
            turnaround.as_secs_f64() * 1000.0 / exchanges as f64,
            ms(b.sim_extra),
            ms(b.hub_gap)
        );
        rows.push((
            20 + u32::from(rx_buffer < 1440),
            Row::goal(
                &format!("2{letter}. 10k table, {rx_buffer}-byte buffer: time / line time"),
                format!("{ratio:.3} ({})", ms(b.span)),
                format!("<= {goal:.2}"),
                ratio <= goal,
            ),
        ));
        rows.push((
            20 + u32::from(rx_buffer < 1440),
            Row::info(
                "    bytes sent / table bytes; fragments; POLLs",
                format!(
                    "{:.3}; {}; {}",
                    b.bytes as f64 / file_bytes as f64,
                    fts.len(),
                    polls.len()
                ),
            ),
        ));
        rows.push((
            20 + u32::from(rx_buffer < 1440),
            Row::info(
                "    turnarounds (sim timer / hub) per exchange",
                format!(
                    "{:.2} / {:.2} ms",
                    b.sim_extra.as_secs_f64() * 1000.0 / exchanges as f64,
                    b.hub_gap.as_secs_f64() * 1000.0 / exchanges as f64
                ),
            ),
        ));
        rows.push((
            20 + u32::from(rx_buffer < 1440),
            Row::info("    publish -> applied", ms(to_applied)),
        ));
        println!();

        if revoke {
            rows.extend(revocations(&line, &mut sub, set).await);
        }
    });
    stop_daemon(daemon_rt, daemon);
    drop(line);
    drop(broker);
    rows
}

async fn revocations(
    line: &Line,
    sub: &mut Subscriber,
    mut set: Vec<Credential>,
) -> Vec<(u32, Row)> {
    println!(
        "[1] revoking one card at the door holding {TABLE} credentials (buffer 256, {FAST} baud, \
         paced), {REVOKE_RUNS} times"
    );
    // After the full table, the door is in sync and idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    struct Run {
        trips: usize,
        bytes: usize,
        span_polls: usize,
        span_poll_bytes: usize,
        polls_before: usize,
        polls_after: usize,
        window_bytes: usize,
        latency: Duration,
        sync_time: Duration,
        commands: String,
    }
    let mut runs = Vec::new();
    for run in 0..REVOKE_RUNS {
        let version = run as u64 + 2;
        set = without(&set, 1000 + 7 * run);
        sub.drain();
        let start = Instant::now();
        publish_snapshot(sub, "door", version, &set, PARTS).await;
        let done = applied(sub, "door", version, TIMEOUT).await;
        let all = line.exchanges(Some(1), start, done);
        let sync: Vec<&Exchange> = all.iter().filter(|e| e.is_sync()).collect();
        let (Some(first), Some(last)) = (sync.first(), sync.last()) else {
            panic!("revocation v{version}: no sync exchange seen");
        };
        let (from, to) = (first.at, last.end.unwrap_or(last.at));
        let polls: Vec<&Exchange> = all.iter().filter(|e| !e.is_sync()).collect();
        let during: Vec<&&Exchange> = polls.iter().filter(|e| e.at > from && e.at < to).collect();
        let r = Run {
            trips: sync.len(),
            bytes: sync.iter().map(|e| e.bytes()).sum(),
            span_polls: during.len(),
            span_poll_bytes: during.iter().map(|e| e.bytes()).sum(),
            polls_before: polls.iter().filter(|e| e.at < from).count(),
            polls_after: polls.iter().filter(|e| e.at > to).count(),
            window_bytes: all.iter().map(Exchange::bytes).sum(),
            latency: done - start,
            sync_time: to - from,
            commands: by_name(&sync),
        };
        println!(
            "    v{version}: {} sync exchanges, {} bytes: {}; POLLs: {} before, {} during \
             ({} bytes), {} after; window {} exchanges, {} bytes; sync {} of {} publish -> \
             applied",
            r.trips,
            r.bytes,
            r.commands,
            r.polls_before,
            r.span_polls,
            r.span_poll_bytes,
            r.polls_after,
            all.len(),
            r.window_bytes,
            ms(r.sync_time),
            ms(r.latency)
        );
        runs.push(r);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!();
    // The figure: the worst run (they are normally identical).
    let worst = runs
        .iter()
        .max_by_key(|r| (r.bytes + r.span_poll_bytes, r.trips + r.span_polls))
        .unwrap();
    let bytes = worst.bytes + worst.span_poll_bytes;
    let trips = worst.trips + worst.span_polls;
    let latencies: Vec<Duration> = runs.iter().map(|r| r.latency).collect();
    let lat = Stats::of(&latencies);
    vec![
        (
            10,
            Row::goal(
                "1. revoke 1 of 10k: bytes (sync + POLLs within it)",
                format!("{bytes} B"),
                format!("< {REVOKE_BYTES_GOAL} B"),
                bytes < REVOKE_BYTES_GOAL,
            ),
        ),
        (
            10,
            Row::goal(
                "1. revoke 1 of 10k: round trips",
                format!("{trips}"),
                format!("<= {REVOKE_TRIPS_GOAL}"),
                trips <= REVOKE_TRIPS_GOAL,
            ),
        ),
        (10, Row::info("    sync exchanges", worst.commands.clone())),
        (
            10,
            Row::info(
                "    idle POLLs publish -> applied (before/after)",
                format!(
                    "{} / {} ({} B in the whole window)",
                    worst.polls_before, worst.polls_after, worst.window_bytes
                ),
            ),
        ),
        (
            10,
            Row::info(
                "    publish -> applied p50 (sync on the line)",
                format!("{} ({})", ms(lat.p50), ms(worst.sync_time)),
            ),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: revocation latency, 8 doors on one bus

fn latency(
    bench: &Runtime,
    baud: u32,
    revocations: usize,
    goal: Duration,
    order: u32,
    errors: &mut Vec<String>,
) -> Vec<(u32, Row)> {
    println!(
        "[3] revocation latency: {DOORS} stored doors ({DOOR_TABLE} credentials each) on one bus \
         at {baud} baud, paced; {revocations} revocations round-robin"
    );
    let broker = Broker::start();
    let line = {
        let _g = bench.enter();
        Line::start((1..=DOORS as u8).map(|a| stored(a, 256, baud)).collect())
    };
    let names: Vec<String> = (1..=DOORS).map(|i| format!("door{i}")).collect();
    let doors: Vec<(&str, &str, u8)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), "stored", i as u8 + 1))
        .collect();
    let hub = Hub::with_bus(&broker, &line.path, baud, &doors, "");
    let (daemon_rt, daemon) = start_daemon(&hub);

    let outcome: Result<(Vec<Sample>, Duration), Stall> = bench.block_on(async {
        let mut sub = Subscriber::connect(&broker, &[&topic("doors/+/reported")]).await;
        let setup = Instant::now();
        let mut sets: Vec<Vec<Credential>> =
            names.iter().map(|n| credentials(n, DOOR_TABLE)).collect();
        for (n, set) in names.iter().zip(&sets) {
            publish_snapshot(&mut sub, n, 1, set, 1).await;
        }
        for (i, n) in names.iter().enumerate() {
            applied_or_stall(&mut sub, &line, n, i as u8 + 1, 1).await?;
        }
        let setup = setup.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut rng = fastrand::Rng::with_seed(3);
        let mut samples = Vec::new();
        for i in 0..revocations {
            let d = i % DOORS;
            let version = (i / DOORS) as u64 + 2;
            sets[d] = without(&sets[d], 3 + i / DOORS);
            // A random pause, so the revocations land anywhere in the polling cycle.
            tokio::time::sleep(Duration::from_micros(rng.u64(0..20_000))).await;
            sub.drain();
            let start = Instant::now();
            publish_snapshot(&mut sub, &names[d], version, &sets[d], 1).await;
            let address = d as u8 + 1;
            let done = applied_or_stall(&mut sub, &line, &names[d], address, version).await?;
            let all = line.exchanges(None, start, done);
            let mine: Vec<&Exchange> = all
                .iter()
                .filter(|e| e.address == address && e.is_sync())
                .collect();
            let first = mine.first().map_or(done, |e| e.at);
            let last = mine.last().and_then(|e| e.end).unwrap_or(done);
            let others = all
                .iter()
                .filter(|e| e.address != address && e.at > first && e.at < last)
                .count();
            samples.push(Sample {
                total: done - start,
                before: first - start,
                line: last - first,
                after: done - last,
                trips: mine.len(),
                others,
            });
        }
        Ok((samples, setup))
    });
    stop_daemon(daemon_rt, daemon);
    drop(line);
    drop(broker);
    let (samples, setup) = match outcome {
        Ok(s) => s,
        Err(stall) => {
            let what = format!(
                "{} v{} not applied: its reader had no sync command for {} s, only {} (it got \
                 the line every {} on average)",
                stall.door,
                stall.version,
                STALL.as_secs(),
                stall.exchanges,
                ms(stall.cycle)
            );
            println!("    STALLED: {what}\n");
            errors.push(format!("scenario 3 at {baud} baud: {what}"));
            return vec![
                (
                    order,
                    Row::goal(
                        &format!("3. revocation latency p99, 8 doors, {baud} baud"),
                        "never (stalled)".to_owned(),
                        format!("< {}", ms(goal)),
                        false,
                    ),
                ),
                (
                    order,
                    Row::info(
                        "    the stalled reader's exchanges in 5 s",
                        format!("{} (every {})", stall.exchanges, ms(stall.cycle)),
                    ),
                ),
            ];
        }
    };

    let pick = |f: fn(&Sample) -> Duration| -> Vec<Duration> { samples.iter().map(f).collect() };
    let total = pick(|s| s.total);
    let (p50, p99, max) = (pct(&total, 50.0), pct(&total, 99.0), pct(&total, 100.0));
    let before = pct(&pick(|s| s.before), 50.0);
    let on_line = pct(&pick(|s| s.line), 50.0);
    let after = pct(&pick(|s| s.after), 50.0);
    let others: Vec<usize> = samples.iter().map(|s| s.others).collect();
    let trips: Vec<usize> = samples.iter().map(|s| s.trips).collect();
    let median_others = median_usize(&others);
    println!("    setup: {DOORS} tables applied in {}", ms(setup));
    println!(
        "    publish -> applied: p50 {}  p99 {}  max {}  (n = {})",
        ms(p50),
        ms(p99),
        ms(max),
        samples.len()
    );
    println!(
        "    p50 of the parts: publish -> first sync command {}, first sync command -> final \
         STATE {}, final STATE -> reported {}",
        ms(before),
        ms(on_line),
        ms(after)
    );
    println!(
        "    the door's sync exchanges: {}-{}; other doors' exchanges during its sync: median {}, \
         max {}\n",
        trips.iter().min().unwrap(),
        trips.iter().max().unwrap(),
        median_others,
        others.iter().max().unwrap()
    );
    vec![
        (
            order,
            Row::goal(
                &format!("3. revocation latency p99, 8 doors, {baud} baud"),
                ms(p99),
                format!("< {}", ms(goal)),
                p99 < goal,
            ),
        ),
        (
            order,
            Row::info(
                "    p50 / max (n)",
                format!("{} / {} ({})", ms(p50), ms(max), samples.len()),
            ),
        ),
        (
            order,
            Row::info(
                "    p50: before sync / on the line / after",
                format!("{} / {} / {}", ms(before), ms(on_line), ms(after)),
            ),
        ),
        (
            order,
            Row::info(
                "    other doors' exchanges within the sync (p50)",
                format!("{median_others}"),
            ),
        ),
    ]
}

struct Sample {
    total: Duration,
    before: Duration,
    line: Duration,
    after: Duration,
    trips: usize,
    others: usize,
}

/// Nearest-rank percentile.
fn pct(values: &[Duration], p: f64) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn median_usize(values: &[usize]) -> usize {
    let mut v = values.to_vec();
    v.sort();
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------------
// Scenario 4: CPU while idly polling 32 readers (the release binary)

fn cpu(bench: &Runtime) -> Vec<(u32, Row)> {
    let bin = binary();
    println!(
        "[4] CPU of {} idly polling {IDLE_READERS} stored readers (in sync, {IDLE_TABLE} \
         credentials each) on one bus at {FAST} baud, paced; {} s",
        bin.display(),
        IDLE_WINDOW.as_secs()
    );
    let broker = Broker::start();
    let line = {
        let _g = bench.enter();
        Line::start(
            (1..=IDLE_READERS as u8)
                .map(|a| stored(a, 256, FAST))
                .collect(),
        )
    };
    let names: Vec<String> = (1..=IDLE_READERS).map(|i| format!("r{i:02}")).collect();
    let doors: Vec<(&str, &str, u8)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), "stored", i as u8 + 1))
        .collect();
    let hub = Hub::with_bus(&broker, &line.path, FAST, &doors, "");
    let mut child = Process::spawn(&bin, &hub);
    let pid = child.0.id();
    let tick = clock_ticks();

    let (daemon_ticks, own_ticks, wall, exchanges) = bench.block_on(async {
        let mut sub = Subscriber::connect(&broker, &[&topic("doors/+/reported")]).await;
        for n in &names {
            publish_snapshot(&mut sub, n, 1, &credentials(n, IDLE_TABLE), 1).await;
        }
        for n in &names {
            applied(&mut sub, n, 1, TIMEOUT).await;
        }
        // Let whatever follows the syncs (reported, health) pass.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (d0, s0, t0) = (
            cpu_ticks(pid),
            cpu_ticks(std::process::id()),
            Instant::now(),
        );
        tokio::time::sleep(IDLE_WINDOW).await;
        let (d1, s1, t1) = (
            cpu_ticks(pid),
            cpu_ticks(std::process::id()),
            Instant::now(),
        );
        let exchanges = line.exchanges(None, t0, t1);
        (d1 - d0, s1 - s0, t1 - t0, exchanges)
    });
    child.terminate(bench, &hub);
    drop(line);
    drop(broker);

    let secs = wall.as_secs_f64();
    let percent = daemon_ticks as f64 / tick as f64 / secs * 100.0;
    let own = own_ticks as f64 / tick as f64 / secs * 100.0;
    let polls = exchanges.iter().filter(|e| e.command == CMD_POLL).count();
    let other: Vec<&Exchange> = exchanges.iter().filter(|e| e.is_sync()).collect();
    let answered = exchanges.iter().filter(|e| e.reply.is_some()).count();
    let rate = polls as f64 / secs;
    let per_poll_us = daemon_ticks as f64 / tick as f64 * 1e6 / polls.max(1) as f64;
    let cycle = wire(9 + 8, FAST);
    println!(
        "    daemon CPU {percent:.2} % of one core over {:.1} s ({daemon_ticks} ticks of 1/{tick} \
         s); the bench process (simulators, proxy) {own:.1} %",
        secs
    );
    println!(
        "    {polls} POLLs = {rate:.0}/s ({:.1}/s per reader), {answered} answered, other \
         commands: {}; {per_poll_us:.1} us of daemon CPU per POLL; a POLL and its ACK take {} \
         of line time ({:.0}/s at most)\n",
        rate / IDLE_READERS as f64,
        if other.is_empty() {
            "none".to_owned()
        } else {
            by_name(&other)
        },
        ms(cycle),
        1.0 / cycle.as_secs_f64()
    );
    vec![
        (
            40,
            Row::goal(
                "4. CPU idly polling 32 readers, 115200 baud",
                format!("{percent:.2} %"),
                format!("< {CPU_GOAL_PERCENT:.0} %"),
                percent < CPU_GOAL_PERCENT,
            ),
        ),
        (
            40,
            Row::info(
                "    POLLs per second (per reader); CPU per POLL",
                format!(
                    "{rate:.0} ({:.1}); {per_poll_us:.1} us",
                    rate / IDLE_READERS as f64
                ),
            ),
        ),
    ]
}

/// utime + stime of a process, in clock ticks, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e} (did the process exit?)"));
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = &text[text.rfind(')').expect("a stat line") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of the line; the first after ')' is field 3.
    let field = |n: usize| -> u64 { fields[n - 3].parse().expect("a tick count") };
    field(14) + field(15)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    Program::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

// ---------------------------------------------------------------------------------------------
// Figures

struct Stats {
    p50: Duration,
}

impl Stats {
    fn of(times: &[Duration]) -> Stats {
        Stats {
            p50: pct(times, 50.0),
        }
    }
}

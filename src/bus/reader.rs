//! One reader on a bus, as the control panel sees it: whether it answers, what to send it next,
//! and what its replies mean (card reads, access events, tamper, the state of its table).
//!
//! Like [`super::sync`], this does no I/O: [`ReaderCtl::next`] picks the command, the bus task
//! sends it, [`ReaderCtl::on_reply`] or [`ReaderCtl::on_timeout`] take the outcome, and
//! [`ReaderCtl::take_effects`] hands over the reports and events it caused.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::secure::{Next as SecureNext, ReaderSecurity, SecureError};
use super::sync::{Line, Outcome, POLL_EVERY, SyncJob, Want, state_of};
use crate::config::{DoorConfig, DoorMode};
use crate::credset::SetView;
use crate::events::{AccessReason, Event, EventKind};
use crate::logging::ratelimit::RateLimit;
use crate::osdp::frame::Frame;
use crate::osdp::message::{
    Buz, CAP_COMMUNICATION_SECURITY, Command, Led, LedPermanent, LedTemporary, Manufacturer,
    NakReason, Out, Reply,
};
use crate::push::mfg::{MfgCommand, MfgReply, REASON_EXPIRED, REASON_NOT_YET_VALID, REASON_OK};
use crate::store::{SetState, Store};
use crate::sync::{DoorReport, Target};

/// An offline reader is probed with osdp_ID this often.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// The receive buffer assumed until the reader's PDCAP says otherwise.
pub const DEFAULT_RX_BUFFER: usize = 128;
/// TIME goes to a `stored` door on coming online and this often.
const TIME_EVERY: Duration = Duration::from_secs(3600);
/// Fragments lost in a row before the reader is taken to refuse the file.
const MAX_LOST_FRAGMENTS: u32 = 3;
/// Retries of a failed sync wait from 1 s, doubling, up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What a command was for, so its reply or timeout can be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// osdp_ID while the reader is offline or coming online.
    Probe,
    /// osdp_CAP while coming online.
    Caps,
    /// A POLL.
    Poll,
    /// A strike, LED or buzzer command after a decision.
    Signal,
    /// The hourly TIME.
    Time,
    /// A step of the table sync.
    Sync,
    /// A step of the Secure Channel handshake (CHLNG, SCRYPT, KEYSET).
    Handshake,
    /// A FILETRANSFER fragment.
    Fragment,
}

/// What a reply or timeout caused, for the bus task to pass on.
#[derive(Debug)]
pub enum Effect {
    /// A report for the engine.
    Report(DoorReport),
    /// An event for the outbox.
    Event(Event),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Offline,
    Caps,
    /// The Secure Channel handshake (doors with a key).
    Secure,
    Ready,
}

/// The control panel's view of one reader.
pub struct ReaderCtl {
    door: DoorConfig,
    vendor: [u8; 3],
    max_file_bytes: usize,
    offline_after: u32,
    verify_every: Duration,
    phase: Phase,
    /// The next sequence number; 0 resets the reader.
    seq: u8,
    /// The sequence number the last command used.
    last_seq: u8,
    /// The command to send again after a timeout, with the same sequence.
    resend: Option<(Command, Purpose)>,
    missed: u32,
    next_probe: Instant,
    rx_buffer: usize,
    /// No half-received file can be held by the reader.
    idle: bool,
    signals: VecDeque<Command>,
    time_due: Option<Instant>,
    last_poll: Instant,
    target: Option<watch::Receiver<Option<Target>>>,
    confirmed: Option<SetState>,
    job: Option<SyncJob>,
    /// Whether the hub confirmed the reader's state since it last came online.
    fresh: bool,
    /// After a failure: a full table only, not before this instant.
    retry: Option<(Instant, Duration)>,
    verify_at: Option<Instant>,
    store: Store,
    /// What replies and timeouts caused, until the bus task takes it.
    effects: Vec<Effect>,
    /// The Secure Channel, for a door with a key.
    security: Option<ReaderSecurity>,
    /// Whether `reader_online` was reported and `reader_offline` not since.
    announced: bool,
    /// Whether a fragment went out since the last POLL.
    fragment_since_poll: bool,
    /// The bus's line speed, for transmit times.
    baud: u32,
    /// Warnings that input on the line, or a damaged store, can repeat at every frame.
    warnings: Warnings,
}

/// One [`RateLimit`] per kind of warning a reader can repeat.
#[derive(Debug, Default)]
struct Warnings {
    security: RateLimit,
    set_unreadable: RateLimit,
}

impl ReaderCtl {
    /// A reader for `door`, offline until it answers.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        door: DoorConfig,
        vendor: [u8; 3],
        max_file_bytes: usize,
        offline_after: u32,
        verify_every: Duration,
        target: Option<watch::Receiver<Option<Target>>>,
        confirmed: Option<SetState>,
        store: Store,
    ) -> ReaderCtl {
        let now = Instant::now();
        ReaderCtl {
            door,
            vendor,
            max_file_bytes,
            offline_after: offline_after.max(1),
            verify_every,
            phase: Phase::Offline,
            seq: 0,
            last_seq: 0,
            resend: None,
            missed: 0,
            next_probe: now,
            rx_buffer: DEFAULT_RX_BUFFER,
            idle: false,
            signals: VecDeque::new(),
            time_due: None,
            last_poll: now,
            target,
            confirmed,
            job: None,
            fresh: false,
            retry: None,
            verify_at: None,
            store,
            effects: Vec::new(),
            security: None,
            announced: false,
            fragment_since_poll: false,
            baud: 9600,
            warnings: Warnings::default(),
        }
    }

    /// Sets the line speed (for transmit times; 9600 until told).
    pub fn with_baud(mut self, baud: u32) -> ReaderCtl {
        self.baud = baud.max(1);
        self
    }

    /// The time `bytes` take on the wire: 10 bits a byte.
    fn wire_time(&self, bytes: usize) -> Duration {
        Duration::from_micros(bytes as u64 * 10_000_000 / u64::from(self.baud))
    }

    /// Whether this reader uses the Secure Channel.
    pub fn secure(&self) -> bool {
        self.security.is_some()
    }

    /// Runs this reader over the Secure Channel.
    pub fn with_security(mut self, security: ReaderSecurity) -> ReaderCtl {
        self.security = Some(security);
        self
    }

    /// Builds the frame for `cmd` (sealed once the Secure Channel is up).
    pub fn frame(&mut self, cmd: &Command, seq: u8) -> Result<Frame, SecureError> {
        match self.security.as_mut() {
            Some(sc) => sc.frame(cmd, self.door.address, seq),
            None => Ok(cmd.to_frame(self.door.address, seq)),
        }
    }

    /// Reads a reply frame (opened, for a sealed one).
    pub fn decode(&mut self, frame: &Frame) -> Result<Reply, String> {
        match self.security.as_mut() {
            Some(sc) => sc.reply(frame).map_err(|e| e.to_string()),
            None => Reply::from_frame(frame).map_err(|e| e.to_string()),
        }
    }

    /// The Secure Channel failed (a bad MAC or cryptogram, a frame that could not be sealed):
    /// the handshake starts again, from sequence 0.
    pub fn security_failed(&mut self, why: &str, now: Instant) {
        if let Some(more) = self.warnings.security.check(now.into_std()) {
            warn!(door = %self.door.id, "{why}; starting it again{more}");
        }
        if let Some(sc) = self.security.as_mut() {
            sc.reset();
        }
        self.seq = 0;
        self.resend = None;
        self.idle = false;
        if self.phase == Phase::Ready {
            self.phase = Phase::Secure;
        }
        self.missed += 1;
        if self.missed >= self.offline_after && self.phase != Phase::Offline {
            self.go_offline(now);
        }
    }

    /// Takes the reports and events caused since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The reader's address.
    pub fn address(&self) -> u8 {
        self.door.address
    }

    /// The door's id.
    pub fn door(&self) -> &str {
        &self.door.id
    }

    /// Whether the reader answers.
    pub fn online(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// When an offline reader is next probed.
    pub fn next_probe(&self) -> Instant {
        self.next_probe
    }

    /// Whether the reader wants the line now (an online reader always does).
    pub fn due(&self, now: Instant) -> bool {
        self.phase != Phase::Offline || now >= self.next_probe
    }

    /// Whether this reader has a strike, LED or buzzer command waiting: it goes first.
    pub fn urgent(&self) -> bool {
        !self.signals.is_empty() && self.online()
    }

    /// The table transfer under way to this door, if any.
    pub fn transfer(&self) -> Option<super::sync::Progress> {
        self.job.as_ref().and_then(SyncJob::progress)
    }

    /// Whether a sync that removes a card is under way: revocations go first.
    pub fn revoking(&self) -> bool {
        self.job.as_ref().is_some_and(|j| j.revokes)
    }

    /// The sequence number for the next command, advancing the counter.
    pub fn take_seq(&mut self) -> u8 {
        let s = self.seq;
        self.last_seq = s;
        self.seq = if self.seq >= 3 { 1 } else { self.seq + 1 };
        s
    }

    /// What to send now, and what for. A command that timed out is sent again first. `hold` keeps this reader's table sync waiting while another door's revocation goes first.
    pub fn next(&mut self, now: Instant, hold: bool) -> (Command, Purpose) {
        if let Some((cmd, purpose)) = self.resend.take() {
            return (cmd, purpose);
        }
        if self.phase == Phase::Ready && self.security.as_ref().is_some_and(|sc| !sc.established())
        {
            // The reader dropped the session (a plain NAK): nothing goes in the clear, the
            // handshake runs again first, from sequence 0.
            self.phase = Phase::Secure;
            self.seq = 0;
            self.idle = false;
        }
        match self.phase {
            Phase::Offline => return (Command::Id, Purpose::Probe),
            Phase::Caps => return (Command::Cap, Purpose::Caps),
            Phase::Secure => {
                let step = match self.security.as_mut() {
                    Some(sc) => sc.step(),
                    None => Ok(SecureNext::Ready),
                };
                match step {
                    Ok(SecureNext::Send(cmd)) => return (cmd, Purpose::Handshake),
                    Ok(SecureNext::Ready) => self.come_online(now),
                    Err(e) => {
                        self.security_failed(&e.to_string(), now);
                        return (Command::Poll, Purpose::Poll);
                    }
                }
            }
            Phase::Ready => {}
        }
        if let Some(cmd) = self.signals.pop_front() {
            return (cmd, Purpose::Signal);
        }
        if self.door.mode == DoorMode::Stored && self.time_due.is_some_and(|t| now >= t) {
            self.time_due = Some(now + TIME_EVERY);
            let unix = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let data = MfgCommand::Time { unix_seconds: unix }.encode();
            return (self.mfg(data), Purpose::Time);
        }
        if hold {
            return (Command::Poll, Purpose::Poll);
        }
        self.start_job(now);
        let line = self.line();
        let transferring = self.job.as_ref().is_some_and(SyncJob::transferring);
        // Keep the reader's events flowing during a long table: a POLL between fragments, early
        // enough that the next fragment's exchange would not take the gap past 250 ms. At least
        // one fragment goes between two POLLs, so a slow or busy line still makes progress.
        let fragment_exchange = self.wire_time(line.rx_buffer + 40);
        if transferring
            && self.fragment_since_poll
            && now.duration_since(self.last_poll) + fragment_exchange >= POLL_EVERY
        {
            return (Command::Poll, Purpose::Poll);
        }
        if let Some(job) = self.job.as_mut() {
            match job.next(&line, now) {
                Ok(Want::Query) => {
                    let data = MfgCommand::Query.encode();
                    return (self.mfg(data), Purpose::Sync);
                }
                Ok(Want::Abort) => return (Command::Abort, Purpose::Sync),
                Ok(Want::Fragment(cmd)) => {
                    self.fragment_since_poll = true;
                    return (cmd, Purpose::Fragment);
                }
                Ok(Want::Poll) => {}
                Err(outcome) => {
                    // Only a failure comes out of `next`.
                    if let Outcome::Failed(reason) = outcome {
                        self.fail_later(reason, now);
                    }
                }
            }
        }
        (Command::Poll, Purpose::Poll)
    }

    fn mfg(&self, data: Vec<u8>) -> Command {
        Command::Mfg(Manufacturer {
            vendor: self.vendor,
            data,
        })
    }

    fn line(&self) -> Line {
        Line {
            rx_buffer: self.rx_buffer,
            max_file_bytes: self.max_file_bytes,
            idle: self.idle,
            secure: self
                .security
                .as_ref()
                .is_some_and(ReaderSecurity::established),
        }
    }

    /// Starts a sync when the door's target is not what the reader was last confirmed holding,
    /// or a verification is due, unless a retry is still backing off.
    fn start_job(&mut self, now: Instant) {
        if self.job.is_some() || self.door.mode != DoorMode::Stored {
            return;
        }
        if self.retry.is_some_and(|(at, _)| now < at) {
            return;
        }
        let Some(rx) = self.target.as_mut() else {
            return;
        };
        let target = *rx.borrow_and_update();
        let Some(target) = target else { return };
        let confirmed_target = self
            .confirmed
            .is_some_and(|c| c.version == target.version && c.digest == target.digest);
        let verify = self.verify_at.is_some_and(|t| now >= t);
        if confirmed_target && !verify && self.retry.is_none() {
            return;
        }
        let blob = match self.store.set_blob(&self.door.id) {
            Ok(Some(blob)) => blob,
            Ok(None) => return,
            Err(e) => {
                if let Some(more) = self.warnings.set_unreadable.check(now.into_std()) {
                    warn!(door = %self.door.id, "cannot read the desired set: {e}{more}");
                }
                return;
            }
        };
        if SetView::new(&blob).map(|v| v.version()).ok() != Some(target.version) {
            // The store moved on since the target was read: the next target brings it.
            return;
        }
        self.verify_at = None;
        let revokes = self.confirmed.is_some() && self.removes_cards(&blob);
        debug!(door = %self.door.id, version = target.version, revokes, "sync");
        let mut job = SyncJob::new(target, blob, self.retry.is_some());
        job.revokes = revokes;
        if self.fresh
            && !verify
            && let Some(confirmed) = self.confirmed
            && let Ok(Some(confirmed_blob)) = self.store.applied_set_blob(&self.door.id)
        {
            job.skip_query(confirmed, &confirmed_blob, &self.line());
        }
        self.job = Some(job);
    }

    /// Whether going from the confirmed set to `blob` takes any card away.
    fn removes_cards(&self, blob: &sled::IVec) -> bool {
        let from = self.store.applied_set_blob(&self.door.id).ok().flatten();
        let decode = |b: &sled::IVec| SetView::new(b).and_then(|v| v.to_vec()).ok();
        match (from.as_ref().and_then(decode), decode(blob)) {
            (Some(from), Some(to)) => crate::push::file::removes_any(&from, &to),
            // Unknown: treat it as urgent rather than let a revocation wait.
            _ => true,
        }
    }

    fn fail_later(&mut self, reason: String, now: Instant) {
        let backoff = self
            .retry
            .map_or(Duration::from_secs(1), |(_, d)| (d * 2).min(MAX_BACKOFF));
        self.retry = Some((now + backoff, backoff));
        self.idle = false;
        self.fresh = false;
        let version = self.job.take().map_or(0, |j| j.target.version);
        warn!(door = %self.door.id, version, "sync failed, retrying in {backoff:?}: {reason}");
        self.effects.push(Effect::Report(DoorReport::Failed {
            door: self.door.id.clone(),
            version,
            reason,
        }));
    }

    /// A reply arrived for a command sent for `purpose`.
    pub fn on_reply(&mut self, cmd: Command, purpose: Purpose, reply: Reply, now: Instant) {
        self.missed = 0;
        if purpose == Purpose::Poll {
            self.last_poll = now;
            self.fragment_since_poll = false;
        }
        match (purpose, reply) {
            (_, Reply::Busy) => {
                // Not now: the same command again, with the same sequence number.
                self.seq = self.last_seq;
                if purpose != Purpose::Fragment {
                    self.resend = Some((cmd, purpose));
                } else if let Some(job) = self.job.as_mut() {
                    job.on_fragment_lost();
                    self.idle = false;
                }
            }
            (Purpose::Handshake, Reply::Nak(NakReason::SecureChannelUnsupported)) => {
                self.security_problem(SecureError::Unsupported, now);
            }
            (Purpose::Probe | Purpose::Caps | Purpose::Handshake, Reply::Nak(reason)) => {
                // Answers, but not as a reader we can use: try again at the next probe.
                debug!(door = %self.door.id, ?reason, "NAK while coming online");
                if let Some(sc) = self.security.as_mut() {
                    sc.reset();
                }
                if self.announced {
                    self.go_offline(now);
                } else {
                    self.phase = Phase::Offline;
                    self.seq = 0;
                    self.next_probe = now + PROBE_EVERY;
                }
            }
            (_, Reply::Nak(reason)) => {
                debug!(door = %self.door.id, ?reason, "NAK");
                if reason == NakReason::from(4) {
                    // Sequence error: start over from sequence 0.
                    self.seq = 0;
                }
                if matches!(purpose, Purpose::Sync | Purpose::Fragment) && self.job.is_some() {
                    self.fail_later(format!("the reader refused ({reason:?})"), now);
                }
            }
            (Purpose::Probe, Reply::PdId(id)) => {
                debug!(door = %self.door.id, ?id, "identified");
                self.phase = Phase::Caps;
            }
            (Purpose::Probe, _) => self.phase = Phase::Caps,
            (Purpose::Handshake, _) => {
                if let Some(stop) = self.security.as_mut().and_then(ReaderSecurity::take_stop) {
                    self.security_problem(stop, now);
                }
            }
            (Purpose::Caps, reply) => {
                // A PD that lists communication security without AES-128 cannot run it; one
                // that does not list it at all is still tried (it NAKs CHLNG if it cannot).
                let mut unsupported = false;
                if let Reply::PdCap(cap) = &reply {
                    if let Some(size) = cap.receive_buffer_size() {
                        self.rx_buffer = usize::from(size).max(32);
                    }
                    unsupported = cap.get(CAP_COMMUNICATION_SECURITY).is_some()
                        && !cap.supports_secure_channel();
                }
                match self.security.as_mut().map(|sc| (sc.check_start(), sc)) {
                    None => self.come_online(now),
                    Some(_) if unsupported => self.security_problem(SecureError::Unsupported, now),
                    Some((Err(e), _)) => self.security_problem(e, now),
                    Some((Ok(()), sc)) => {
                        // Sequence 0 ended any earlier session on the reader's side too.
                        sc.reset();
                        self.phase = Phase::Secure;
                    }
                }
            }
            (Purpose::Sync, Reply::Ack) => {
                if let Some(job) = self.job.as_mut() {
                    // The ACK of an ABORT (the reader holds no half file) or of a QUERY.
                    if job.on_abort_ack() {
                        self.idle = true;
                    } else {
                        job.on_query_ack(now);
                    }
                }
            }
            (Purpose::Fragment, reply) if !matches!(reply, Reply::FtStat(_)) => {
                // Not an answer to the fragment: it may have been counted or not, so the file
                // starts again after an ABORT.
                self.idle = false;
                if let Some(job) = self.job.as_mut() {
                    job.on_fragment_lost();
                }
                self.on_poll_reply(reply, now);
            }
            (Purpose::Fragment, Reply::FtStat(st)) => {
                let line = self.line();
                if st.status >= 0 {
                    if let Some(job) = self.job.as_mut() {
                        job.on_fragment_ok(&line);
                    }
                } else {
                    self.fail_later(
                        format!("the reader refused the file (FTSTAT status {})", st.status),
                        now,
                    );
                }
            }
            (_, reply) => self.on_poll_reply(reply, now),
        }
    }

    /// Replies that can come to any POLL: card reads, access events, the table state, tamper.
    fn on_poll_reply(&mut self, reply: Reply, now: Instant) {
        match reply {
            Reply::Raw(raw) if self.door.mode == DoorMode::Hub => {
                let bits = u8::try_from(raw.bits).unwrap_or(0);
                self.decide(bits, &raw.data);
            }
            Reply::LStatR(st) if st.tamper != 0 => self.event(EventKind::Tamper),
            Reply::MfgRep(m) if m.vendor == self.vendor => match MfgReply::decode(&m.data) {
                Ok(MfgReply::State {
                    version,
                    count,
                    digest,
                    ..
                }) => self.on_state(state_of(version, count, digest), now),
                Ok(MfgReply::Error { code, version }) => {
                    if self.job.is_some() {
                        let reason =
                            format!("the reader reported error {code} for version {version}");
                        self.fail_later(reason, now);
                    }
                }
                Ok(MfgReply::Access {
                    granted,
                    reason,
                    bits,
                    data,
                }) => self.access_event(granted, reason, bits, &data),
                Ok(MfgReply::Other { sub, .. }) => {
                    debug!(door = %self.door.id, sub, "unknown manufacturer reply");
                }
                Err(e) => debug!(door = %self.door.id, "bad manufacturer reply: {e}"),
            },
            _ => {}
        }
    }

    fn on_state(&mut self, reported: SetState, now: Instant) {
        let line = self.line();
        let Some(job) = self.job.as_mut() else {
            return;
        };
        let confirmed_blob = match self.confirmed {
            Some(_) => self.store.applied_set_blob(&self.door.id).ok().flatten(),
            None => None,
        };
        let confirmed = self.confirmed.zip(confirmed_blob.as_ref());
        match job.on_state(reported, confirmed, &line) {
            Outcome::Continue => {
                let version = job.target.version;
                self.report(DoorReport::Syncing {
                    door: self.door.id.clone(),
                    version,
                });
            }
            Outcome::Applied(state) => {
                let blob = job.blob.clone();
                self.job = None;
                self.retry = None;
                self.fresh = true;
                self.confirmed = Some(state);
                self.verify_at = Some(now + self.verify_every);
                info!(door = %self.door.id, version = state.version, "door in sync");
                self.report(DoorReport::Applied {
                    door: self.door.id.clone(),
                    state,
                    set: blob,
                });
            }
            Outcome::Lost => {
                warn!(door = %self.door.id, "the reader lost its table (wiped or replaced): full resync");
                let version = job.target.version;
                self.confirmed = None;
                self.fresh = false;
                self.report(DoorReport::Lost {
                    door: self.door.id.clone(),
                });
                self.report(DoorReport::Syncing {
                    door: self.door.id.clone(),
                    version,
                });
            }
            Outcome::Failed(reason) => self.fail_later(reason, now),
        }
    }

    /// The command sent for `purpose` got no reply in time.
    pub fn on_timeout(&mut self, cmd: Command, purpose: Purpose, now: Instant) {
        self.missed += 1;
        // The reader may never have seen that frame: a libosdp PD accepts only its last
        // sequence number + 1, the same again, or 0, so whatever goes next reuses this one.
        self.seq = self.last_seq;
        if self.phase == Phase::Offline {
            self.next_probe = now + PROBE_EVERY;
            self.seq = 0;
            return;
        }
        if self.missed >= self.offline_after {
            self.go_offline(now);
            return;
        }
        if purpose == Purpose::Fragment {
            // Never the same fragment with the same sequence: ABORT and the file again. A
            // reader that keeps ignoring the file is refusing it: a failure, retried later.
            self.idle = false;
            let refused = self.job.as_mut().is_some_and(|job| {
                job.on_fragment_lost();
                job.lost_fragments() >= MAX_LOST_FRAGMENTS
            });
            if refused {
                self.fail_later("the reader did not take the file".to_owned(), now);
            }
        } else {
            self.resend = Some((cmd, purpose));
        }
    }

    /// The handshake stopped for `e` (the reader refused the door's key, cannot run the Secure
    /// Channel, a new key could not be stored): the door says why, once per episode, with one
    /// `tamper` for a refused key, and the reader is tried again at the next probe.
    fn security_problem(&mut self, e: SecureError, now: Instant) {
        let Some(sc) = self.security.as_mut() else {
            return;
        };
        sc.reset();
        if let Some(problem) = e.problem() {
            let (report, tamper) = sc.note(&problem, matches!(e, SecureError::KeyRefused));
            if report {
                warn!(door = %self.door.id, "{e}; trying again every {PROBE_EVERY:?}");
                self.report(DoorReport::Security {
                    door: self.door.id.clone(),
                    problem: Some(problem),
                });
            } else {
                debug!(door = %self.door.id, "{e}");
            }
            if tamper {
                self.event(EventKind::Tamper);
            }
        }
        if self.announced {
            self.go_offline(now);
        } else {
            self.phase = Phase::Offline;
            self.seq = 0;
            self.resend = None;
            self.next_probe = now + PROBE_EVERY;
        }
    }

    fn come_online(&mut self, now: Instant) {
        if self.security.as_mut().is_some_and(ReaderSecurity::came_up) {
            info!(door = %self.door.id, "secure channel up");
            self.report(DoorReport::Security {
                door: self.door.id.clone(),
                problem: None,
            });
        }
        self.phase = Phase::Ready;
        if self.announced {
            // Back after a new Secure Channel handshake: nothing to announce.
            return;
        }
        self.announced = true;
        self.idle = false;
        self.fresh = false;
        self.time_due = Some(now);
        // Whatever the reader holds is checked again.
        self.verify_at = Some(now);
        info!(door = %self.door.id, address = self.door.address, rx_buffer = self.rx_buffer, "reader online");
        self.report(DoorReport::Reader {
            door: self.door.id.clone(),
            online: true,
            at: SystemTime::now(),
        });
        self.event(EventKind::ReaderOnline);
    }

    fn go_offline(&mut self, now: Instant) {
        self.announced = false;
        warn!(door = %self.door.id, address = self.door.address, "reader offline");
        self.phase = Phase::Offline;
        self.seq = 0;
        self.resend = None;
        self.job = None;
        if let Some(sc) = self.security.as_mut() {
            sc.reset();
        }
        self.signals.clear();
        self.next_probe = now + PROBE_EVERY;
        self.report(DoorReport::Reader {
            door: self.door.id.clone(),
            online: false,
            at: SystemTime::now(),
        });
        self.event(EventKind::ReaderOffline);
    }

    /// The bus's port closed: every reader is offline until it answers again.
    pub fn port_lost(&mut self, now: Instant) {
        if self.announced {
            self.go_offline(now);
        } else {
            self.phase = Phase::Offline;
            self.seq = 0;
        }
    }

    fn event(&mut self, kind: EventKind) {
        self.effects.push(Effect::Event(Event {
            at: SystemTime::now(),
            door: self.door.id.clone(),
            kind,
        }));
    }

    fn report(&mut self, report: DoorReport) {
        self.effects.push(Effect::Report(report));
    }

    /// A `hub` door's decision on a card read: strike, LED and buzzer queued first, then the
    /// access event.
    fn decide(&mut self, bits: u8, data: &[u8]) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (reason, credential) = match self.store.set_blob(&self.door.id) {
            Ok(Some(blob)) => SetView::new(&blob)
                .and_then(|v| crate::credset::decide(&v, bits, data, now))
                .map(|(reason, c)| (reason, c.map(|c| c.id.to_owned())))
                .unwrap_or_else(|e| {
                    if let Some(more) = self
                        .warnings
                        .set_unreadable
                        .check(Instant::now().into_std())
                    {
                        warn!(door = %self.door.id, "{e}{more}");
                    }
                    (AccessReason::UnknownCard, None)
                }),
            _ => (AccessReason::UnknownCard, None),
        };
        let granted = reason == AccessReason::Ok;
        if granted {
            self.signals.push_back(Command::Out(vec![Out {
                output: self.door.strike_output,
                // Control code 5: temporary on, for the timer.
                control: 5,
                timer_100ms: u16::try_from(self.door.strike_ms / 100).unwrap_or(u16::MAX),
            }]));
        }
        self.signals.push_back(Command::Led(vec![Led {
            reader: 0,
            led: 0,
            temporary: LedTemporary {
                control: 2,
                on_time: 10,
                off_time: 0,
                on_color: if granted { 2 } else { 1 },
                off_color: if granted { 2 } else { 1 },
                timer_100ms: 20,
            },
            permanent: LedPermanent::UNCHANGED,
        }]));
        self.signals.push_back(Command::Buz(vec![Buz {
            reader: 0,
            tone: 2,
            on_time: if granted { 2 } else { 5 },
            off_time: 1,
            count: if granted { 1 } else { 2 },
        }]));
        info!(door = %self.door.id, granted, ?reason, "card read");
        self.access(granted, reason, credential, bits, data);
    }

    fn access(
        &mut self,
        granted: bool,
        reason: AccessReason,
        credential: Option<String>,
        bits: u8,
        data: &[u8],
    ) {
        self.event(EventKind::Access {
            granted,
            reason,
            credential,
            bits,
            data: hex::encode(data),
        });
    }

    /// A `stored` door's own decision, mapped to the credential id.
    fn access_event(&mut self, granted: bool, reason: u8, bits: u8, data: &[u8]) {
        let credential = self
            .store
            .applied_set_blob(&self.door.id)
            .ok()
            .flatten()
            .or_else(|| self.store.set_blob(&self.door.id).ok().flatten())
            .and_then(|blob| {
                SetView::new(&blob)
                    .and_then(|v| v.lookup(bits, data).map(|c| c.map(|c| c.id.to_owned())))
                    .ok()
                    .flatten()
            });
        let reason = match reason {
            REASON_OK => AccessReason::Ok,
            REASON_NOT_YET_VALID => AccessReason::NotYetValid,
            REASON_EXPIRED => AccessReason::Expired,
            _ => AccessReason::UnknownCard,
        };
        self.access(granted, reason, credential, bits, data);
    }
}

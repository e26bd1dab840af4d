//! One simulated PD: its table, clock, queued events and half-received file, and its answer to
//! each frame. No I/O and no clock of its own (the caller passes the time), so every rule can be
//! tested directly.

use std::collections::VecDeque;

use tracing::{debug, info, info_span, warn};

use super::{Action, LedState, Mode, ReaderOptions, SimEvent};
use crate::osdp::frame::{BROADCAST, Frame};
use crate::osdp::message::{
    CAP_CHECK_CHARACTER, CAP_COMMUNICATION_SECURITY, CAP_RECEIVE_BUFFER, Capability, Command,
    FileTransfer, FtStat, LStatR, Manufacturer, NakReason, PdCap, PdId, Raw, Reply,
};
use crate::push::file::{self, Applied, Key, Staging, Table, TableFile};
use crate::push::mfg::{self, MfgCommand, MfgReply};

/// PDCAP function: output control.
const CAP_OUTPUT_CONTROL: u8 = 0x02;
/// PDCAP function: card data format.
const CAP_CARD_DATA_FORMAT: u8 = 0x03;
/// PDCAP function: reader LED control.
const CAP_LED_CONTROL: u8 = 0x04;
/// PDCAP function: reader audible output.
const CAP_AUDIBLE_OUTPUT: u8 = 0x05;
/// PDCAP function: largest combined message size.
const CAP_COMBINED_MESSAGE_SIZE: u8 = 0x0B;

/// osdp_RAW format: Wiegand bits (what libosdp's `CardFormat.Wiegand` sends).
const RAW_FORMAT_WIEGAND: u8 = 1;

/// Events a PD holds for the POLLs to come. libosdp's event queue is bounded too; a full queue
/// refuses the new event, as libosdp's `submit_event` does.
const EVENT_QUEUE: usize = 32;

/// The largest file the simulated application accepts in `open`: far over `max_file_bytes`
/// (4096 by default), and a bound on what a hostile size field can make it allocate.
const MAX_FILE: u32 = 64 * 1024;

/// A file being received over osdp_FILETRANSFER, as libosdp tracks it: the type and size from
/// the fragment that opened it, and a byte counter that every processed fragment advances by its
/// length, whatever its offset (so a fragment processed twice is counted twice).
#[derive(Debug)]
struct Incoming {
    file_type: u8,
    size: u32,
    bytes: Vec<u8>,
    counted: u64,
    /// Whether the counter went past the size (reported once).
    overrun: bool,
}

/// One simulated PD. Sequence numbers are only echoed: like libosdp 3.2.9, a repeated sequence
/// is processed again, and sequence 0 resets nothing the simulator keeps (a half-received file
/// survives it, as it survives ID).
#[derive(Debug)]
pub struct Device {
    opts: ReaderOptions,
    table: Table,
    staging: Staging,
    file: Option<Incoming>,
    queue: VecDeque<Reply>,
    /// Seconds added to the system clock; set by MFG TIME.
    clock_offset: i64,
    silent: bool,
    tamper: bool,
}

impl Device {
    /// A new PD with an empty table at version 0.
    pub fn new(opts: ReaderOptions) -> Device {
        Device {
            table: Table::new(opts.capacity),
            opts,
            staging: Staging::default(),
            file: None,
            queue: VecDeque::new(),
            clock_offset: 0,
            silent: false,
            tamper: false,
        }
    }

    /// Its address.
    pub fn address(&self) -> u8 {
        self.opts.address
    }

    /// Its options.
    pub fn options(&self) -> &ReaderOptions {
        &self.opts
    }

    /// The credential table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Whether it is silent (not answering).
    pub fn is_silent(&self) -> bool {
        self.silent
    }

    /// The simulated clock: the system's `now` plus the offset MFG TIME set.
    fn clock(&self, now: i64) -> i64 {
        now.saturating_add(self.clock_offset)
    }

    /// Answers one frame that arrived whole, `wire_len` bytes on the wire (mark included), at
    /// unix time `now`. Returns the reply frame, or `None` when a libosdp PD would stay quiet: a
    /// frame for another address, a reply, a frame over the receive buffer, a refused file
    /// fragment, or a silent reader.
    pub fn on_frame(
        &mut self,
        frame: &Frame,
        wire_len: usize,
        now: i64,
        events: &mut Vec<SimEvent>,
    ) -> Option<Frame> {
        let address = self.opts.address;
        if frame.reply || (frame.address != address && frame.address != BROADCAST) {
            return None;
        }
        let _span = info_span!("reader", address, seq = frame.sequence).entered();
        if self.silent {
            return None;
        }
        if wire_len > usize::from(self.opts.rx_buffer) {
            // libosdp's receive buffer can't hold it: the frame is lost with no NAK.
            warn!(address, wire_len, "frame over the receive buffer dropped");
            events.push(SimEvent::Dropped {
                address,
                wire_bytes: wire_len,
                rx_buffer: self.opts.rx_buffer,
            });
            return None;
        }
        let reply = if frame.security.is_some() {
            // No Secure Channel in the simulator: answer as a PD without it does.
            Some(Reply::Nak(NakReason::SecureChannelUnsupported))
        } else {
            match Command::from_frame(frame) {
                Ok(cmd) => self.on_command(cmd, now, events),
                Err(e) => {
                    debug!(address, code = frame.code, "bad command data: {e}");
                    Some(Reply::Nak(NakReason::CommandLength))
                }
            }
        }?;
        if let Reply::Nak(reason) = reply {
            events.push(SimEvent::Nak {
                address,
                command: frame.code,
                reason: reason.into(),
            });
        }
        let mut out = reply.to_frame(address, frame.sequence);
        // A broadcast is answered from the broadcast address, as libosdp does.
        out.address = frame.address;
        // Answer in the command's check mode (libosdp accepts the checksum too).
        out.use_crc = frame.use_crc;
        Some(out)
    }

    /// The reply to one decoded command.
    fn on_command(&mut self, cmd: Command, now: i64, events: &mut Vec<SimEvent>) -> Option<Reply> {
        let address = self.opts.address;
        Some(match cmd {
            Command::Poll => self.queue.pop_front().unwrap_or(Reply::Ack),
            Command::Id => {
                events.push(SimEvent::Id { address });
                Reply::PdId(self.pd_id())
            }
            Command::Cap => {
                events.push(SimEvent::Cap { address });
                Reply::PdCap(self.pd_cap())
            }
            Command::LStat => Reply::LStatR(LStatR {
                tamper: u8::from(self.tamper),
                power: 0,
            }),
            Command::Out(records) => {
                for r in records {
                    info!(address, output = r.output, control = r.control, "OUT");
                    events.push(SimEvent::Out {
                        address,
                        output: r.output,
                        control: r.control,
                        timer_100ms: r.timer_100ms,
                    });
                }
                Reply::Ack
            }
            Command::Led(records) => {
                for r in records {
                    let t = r.temporary;
                    let p = r.permanent;
                    events.push(SimEvent::Led {
                        address,
                        reader: r.reader,
                        led: r.led,
                        temporary: LedState {
                            control: t.control,
                            on_time: t.on_time,
                            off_time: t.off_time,
                            on_color: t.on_color,
                            off_color: t.off_color,
                            timer_100ms: t.timer_100ms,
                        },
                        permanent: LedState {
                            control: p.control,
                            on_time: p.on_time,
                            off_time: p.off_time,
                            on_color: p.on_color,
                            off_color: p.off_color,
                            timer_100ms: 0,
                        },
                    });
                }
                Reply::Ack
            }
            Command::Buz(records) => {
                for r in records {
                    events.push(SimEvent::Buz {
                        address,
                        reader: r.reader,
                        tone: r.tone,
                        on_time: r.on_time,
                        off_time: r.off_time,
                        count: r.count,
                    });
                }
                Reply::Ack
            }
            Command::KeySet { .. } | Command::Chlng { .. } | Command::Scrypt { .. } => {
                Reply::Nak(NakReason::SecureChannelUnsupported)
            }
            Command::FileTransfer(ft) => return self.on_file_transfer(ft, events),
            Command::Mfg(m) => self.on_mfg(m, now, events),
            Command::Abort => {
                let discarded = self.file.take().is_some();
                info!(address, discarded, "ABORT");
                events.push(SimEvent::Abort { address, discarded });
                Reply::Ack
            }
            // COMSET would move the reader to another address or speed, which the simulator
            // does not do; say so rather than pretend.
            Command::ComSet { .. } | Command::Other { .. } => Reply::Nak(NakReason::UnknownCommand),
        })
    }

    fn pd_id(&self) -> PdId {
        PdId {
            vendor: self.opts.vendor_code,
            model: 1,
            version: 1,
            // "SIM" and the address, so each simulated reader has its own serial number.
            serial: 0x5349_4D00 | u32::from(self.opts.address),
            firmware_major: 0,
            firmware_minor: 1,
            firmware_build: 0,
        }
    }

    fn pd_cap(&self) -> PdCap {
        let [rx_lo, rx_hi] = self.opts.rx_buffer.to_le_bytes();
        let cap = |function, compliance, number| Capability {
            function,
            compliance,
            number,
        };
        PdCap {
            capabilities: vec![
                cap(CAP_OUTPUT_CONTROL, 1, 1),
                cap(CAP_CARD_DATA_FORMAT, 1, 0),
                cap(CAP_LED_CONTROL, 1, 1),
                cap(CAP_AUDIBLE_OUTPUT, 1, 1),
                cap(CAP_CHECK_CHARACTER, 1, 0),
                cap(CAP_COMMUNICATION_SECURITY, 0, 0),
                cap(CAP_RECEIVE_BUFFER, rx_lo, rx_hi),
                cap(CAP_COMBINED_MESSAGE_SIZE, rx_lo, rx_hi),
            ],
        }
    }

    /// Queues an event for a later POLL; a full queue refuses it (libosdp's `submit_event`
    /// fails the same way).
    fn enqueue(&mut self, reply: Reply, events: &mut Vec<SimEvent>) {
        if self.queue.len() >= EVENT_QUEUE {
            events.push(SimEvent::Error {
                address: Some(self.opts.address),
                message: format!("event queue full ({EVENT_QUEUE}); event dropped"),
            });
            return;
        }
        self.queue.push_back(reply);
    }

    fn mfgrep(&self, reply: &MfgReply) -> Reply {
        Reply::MfgRep(Manufacturer {
            vendor: self.opts.vendor_code,
            data: reply.encode(),
        })
    }

    fn state_event(&self, cause: &'static str) -> SimEvent {
        let (version, count, digest) = self.table.state();
        SimEvent::State {
            address: self.opts.address,
            cause,
            version,
            count,
            digest: digest.to_string(),
            capacity: self.table.capacity(),
        }
    }

    fn on_mfg(&mut self, m: Manufacturer, now: i64, events: &mut Vec<SimEvent>) -> Reply {
        let address = self.opts.address;
        if self.opts.mode == Mode::Plain || m.vendor != self.opts.vendor_code {
            // A standard reader, or another vendor's command: the application refuses it.
            return Reply::Nak(NakReason::Record);
        }
        if m.data.len() > mfg::MFG_MAX_DATA {
            return Reply::Nak(NakReason::CommandLength);
        }
        match MfgCommand::decode(&m.data) {
            Ok(MfgCommand::Query) => {
                let (version, count, digest) = self.table.state();
                let state = MfgReply::State {
                    version,
                    count,
                    digest,
                    capacity: self.table.capacity(),
                };
                let reply = self.mfgrep(&state);
                self.enqueue(reply, events);
                events.push(self.state_event("query"));
                Reply::Ack
            }
            Ok(MfgCommand::Time { unix_seconds }) => {
                let hub = i64::try_from(unix_seconds).unwrap_or(i64::MAX);
                self.clock_offset = hub.saturating_sub(now);
                info!(address, unix_seconds, "clock set");
                events.push(SimEvent::Time {
                    address,
                    unix_seconds,
                });
                Reply::Ack
            }
            Ok(MfgCommand::Other { .. }) | Err(_) => Reply::Nak(NakReason::Record),
        }
    }

    /// A FILETRANSFER fragment, processed as libosdp's PD does: the first fragment while idle
    /// opens a file of its type and size; every fragment is written at its offset into the open
    /// file and advances the byte counter by its length; when the counter reaches the size the
    /// file is closed (FTSTAT status 1) and only then applied. A refusal (plain mode, a type or
    /// size the application won't open, a write past the end) leaves the fragment unanswered.
    fn on_file_transfer(&mut self, ft: FileTransfer, events: &mut Vec<SimEvent>) -> Option<Reply> {
        let address = self.opts.address;
        if self.opts.mode == Mode::Plain || ft.data.is_empty() {
            return None;
        }
        if self.file.is_none() {
            let known = matches!(ft.file_type, file::FULL_TABLE | file::DELTA);
            if !known || ft.total_size == 0 || ft.total_size > MAX_FILE {
                warn!(
                    address,
                    file_type = ft.file_type,
                    size = ft.total_size,
                    "open refused"
                );
                return None;
            }
            debug!(
                address,
                file_type = ft.file_type,
                size = ft.total_size,
                "file opened"
            );
            self.file = Some(Incoming {
                file_type: ft.file_type,
                size: ft.total_size,
                // total_size <= MAX_FILE, so this is a small allocation.
                bytes: vec![0; ft.total_size as usize],
                counted: 0,
                overrun: false,
            });
        }
        let file = self.file.as_mut()?;
        let start = usize::try_from(ft.offset).ok()?;
        let dest = file
            .bytes
            .get_mut(start..start.checked_add(ft.data.len())?)?;
        dest.copy_from_slice(&ft.data);
        file.counted = file.counted.saturating_add(ft.data.len() as u64);
        let size = u64::from(file.size);
        let status = if file.counted == size {
            FtStat::STATUS_PROCESSED
        } else {
            if file.counted > size && !file.overrun {
                // What a fragment processed twice does to a libosdp PD: the counter passes the
                // size, the file never completes, and only ABORT clears it.
                file.overrun = true;
                warn!(address, "fragment counted past the end of the file");
                events.push(SimEvent::Error {
                    address: Some(address),
                    message: format!(
                        "fragments counted {} bytes of a {}-byte file; it will not complete \
                         until ABORT",
                        file.counted, file.size
                    ),
                });
            }
            FtStat::STATUS_OK
        };
        if status == FtStat::STATUS_PROCESSED
            && let Some(done) = self.file.take()
        {
            self.apply(done, events);
        }
        Some(Reply::FtStat(FtStat {
            // Interleaving allowed: the CP may poll between fragments.
            action: 0x01,
            delay_ms: 0,
            status,
            update_msg_max: 0,
        }))
    }

    /// Applies a complete file to the table; a refusal queues MFGREP ERROR.
    fn apply(&mut self, done: Incoming, events: &mut Vec<SimEvent>) {
        let address = self.opts.address;
        let (file_type, size) = (done.file_type, done.size);
        let parsed = file::parse_file(file_type, &done.bytes);
        let version = parsed.as_ref().map_or(0, TableFile::target_version);
        let result = parsed.and_then(|f| match f {
            TableFile::Full(p) => self.table.apply_full_part(&mut self.staging, p).map(Some),
            TableFile::Delta(d) => self.table.apply_delta(d).map(|()| None),
        });
        match result {
            Ok(applied) => {
                let (outcome, held, parts) = match applied {
                    Some(Applied::Staged { held, parts }) => ("staged", Some(held), Some(parts)),
                    Some(Applied::Replaced { .. }) => {
                        // The staged parts were the whole table.
                        ("replaced", None, None)
                    }
                    None => ("delta", None, None),
                };
                info!(address, file_type, size, version, outcome, "file applied");
                events.push(SimEvent::FileApplied {
                    address,
                    file_type,
                    size,
                    version,
                    outcome,
                    held,
                    parts,
                });
                if outcome != "staged" {
                    events.push(self.state_event("applied"));
                }
            }
            Err(e) => {
                let code = e.error_code();
                warn!(address, file_type, version, code, "file refused: {e}");
                let reply = self.mfgrep(&MfgReply::Error { code, version });
                self.enqueue(reply, events);
                events.push(SimEvent::FileRefused {
                    address,
                    file_type,
                    size,
                    version,
                    code,
                    error: e.to_string(),
                });
            }
        }
    }

    /// Does a scripted action at unix time `now`.
    pub fn act(&mut self, action: &Action, now: i64, events: &mut Vec<SimEvent>) {
        let address = self.opts.address;
        let _span = info_span!("reader", address).entered();
        match action {
            Action::Card { bits, data } => {
                let hex = hex::encode(data);
                match self.opts.mode {
                    Mode::Plain => {
                        let raw = Reply::Raw(Raw {
                            reader: 0,
                            format: RAW_FORMAT_WIEGAND,
                            bits: u16::from(*bits),
                            data: data.clone(),
                        });
                        self.enqueue(raw, events);
                        events.push(SimEvent::Card {
                            address,
                            bits: *bits,
                            data: hex,
                            granted: None,
                            reason: None,
                        });
                    }
                    Mode::Stored => {
                        let (granted, reason) = self.decide(*bits, data, self.clock(now));
                        info!(address, bits, data = %hex, granted, reason, "card");
                        let access = self.mfgrep(&MfgReply::Access {
                            granted,
                            reason,
                            bits: *bits,
                            data: data.clone(),
                        });
                        self.enqueue(access, events);
                        events.push(SimEvent::Card {
                            address,
                            bits: *bits,
                            data: hex,
                            granted: Some(granted),
                            reason: Some(reason),
                        });
                    }
                }
            }
            Action::Wipe => {
                self.table = Table::new(self.opts.capacity);
                self.staging.clear();
                self.file = None;
                events.push(SimEvent::Wiped { address });
                events.push(self.state_event("wipe"));
            }
            Action::Silent(on) => {
                self.silent = *on;
                events.push(SimEvent::Silent { address, on: *on });
            }
            Action::Tamper(on) => {
                self.tamper = *on;
                let status = Reply::LStatR(LStatR {
                    tamper: u8::from(*on),
                    power: 0,
                });
                self.enqueue(status, events);
                events.push(SimEvent::Tamper {
                    address,
                    tamper: *on,
                });
            }
            Action::State => events.push(self.state_event("script")),
        }
    }

    /// The access decision for a card at simulated time `now`: granted, and the ACCESS reason.
    fn decide(&self, bits: u8, data: &[u8], now: i64) -> (bool, u8) {
        let key = Key {
            bits,
            data: data.to_vec(),
        };
        match self.table.get(&key) {
            None => (false, mfg::REASON_UNKNOWN_CARD),
            Some(c) if c.not_before != 0 && now < i64::from(c.not_before) => {
                (false, mfg::REASON_NOT_YET_VALID)
            }
            Some(c) if c.not_after != 0 && now > i64::from(c.not_after) => {
                (false, mfg::REASON_EXPIRED)
            }
            Some(_) => (true, mfg::REASON_OK),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osdp::message::{CMD_FILETRANSFER, REPLY_FTSTAT};
    use crate::snapshot::Credential;

    fn cmd(c: &Command, address: u8, seq: u8) -> Frame {
        c.to_frame(address, seq)
    }

    fn send(d: &mut Device, c: &Command, ev: &mut Vec<SimEvent>) -> Option<Reply> {
        let f = cmd(c, d.address(), 1);
        let len = f.encode(true).map(|b| b.len()).unwrap_or(0);
        d.on_frame(&f, len, 1_000, ev)
            .and_then(|r| Reply::from_frame(&r).ok())
    }

    fn card(n: u8) -> Credential {
        Credential {
            id: String::new(),
            bits: 8,
            data: vec![n],
            not_before: 0,
            not_after: 0,
        }
    }

    fn ft(file_type: u8, bytes: &[u8], offset: usize, len: usize) -> Command {
        Command::FileTransfer(FileTransfer {
            file_type,
            total_size: bytes.len() as u32,
            offset: offset as u32,
            data: bytes[offset..offset + len].to_vec(),
        })
    }

    #[test]
    fn other_addresses_and_replies_are_ignored() {
        let mut d = Device::new(ReaderOptions::new(3, Mode::Stored));
        let mut ev = Vec::new();
        let f = Command::Poll.to_frame(4, 0);
        assert!(d.on_frame(&f, 9, 0, &mut ev).is_none());
        let mut r = Command::Poll.to_frame(3, 0);
        r.reply = true;
        assert!(d.on_frame(&r, 9, 0, &mut ev).is_none());
        let b = Command::Poll.to_frame(BROADCAST, 2);
        let reply = d.on_frame(&b, 9, 0, &mut ev);
        assert_eq!(reply.map(|f| (f.address, f.sequence)), Some((BROADCAST, 2)));
    }

    fn status(r: Option<Reply>) -> Option<i16> {
        match r {
            Some(Reply::FtStat(s)) => Some(s.status),
            _ => None,
        }
    }

    #[test]
    fn repeated_fragment_counts_twice_and_abort_clears() {
        let mut d = Device::new(ReaderOptions::new(0, Mode::Stored));
        let mut ev = Vec::new();
        let files = file::full_table_files(5, &[card(1), card(2)], 4096).unwrap_or_default();
        let bytes = &files[0];
        let third = bytes.len() / 3;
        let f1 = ft(file::FULL_TABLE, bytes, 0, third);
        let f2 = ft(file::FULL_TABLE, bytes, third, third);
        let f3 = ft(file::FULL_TABLE, bytes, 2 * third, bytes.len() - 2 * third);
        assert_eq!(status(send(&mut d, &f1, &mut ev)), Some(0));
        // The same fragment again is counted again, so the file "completes" one fragment
        // early with a hole in it: FTSTAT 1, then ERROR at the next POLL.
        assert_eq!(status(send(&mut d, &f1, &mut ev)), Some(0));
        assert_eq!(status(send(&mut d, &f2, &mut ev)), Some(1));
        assert_eq!(d.table().state().0, 0);
        assert!(matches!(
            send(&mut d, &Command::Poll, &mut ev),
            Some(Reply::MfgRep(_))
        ));
        // The last fragment now opens a new file, which stays half-received...
        assert_eq!(status(send(&mut d, &f3, &mut ev)), Some(0));
        assert_eq!(d.table().state().0, 0);
        // ...until ABORT; then the whole file goes through.
        assert_eq!(send(&mut d, &Command::Abort, &mut ev), Some(Reply::Ack));
        assert!(matches!(
            ev.last(),
            Some(SimEvent::Abort {
                discarded: true,
                ..
            })
        ));
        for f in [&f1, &f2, &f3] {
            send(&mut d, f, &mut ev);
        }
        assert_eq!(d.table().state().0, 5);

        // A fragment counted past the end: the file never completes until ABORT.
        let two = ft(file::FULL_TABLE, bytes, 0, 2 * third);
        send(&mut d, &two, &mut ev);
        send(&mut d, &two, &mut ev);
        assert!(ev.iter().any(|e| matches!(e, SimEvent::Error { .. })));
        assert_eq!(status(send(&mut d, &f3, &mut ev)), Some(0));
        assert_eq!(send(&mut d, &Command::Abort, &mut ev), Some(Reply::Ack));
        assert!(matches!(
            ev.last(),
            Some(SimEvent::Abort {
                discarded: true,
                ..
            })
        ));
    }

    #[test]
    fn refused_files_are_not_answered_and_plain_mode_has_no_files() {
        let mut d = Device::new(ReaderOptions::new(0, Mode::Stored));
        let mut ev = Vec::new();
        let odd = Command::FileTransfer(FileTransfer {
            file_type: 1,
            total_size: 4,
            offset: 0,
            data: vec![1, 2],
        });
        assert_eq!(send(&mut d, &odd, &mut ev), None);
        let past = Command::FileTransfer(FileTransfer {
            file_type: file::DELTA,
            total_size: 4,
            offset: 3,
            data: vec![1, 2],
        });
        assert_eq!(send(&mut d, &past, &mut ev), None);
        let mut p = Device::new(ReaderOptions::new(0, Mode::Plain));
        let ok = ft(file::DELTA, &[1, 2, 3], 0, 3);
        assert_eq!(send(&mut p, &ok, &mut ev), None);
        assert_eq!(ok.code(), CMD_FILETRANSFER);
        // A malformed complete file: FTSTAT 1, then ERROR 3 at the next POLL.
        let mut s = Device::new(ReaderOptions::new(0, Mode::Stored));
        let r = send(&mut s, &ok, &mut ev);
        assert_eq!(r.as_ref().map(Reply::code), Some(REPLY_FTSTAT));
        assert!(matches!(r, Some(Reply::FtStat(FtStat { status: 1, .. }))));
        let Some(Reply::MfgRep(m)) = send(&mut s, &Command::Poll, &mut ev) else {
            panic!("no MFGREP");
        };
        assert_eq!(
            MfgReply::decode(&m.data).ok(),
            Some(MfgReply::Error {
                code: mfg::ERROR_MALFORMED,
                version: 0
            })
        );
    }

    #[test]
    fn stored_decisions_follow_validity_and_the_hub_clock() {
        let mut d = Device::new(ReaderOptions::new(0, Mode::Stored));
        let mut ev = Vec::new();
        let mut soon = card(2);
        soon.not_before = 2_000;
        let mut old = card(3);
        old.not_after = 500;
        let files = file::full_table_files(1, &[card(1), soon, old], 4096).unwrap_or_default();
        let f = ft(file::FULL_TABLE, &files[0], 0, files[0].len());
        send(&mut d, &f, &mut ev);
        let decide = |d: &Device, n| d.decide(8, &[n], d.clock(1_000));
        assert_eq!(decide(&d, 1), (true, mfg::REASON_OK));
        assert_eq!(decide(&d, 2), (false, mfg::REASON_NOT_YET_VALID));
        assert_eq!(decide(&d, 3), (false, mfg::REASON_EXPIRED));
        assert_eq!(decide(&d, 4), (false, mfg::REASON_UNKNOWN_CARD));
        let time = Command::Mfg(Manufacturer {
            vendor: mfg::DEFAULT_VENDOR_CODE,
            data: MfgCommand::Time {
                unix_seconds: 3_000,
            }
            .encode(),
        });
        assert_eq!(send(&mut d, &time, &mut ev), Some(Reply::Ack));
        assert_eq!(decide(&d, 2), (true, mfg::REASON_OK));
    }
}

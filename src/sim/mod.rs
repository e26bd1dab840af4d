//! The reader simulator: one or more OSDP Peripheral Devices (door readers) on a serial line, so
//! tests and the demo run without hardware.
//!
//! A simulated reader behaves like a libosdp-based PD where the contract (`reader-link.md`) and
//! `notes/libosdp-peer.md` say how one behaves, because the hub has to cope with exactly that:
//!
//! - a frame longer than the receive buffer (every byte on the wire, the mark included) is
//!   dropped without a reply;
//! - a repeated sequence number is processed again, never answered from a cache, so a resent
//!   FILETRANSFER fragment is counted twice;
//! - osdp_FTSTAT status 1 only means the last byte arrived: the file is applied afterwards, and a
//!   refusal is an MFGREP ERROR at a later POLL;
//! - a half-received file survives sequence 0 and ID, and only osdp_ABORT discards it (staged
//!   parts of a full table are complete files and stay staged).
//!
//! - [`device`]: one PD's state and its answer to each command (pure, no I/O).
//! - [`run`]: [`Reader`], the task that serves one or several devices on a byte stream.
//! - this module: options, scripted [`Action`]s, and the [`SimEvent`]s a run reports.

pub mod device;
pub mod run;

pub use device::Device;
pub use run::Reader;

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::push::mfg::DEFAULT_VENDOR_CODE;

/// libosdp's receive buffer, which its PDCAP reports (`notes/libosdp-peer.md`).
pub const DEFAULT_RX_BUFFER: u16 = 256;

/// Everything that can go wrong in the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A script line that is not an action.
    #[error("bad action {line:?}: {reason}")]
    Action {
        /// The line as given.
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bad option (address list, vendor code).
    #[error("bad option: {0}")]
    Option(String),
    /// The serial line failed.
    #[error("serial line: {0}")]
    Io(#[from] std::io::Error),
}

/// What kind of door the simulated reader is (`reader-link.md`, "Door modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A door controller with its own credential table: takes table files, decides locally and
    /// reports MFGREP ACCESS.
    Stored,
    /// A standard reader: reports card reads as osdp_RAW and knows nothing of doorhub's
    /// manufacturer-specific commands or files.
    Plain,
}

impl FromStr for Mode {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Mode, SimError> {
        match s {
            "stored" => Ok(Mode::Stored),
            "plain" => Ok(Mode::Plain),
            other => Err(SimError::Option(format!(
                "mode {other:?} is not stored or plain"
            ))),
        }
    }
}

/// How one simulated reader behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Its OSDP address, 0..=0x7E.
    pub address: u8,
    /// Stored or plain.
    pub mode: Mode,
    /// The receive buffer PDCAP reports and the simulator enforces, in bytes on the wire.
    pub rx_buffer: u16,
    /// The vendor code of PDID and of the manufacturer-specific messages, as on the wire.
    pub vendor_code: [u8; 3],
    /// Most table entries it holds; `None` is unlimited (STATE says 0xFFFFFFFF).
    pub capacity: Option<u32>,
    /// Processing time added before each reply.
    pub reply_delay: Duration,
    /// Line speed for pacing: with `Some(baud)` each command's and reply's transmit time (10 bits
    /// a byte) passes before the reply is written, as on a real line. `None` answers at once.
    pub baud: Option<u32>,
}

impl ReaderOptions {
    /// A reader at `address` in `mode` with libosdp's defaults: 256-byte receive buffer,
    /// doorhub's vendor code, no capacity limit, no delay, no pacing.
    pub fn new(address: u8, mode: Mode) -> ReaderOptions {
        ReaderOptions {
            address,
            mode,
            rx_buffer: DEFAULT_RX_BUFFER,
            vendor_code: DEFAULT_VENDOR_CODE,
            capacity: None,
            reply_delay: Duration::ZERO,
            baud: None,
        }
    }
}

/// Parses a vendor code as 6 hex digits in wire order (`0A4448`).
pub fn parse_vendor_code(s: &str) -> Result<[u8; 3], SimError> {
    let bytes = hex::decode(s).map_err(|e| SimError::Option(format!("vendor code {s:?}: {e}")))?;
    <[u8; 3]>::try_from(bytes.as_slice())
        .map_err(|_| SimError::Option(format!("vendor code {s:?} is not 3 bytes")))
}

/// Parses `N` or `N,M,...` into distinct addresses 0..=0x7E.
pub fn parse_addresses(s: &str) -> Result<Vec<u8>, SimError> {
    let mut out: Vec<u8> = Vec::new();
    for part in s.split(',') {
        let a: u8 = part
            .trim()
            .parse()
            .map_err(|_| SimError::Option(format!("address {part:?} is not a number")))?;
        if a >= crate::osdp::frame::BROADCAST {
            return Err(SimError::Option(format!("address {a} is over 126")));
        }
        if out.contains(&a) {
            return Err(SimError::Option(format!("address {a} given twice")));
        }
        out.push(a);
    }
    Ok(out)
}

/// Something done to a simulated reader from outside the line (a person at the door, or the
/// test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A card is presented: plain mode queues osdp_RAW, stored mode decides from the table and
    /// clock and queues MFGREP ACCESS. Both go out at the next POLL.
    Card {
        /// Number of bits, 1..=128.
        bits: u8,
        /// ceil(bits/8) bytes, left-justified, padding bits zero.
        data: Vec<u8>,
    },
    /// The table is emptied to version 0 and anything staged or half-received is lost (a
    /// replaced or factory-reset reader).
    Wipe,
    /// Stop (true) or start (false) answering, as if unplugged.
    Silent(bool),
    /// The tamper switch opens (true; LSTATR with tamper 1 at the next POLL) or closes.
    Tamper(bool),
    /// Report the table's state as a [`SimEvent::State`].
    State,
}

impl FromStr for Action {
    type Err = SimError;

    /// `card BITS HEX`, `wipe`, `silent on|off`, `tamper [on|off]`, `state`.
    fn from_str(line: &str) -> Result<Action, SimError> {
        let bad = |reason: &str| SimError::Action {
            line: line.to_owned(),
            reason: reason.to_owned(),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let on_off = |w: Option<&&str>, default: Option<bool>| match w.copied() {
            Some("on") => Ok(true),
            Some("off") => Ok(false),
            None => default.ok_or_else(|| bad("expected on or off")),
            Some(_) => Err(bad("expected on or off")),
        };
        match words.as_slice() {
            ["card", bits, data] => {
                let bits: u8 = bits
                    .parse()
                    .map_err(|_| bad("bits is not a number 1..=128"))?;
                let data = hex::decode(data).map_err(|_| bad("data is not hex"))?;
                check_card(bits, &data).map_err(bad)?;
                Ok(Action::Card { bits, data })
            }
            ["wipe"] => Ok(Action::Wipe),
            ["state"] => Ok(Action::State),
            ["silent", rest @ ..] if rest.len() <= 1 => {
                on_off(rest.first(), None).map(Action::Silent)
            }
            ["tamper", rest @ ..] if rest.len() <= 1 => {
                on_off(rest.first(), Some(true)).map(Action::Tamper)
            }
            _ => Err(bad(
                "expected card BITS HEX, wipe, silent on|off, tamper [on|off] or state",
            )),
        }
    }
}

/// Checks a card the way MFGREP ACCESS and the table files require: 1..=128 bits in
/// ceil(bits/8) bytes, padding bits zero.
pub fn check_card(bits: u8, data: &[u8]) -> Result<(), &'static str> {
    if bits == 0 || bits > 128 {
        return Err("bits must be 1..=128");
    }
    let want = usize::from(bits).div_ceil(8);
    if data.len() != want {
        return Err("data is not ceil(bits/8) bytes");
    }
    let pad = want * 8 - usize::from(bits);
    let last = data.last().copied().unwrap_or_default();
    if pad > 0 && last & ((1u8 << pad) - 1) != 0 {
        return Err("padding bits are not zero");
    }
    Ok(())
}

/// An [`Action`] for one reader (`to: Some(address)`) or for every reader of the run (`None`).
/// A script line `@N ACTION` targets address N.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The address, or `None` for all.
    pub to: Option<u8>,
    /// What to do.
    pub action: Action,
}

impl From<Action> for Script {
    fn from(action: Action) -> Script {
        Script { to: None, action }
    }
}

impl FromStr for Script {
    type Err = SimError;

    fn from_str(line: &str) -> Result<Script, SimError> {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('@') {
            let (addr, action) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let to = addr.parse().map_err(|_| SimError::Action {
                line: line.to_owned(),
                reason: "@ is not followed by an address".to_owned(),
            })?;
            return Ok(Script {
                to: Some(to),
                action: action.parse()?,
            });
        }
        Ok(Script {
            to: None,
            action: line.parse()?,
        })
    }
}

/// One LED state of an osdp_LED record, as [`SimEvent::Led`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LedState {
    /// Control code (temporary: 0 NOP, 1 cancel, 2 set; permanent: 0 NOP, 1 set).
    pub control: u8,
    /// On time per cycle, 100 ms units.
    pub on_time: u8,
    /// Off time per cycle, 100 ms units.
    pub off_time: u8,
    /// Colour while on (1 red, 2 green, ...).
    pub on_color: u8,
    /// Colour while off.
    pub off_color: u8,
    /// Duration of the temporary state, 100 ms units (0 for the permanent state).
    pub timer_100ms: u16,
}

/// What a simulator run reports: one JSON object per line on the binary's stdout, tagged by
/// `event`; every event about a reader carries its `address`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SimEvent {
    /// The binary opened its port and is serving these readers (the first line it prints).
    Ready {
        /// The serial device.
        port: String,
        /// The simulated readers' addresses.
        addresses: Vec<u8>,
    },
    /// osdp_ID was answered with PDID.
    Id {
        /// The reader.
        address: u8,
    },
    /// osdp_CAP was answered with PDCAP.
    Cap {
        /// The reader.
        address: u8,
    },
    /// One osdp_OUT record (the strike).
    Out {
        /// The reader.
        address: u8,
        /// Output number.
        output: u8,
        /// Control code (5 temporary on).
        control: u8,
        /// Timer, 100 ms units.
        timer_100ms: u16,
    },
    /// One osdp_LED record.
    Led {
        /// The reader.
        address: u8,
        /// Reader number.
        reader: u8,
        /// LED number.
        led: u8,
        /// The temporary state.
        temporary: LedState,
        /// The permanent state.
        permanent: LedState,
    },
    /// One osdp_BUZ record.
    Buz {
        /// The reader.
        address: u8,
        /// Reader number.
        reader: u8,
        /// Tone code (0 none, 1 off, 2 default).
        tone: u8,
        /// On time, 100 ms units.
        on_time: u8,
        /// Off time, 100 ms units.
        off_time: u8,
        /// Cycles.
        count: u8,
    },
    /// MFG TIME set the simulated clock.
    Time {
        /// The reader.
        address: u8,
        /// The time the hub sent.
        unix_seconds: u64,
    },
    /// The table's state: after a QUERY (the STATE reply is queued), a change, or the `state`
    /// action.
    State {
        /// The reader.
        address: u8,
        /// Why it is reported: `query`, `applied`, `wipe` or `script`.
        cause: &'static str,
        /// Table version.
        version: u64,
        /// Entries.
        count: u32,
        /// Set digest, 16 lowercase hex digits.
        digest: String,
        /// Capacity as STATE reports it.
        capacity: u32,
    },
    /// A received table file was applied: a full-table part staged or completing the table, or
    /// a delta.
    FileApplied {
        /// The reader.
        address: u8,
        /// 0x80 full-table part, 0x81 delta.
        file_type: u8,
        /// The file's size in bytes.
        size: u32,
        /// The file's target version.
        version: u64,
        /// `staged`, `replaced` or `delta`.
        outcome: &'static str,
        /// For a full-table part: parts held (equal to `parts` once replaced).
        held: Option<u16>,
        /// For a full-table part: parts of the table.
        parts: Option<u16>,
    },
    /// A received table file was refused; MFGREP ERROR is queued.
    FileRefused {
        /// The reader.
        address: u8,
        /// The file type.
        file_type: u8,
        /// The file's size in bytes.
        size: u32,
        /// Its target version, 0 if unreadable.
        version: u64,
        /// The ERROR code (1 capacity, 2 delta does not apply, 3 malformed).
        code: u8,
        /// Why, in words.
        error: String,
    },
    /// osdp_ABORT arrived.
    Abort {
        /// The reader.
        address: u8,
        /// Whether a half-received file was discarded.
        discarded: bool,
    },
    /// A frame for this reader was longer than its receive buffer and was dropped unanswered.
    Dropped {
        /// The reader.
        address: u8,
        /// The frame's bytes on the wire, the mark included.
        wire_bytes: usize,
        /// The receive buffer.
        rx_buffer: u16,
    },
    /// A card was presented: in plain mode osdp_RAW is queued (`granted`/`reason` null); in
    /// stored mode the reader's decision, queued as MFGREP ACCESS.
    Card {
        /// The reader.
        address: u8,
        /// Card bits.
        bits: u8,
        /// Card data, lowercase hex.
        data: String,
        /// Stored mode: whether access was granted.
        granted: Option<bool>,
        /// Stored mode: ACCESS reason (0 ok, 1 unknown card, 2 not yet valid, 3 expired).
        reason: Option<u8>,
    },
    /// The tamper switch changed.
    Tamper {
        /// The reader.
        address: u8,
        /// Open (true) or closed.
        tamper: bool,
    },
    /// The reader stopped (true) or started (false) answering.
    Silent {
        /// The reader.
        address: u8,
        /// Silent now.
        on: bool,
    },
    /// The table was wiped to version 0.
    Wiped {
        /// The reader.
        address: u8,
    },
    /// A command was answered with osdp_NAK.
    Nak {
        /// The reader.
        address: u8,
        /// The command code.
        command: u8,
        /// The NAK reason code.
        reason: u8,
    },
    /// Something went wrong that the line does not show (a bad script line, a full event
    /// queue, a fragment counted past a file's end).
    Error {
        /// The reader, when it concerns one.
        address: Option<u8>,
        /// What happened.
        message: String,
    },
}

impl SimEvent {
    /// The event as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        // Serializing these plain structs (no maps with non-string keys, no floats) can't fail;
        // the fallback keeps the output a JSON line even so.
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"event\":\"error\",\"message\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse() {
        assert_eq!(
            "card 26 bd88eb80".parse::<Action>().ok(),
            Some(Action::Card {
                bits: 26,
                data: vec![0xbd, 0x88, 0xeb, 0x80]
            })
        );
        assert!("card 26 bd88eb81".parse::<Action>().is_err());
        assert!("card 0 00".parse::<Action>().is_err());
        assert!("card 26 bd88".parse::<Action>().is_err());
        assert_eq!(
            "silent on".parse::<Action>().ok(),
            Some(Action::Silent(true))
        );
        assert!("silent".parse::<Action>().is_err());
        assert_eq!("tamper".parse::<Action>().ok(), Some(Action::Tamper(true)));
        assert_eq!("wipe".parse::<Action>().ok(), Some(Action::Wipe));
        assert!("dance".parse::<Action>().is_err());
        assert_eq!(
            "@3 state".parse::<Script>().ok(),
            Some(Script {
                to: Some(3),
                action: Action::State
            })
        );
        assert!("@x state".parse::<Script>().is_err());
    }

    #[test]
    fn options_parse() {
        assert_eq!(parse_addresses("1, 2,5").ok(), Some(vec![1, 2, 5]));
        assert!(parse_addresses("1,1").is_err());
        assert!(parse_addresses("127").is_err());
        assert_eq!(parse_vendor_code("0A4448").ok(), Some([0x0A, 0x44, 0x48]));
        assert!(parse_vendor_code("0A44").is_err());
    }

    #[test]
    fn events_are_tagged_json() {
        let e = SimEvent::Out {
            address: 1,
            output: 0,
            control: 5,
            timer_100ms: 30,
        };
        assert_eq!(
            e.to_json(),
            r#"{"event":"out","address":1,"output":0,"control":5,"timer_100ms":30}"#
        );
    }
}

//! The OSDP commands (CP to PD) and replies (PD to CP) the reader link uses, and their data.
//!
//! Layouts follow SIA OSDP 2.2 as libosdp implements it; integers are little-endian unless said.
//! Decoding is total: an unknown code becomes [`Command::Other`] / [`Reply::Other`], and data
//! of the wrong shape for a known code is a [`MessageError`], never a panic. Decoding the data of
//! a Secure Channel frame is only meaningful once [`super::secure`] has decrypted it.

use super::frame::Frame;
use super::secure::KeyBytes;
use thiserror::Error;

/// osdp_POLL: "anything to report?".
pub const CMD_POLL: u8 = 0x60;
/// osdp_ID: asks for osdp_PDID.
pub const CMD_ID: u8 = 0x61;
/// osdp_CAP: asks for osdp_PDCAP.
pub const CMD_CAP: u8 = 0x62;
/// osdp_LSTAT: asks for osdp_LSTATR (tamper and power).
pub const CMD_LSTAT: u8 = 0x64;
/// osdp_OUT: output control.
pub const CMD_OUT: u8 = 0x68;
/// osdp_LED: reader LED control.
pub const CMD_LED: u8 = 0x69;
/// osdp_BUZ: reader buzzer control.
pub const CMD_BUZ: u8 = 0x6A;
/// osdp_COMSET: new address and baud rate.
pub const CMD_COMSET: u8 = 0x6E;
/// osdp_KEYSET: a new Secure Channel base key.
pub const CMD_KEYSET: u8 = 0x75;
/// osdp_CHLNG: Secure Channel challenge.
pub const CMD_CHLNG: u8 = 0x76;
/// osdp_SCRYPT: Secure Channel server cryptogram.
pub const CMD_SCRYPT: u8 = 0x77;
/// osdp_FILETRANSFER: one fragment of a file.
pub const CMD_FILETRANSFER: u8 = 0x7C;
/// osdp_MFG: manufacturer-specific command.
pub const CMD_MFG: u8 = 0x80;
/// osdp_ABORT: abandon the current operation (a file transfer).
pub const CMD_ABORT: u8 = 0xA2;

/// osdp_ACK.
pub const REPLY_ACK: u8 = 0x40;
/// osdp_NAK.
pub const REPLY_NAK: u8 = 0x41;
/// osdp_PDID: identification.
pub const REPLY_PDID: u8 = 0x45;
/// osdp_PDCAP: capabilities.
pub const REPLY_PDCAP: u8 = 0x46;
/// osdp_LSTATR: local status.
pub const REPLY_LSTATR: u8 = 0x48;
/// osdp_RAW: a card read, unprocessed bits.
pub const REPLY_RAW: u8 = 0x50;
/// osdp_COM: answer to osdp_COMSET.
pub const REPLY_COM: u8 = 0x54;
/// osdp_CCRYPT: Secure Channel client cryptogram.
pub const REPLY_CCRYPT: u8 = 0x76;
/// osdp_RMAC_I: Secure Channel initial R-MAC.
pub const REPLY_RMAC_I: u8 = 0x78;
/// osdp_BUSY: the PD cannot answer now; resend the command.
pub const REPLY_BUSY: u8 = 0x79;
/// osdp_FTSTAT: file transfer status.
pub const REPLY_FTSTAT: u8 = 0x7A;
/// osdp_MFGREP: manufacturer-specific reply.
pub const REPLY_MFGREP: u8 = 0x90;

/// Bytes in one osdp_OUT record.
const OUT_RECORD: usize = 4;
/// Bytes in one osdp_LED record.
const LED_RECORD: usize = 14;
/// Bytes in one osdp_BUZ record.
const BUZ_RECORD: usize = 5;
/// Bytes in one osdp_PDCAP record.
const CAP_RECORD: usize = 3;
/// osdp_FILETRANSFER's header: type, total size, offset, fragment length.
pub const FILE_TRANSFER_HEADER: usize = 11;
/// osdp_KEYSET key type: the Secure Channel base key (the only one OSDP defines).
pub const KEY_TYPE_SCBK: u8 = 1;
/// PDCAP function code: receive buffer size (compliance + number = size, u16 LE).
pub const CAP_RECEIVE_BUFFER: u8 = 0x0A;
/// PDCAP function code: check character support (compliance bit 0: CRC-16).
pub const CAP_CHECK_CHARACTER: u8 = 0x08;
/// PDCAP function code: communication security (compliance bit 0: AES-128 Secure Channel).
pub const CAP_COMMUNICATION_SECURITY: u8 = 0x09;

/// Why a message's data does not fit its code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    /// The data has the wrong length for the code.
    #[error("code {code:#04x}: data of {found} bytes, expected {expected}")]
    BadLength {
        /// The command or reply code.
        code: u8,
        /// What the layout allows, in words ("12", "at least 3", "a multiple of 4").
        expected: &'static str,
        /// The data length received.
        found: usize,
    },
    /// A field holds a value the layout does not allow.
    #[error("code {code:#04x}: bad {field} {value}")]
    BadField {
        /// The command or reply code.
        code: u8,
        /// The field's name.
        field: &'static str,
        /// The value found.
        value: u32,
    },
}

/// The first `N` bytes of `data` and the rest, or a length error naming `expected`.
fn take<'a, const N: usize>(
    code: u8,
    data: &'a [u8],
    expected: &'static str,
) -> Result<(&'a [u8; N], &'a [u8]), MessageError> {
    data.split_first_chunk::<N>()
        .ok_or(MessageError::BadLength {
            code,
            expected,
            found: data.len(),
        })
}

/// Exactly `N` bytes, or a length error naming `expected`.
fn exact<const N: usize>(
    code: u8,
    data: &[u8],
    expected: &'static str,
) -> Result<[u8; N], MessageError> {
    <[u8; N]>::try_from(data).map_err(|_| MessageError::BadLength {
        code,
        expected,
        found: data.len(),
    })
}

/// No data at all.
fn empty(code: u8, data: &[u8]) -> Result<(), MessageError> {
    exact::<0>(code, data, "0").map(|_| ())
}

/// `data` cut into records of `N` bytes each, or a length error if it doesn't divide.
fn records<const N: usize>(
    code: u8,
    data: &[u8],
    expected: &'static str,
) -> Result<Vec<[u8; N]>, MessageError> {
    let (chunks, rest) = data.as_chunks::<N>();
    if !rest.is_empty() {
        return Err(MessageError::BadLength {
            code,
            expected,
            found: data.len(),
        });
    }
    Ok(chunks.to_vec())
}

/// One osdp_OUT record: drive one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Out {
    /// Output number (0-based).
    pub output: u8,
    /// Control code: 0 NOP, 1 permanent off, 2 permanent on, 3 permanent off after timer,
    /// 4 permanent on after timer, 5 temporary on then back, 6 temporary off then back.
    pub control: u8,
    /// Timer for codes 3-6, in units of 100 ms.
    pub timer_100ms: u16,
}

/// The temporary part of an osdp_LED record (a blink pattern for a while).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedTemporary {
    /// 0 NOP, 1 cancel the temporary state, 2 set it and start the timer.
    pub control: u8,
    /// On time per cycle, in units of 100 ms.
    pub on_time: u8,
    /// Off time per cycle, in units of 100 ms.
    pub off_time: u8,
    /// Colour while on (0 black, 1 red, 2 green, 3 amber, 4 blue, 5 magenta, 6 cyan, 7 white).
    pub on_color: u8,
    /// Colour while off.
    pub off_color: u8,
    /// How long the temporary state lasts, in units of 100 ms.
    pub timer_100ms: u16,
}

/// The permanent part of an osdp_LED record (the state the LED returns to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedPermanent {
    /// 0 NOP, 1 set the permanent state.
    pub control: u8,
    /// On time per cycle, in units of 100 ms.
    pub on_time: u8,
    /// Off time per cycle, in units of 100 ms.
    pub off_time: u8,
    /// Colour while on (same codes as [`LedTemporary::on_color`]).
    pub on_color: u8,
    /// Colour while off.
    pub off_color: u8,
}

impl LedPermanent {
    /// Control 0 (NOP): the LED's permanent state stays as it is.
    pub const UNCHANGED: LedPermanent = LedPermanent {
        control: 0,
        on_time: 0,
        off_time: 0,
        on_color: 0,
        off_color: 0,
    };
}

/// One osdp_LED record (14 bytes): one LED of one reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Led {
    /// Reader number (0 for the PD itself).
    pub reader: u8,
    /// LED number.
    pub led: u8,
    /// The temporary state.
    pub temporary: LedTemporary,
    /// The permanent state.
    pub permanent: LedPermanent,
}

/// One osdp_BUZ record (5 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buz {
    /// Reader number.
    pub reader: u8,
    /// Tone code: 0 no tone, 1 off, 2 default tone.
    pub tone: u8,
    /// On time, in units of 100 ms.
    pub on_time: u8,
    /// Off time, in units of 100 ms.
    pub off_time: u8,
    /// Number of cycles; 0 repeats until told otherwise.
    pub count: u8,
}

/// osdp_FILETRANSFER: one fragment of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTransfer {
    /// File type: 1 opaque, 0x80-0xFF private (the credential tables use 0x80 and 0x81).
    pub file_type: u8,
    /// Size of the whole file.
    pub total_size: u32,
    /// Offset of this fragment in the file.
    pub offset: u32,
    /// The fragment; its length goes on the wire as a u16 (a frame holds far fewer bytes).
    pub data: Vec<u8>,
}

/// osdp_MFG / osdp_MFGREP body: a vendor code and the vendor's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manufacturer {
    /// The vendor code as on the wire (`0A 44 48` for doorhub, libosdp's integer 0x48440A).
    pub vendor: [u8; 3],
    /// The vendor-defined data (for doorhub: sub-command first).
    pub data: Vec<u8>,
}

impl Manufacturer {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.vendor);
        out.extend_from_slice(&self.data);
    }

    fn decode(code: u8, data: &[u8]) -> Result<Manufacturer, MessageError> {
        let (vendor, rest) = take::<3>(code, data, "at least 3")?;
        Ok(Manufacturer {
            vendor: *vendor,
            data: rest.to_vec(),
        })
    }
}

/// A command, CP to PD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// osdp_POLL (0x60), no data.
    Poll,
    /// osdp_ID (0x61), data `00` (standard report).
    Id,
    /// osdp_CAP (0x62), data `00`.
    Cap,
    /// osdp_LSTAT (0x64), no data.
    LStat,
    /// osdp_OUT (0x68), one or more 4-byte records.
    Out(Vec<Out>),
    /// osdp_LED (0x69), one or more 14-byte records.
    Led(Vec<Led>),
    /// osdp_BUZ (0x6A), one or more 5-byte records (libosdp accepts several; one is usual).
    Buz(Vec<Buz>),
    /// osdp_COMSET (0x6E): new address (0..=0x7E) and baud rate (u32).
    ComSet {
        /// The new address.
        address: u8,
        /// The new baud rate.
        baud: u32,
    },
    /// osdp_KEYSET (0x75): key type 1 (SCBK), length 16, key.
    KeySet {
        /// The new Secure Channel base key (its `Debug` hides the bytes).
        key: KeyBytes,
    },
    /// osdp_CHLNG (0x76): the CP's 8-byte random number.
    Chlng {
        /// RND.A.
        random: [u8; 8],
    },
    /// osdp_SCRYPT (0x77): the CP's 16-byte cryptogram.
    Scrypt {
        /// The server cryptogram.
        cryptogram: [u8; 16],
    },
    /// osdp_FILETRANSFER (0x7C): an 11-byte header and a fragment.
    FileTransfer(FileTransfer),
    /// osdp_MFG (0x80): vendor code and data.
    Mfg(Manufacturer),
    /// osdp_ABORT (0xA2), no data.
    Abort,
    /// Any other code, data kept as is.
    Other {
        /// The command code.
        code: u8,
        /// The data.
        data: Vec<u8>,
    },
}

impl Command {
    /// The command code.
    pub fn code(&self) -> u8 {
        match self {
            Command::Poll => CMD_POLL,
            Command::Id => CMD_ID,
            Command::Cap => CMD_CAP,
            Command::LStat => CMD_LSTAT,
            Command::Out(_) => CMD_OUT,
            Command::Led(_) => CMD_LED,
            Command::Buz(_) => CMD_BUZ,
            Command::ComSet { .. } => CMD_COMSET,
            Command::KeySet { .. } => CMD_KEYSET,
            Command::Chlng { .. } => CMD_CHLNG,
            Command::Scrypt { .. } => CMD_SCRYPT,
            Command::FileTransfer(_) => CMD_FILETRANSFER,
            Command::Mfg(_) => CMD_MFG,
            Command::Abort => CMD_ABORT,
            Command::Other { code, .. } => *code,
        }
    }

    /// The data after the code.
    pub fn encode_data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Command::Poll | Command::LStat | Command::Abort => {}
            // The report type; 0 is the only one OSDP defines.
            Command::Id | Command::Cap => out.push(0x00),
            Command::Out(records) => {
                for r in records {
                    out.extend_from_slice(&[r.output, r.control]);
                    out.extend_from_slice(&r.timer_100ms.to_le_bytes());
                }
            }
            Command::Led(records) => {
                for r in records {
                    let t = &r.temporary;
                    let p = &r.permanent;
                    out.extend_from_slice(&[
                        r.reader,
                        r.led,
                        t.control,
                        t.on_time,
                        t.off_time,
                        t.on_color,
                        t.off_color,
                    ]);
                    out.extend_from_slice(&t.timer_100ms.to_le_bytes());
                    out.extend_from_slice(&[
                        p.control,
                        p.on_time,
                        p.off_time,
                        p.on_color,
                        p.off_color,
                    ]);
                }
            }
            Command::Buz(records) => {
                for r in records {
                    out.extend_from_slice(&[r.reader, r.tone, r.on_time, r.off_time, r.count]);
                }
            }
            Command::ComSet { address, baud } => {
                out.push(*address);
                out.extend_from_slice(&baud.to_le_bytes());
            }
            Command::KeySet { key } => {
                out.extend_from_slice(&[KEY_TYPE_SCBK, 16]);
                out.extend_from_slice(&key.0);
            }
            Command::Chlng { random } => out.extend_from_slice(random),
            Command::Scrypt { cryptogram } => out.extend_from_slice(cryptogram),
            Command::FileTransfer(ft) => {
                out.push(ft.file_type);
                out.extend_from_slice(&ft.total_size.to_le_bytes());
                out.extend_from_slice(&ft.offset.to_le_bytes());
                // A fragment over 65535 bytes can't be in a frame (MAX_FRAME is 1440), and
                // Frame::encode refuses it; saturating keeps this function total.
                let len = u16::try_from(ft.data.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&ft.data);
            }
            Command::Mfg(m) => m.encode_into(&mut out),
            Command::Other { data, .. } => out.extend_from_slice(data),
        }
        out
    }

    /// Decodes a command from its code and data.
    pub fn decode(code: u8, data: &[u8]) -> Result<Self, MessageError> {
        Ok(match code {
            CMD_POLL => empty(code, data).map(|()| Command::Poll)?,
            CMD_ID | CMD_CAP => {
                let [report] = exact::<1>(code, data, "1")?;
                if report != 0 {
                    return Err(MessageError::BadField {
                        code,
                        field: "report type",
                        value: report.into(),
                    });
                }
                if code == CMD_ID {
                    Command::Id
                } else {
                    Command::Cap
                }
            }
            CMD_LSTAT => empty(code, data).map(|()| Command::LStat)?,
            CMD_OUT => Command::Out(
                records::<OUT_RECORD>(code, data, "a multiple of 4")?
                    .into_iter()
                    .map(|[output, control, t0, t1]| Out {
                        output,
                        control,
                        timer_100ms: u16::from_le_bytes([t0, t1]),
                    })
                    .collect(),
            ),
            CMD_LED => Command::Led(
                records::<LED_RECORD>(code, data, "a multiple of 14")?
                    .into_iter()
                    .map(
                        |[
                            reader,
                            led,
                            tc,
                            ton,
                            toff,
                            tonc,
                            toffc,
                            t0,
                            t1,
                            pc,
                            pon,
                            poff,
                            ponc,
                            poffc,
                        ]| {
                            Led {
                                reader,
                                led,
                                temporary: LedTemporary {
                                    control: tc,
                                    on_time: ton,
                                    off_time: toff,
                                    on_color: tonc,
                                    off_color: toffc,
                                    timer_100ms: u16::from_le_bytes([t0, t1]),
                                },
                                permanent: LedPermanent {
                                    control: pc,
                                    on_time: pon,
                                    off_time: poff,
                                    on_color: ponc,
                                    off_color: poffc,
                                },
                            }
                        },
                    )
                    .collect(),
            ),
            CMD_BUZ => Command::Buz(
                records::<BUZ_RECORD>(code, data, "a multiple of 5")?
                    .into_iter()
                    .map(|[reader, tone, on_time, off_time, count]| Buz {
                        reader,
                        tone,
                        on_time,
                        off_time,
                        count,
                    })
                    .collect(),
            ),
            CMD_COMSET => {
                let [address, b0, b1, b2, b3] = exact::<5>(code, data, "5")?;
                Command::ComSet {
                    address,
                    baud: u32::from_le_bytes([b0, b1, b2, b3]),
                }
            }
            CMD_KEYSET => {
                let (&[key_type, length], key) = take::<2>(code, data, "18")?;
                if key_type != KEY_TYPE_SCBK {
                    return Err(MessageError::BadField {
                        code,
                        field: "key type",
                        value: key_type.into(),
                    });
                }
                if length != 16 {
                    return Err(MessageError::BadField {
                        code,
                        field: "key length",
                        value: length.into(),
                    });
                }
                Command::KeySet {
                    key: KeyBytes(exact::<16>(code, key, "18").map_err(|_| {
                        MessageError::BadLength {
                            code,
                            expected: "18",
                            found: data.len(),
                        }
                    })?),
                }
            }
            CMD_CHLNG => Command::Chlng {
                random: exact::<8>(code, data, "8")?,
            },
            CMD_SCRYPT => Command::Scrypt {
                cryptogram: exact::<16>(code, data, "16")?,
            },
            CMD_FILETRANSFER => {
                let (header, fragment) = take::<FILE_TRANSFER_HEADER>(code, data, "at least 11")?;
                let [file_type, s0, s1, s2, s3, o0, o1, o2, o3, l0, l1] = *header;
                let declared = u16::from_le_bytes([l0, l1]);
                if usize::from(declared) != fragment.len() {
                    return Err(MessageError::BadField {
                        code,
                        field: "fragment length",
                        value: declared.into(),
                    });
                }
                Command::FileTransfer(FileTransfer {
                    file_type,
                    total_size: u32::from_le_bytes([s0, s1, s2, s3]),
                    offset: u32::from_le_bytes([o0, o1, o2, o3]),
                    data: fragment.to_vec(),
                })
            }
            CMD_MFG => Command::Mfg(Manufacturer::decode(code, data)?),
            CMD_ABORT => empty(code, data).map(|()| Command::Abort)?,
            _ => Command::Other {
                code,
                data: data.to_vec(),
            },
        })
    }

    /// A plain (no Secure Channel) command frame with CRC-16, the way the hub sends them.
    pub fn to_frame(&self, address: u8, sequence: u8) -> Frame {
        Frame::plain(address, false, sequence, self.code(), self.encode_data())
    }

    /// The command a frame carries (its data must be plain text, i.e. already decrypted).
    pub fn from_frame(frame: &Frame) -> Result<Self, MessageError> {
        Self::decode(frame.code, &frame.data)
    }
}

/// osdp_NAK reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NakReason {
    /// 0: no error.
    None,
    /// 1: message check character(s) error (bad CRC or checksum); libosdp's CP then falls back
    /// from CRC-16 to the checksum.
    MessageCheck,
    /// 2: command length error.
    CommandLength,
    /// 3: unknown command code (not implemented by the PD).
    UnknownCommand,
    /// 4: sequence number error.
    Sequence,
    /// 5: the PD does not support the Secure Channel.
    SecureChannelUnsupported,
    /// 6: unsupported security block, or security conditions not met.
    SecurityConditions,
    /// 7: biometric type not supported.
    BioType,
    /// 8: biometric format not supported.
    BioFormat,
    /// 9: unable to process the command record.
    Record,
    /// Any other code.
    Other(u8),
}

impl From<u8> for NakReason {
    fn from(code: u8) -> Self {
        match code {
            0 => NakReason::None,
            1 => NakReason::MessageCheck,
            2 => NakReason::CommandLength,
            3 => NakReason::UnknownCommand,
            4 => NakReason::Sequence,
            5 => NakReason::SecureChannelUnsupported,
            6 => NakReason::SecurityConditions,
            7 => NakReason::BioType,
            8 => NakReason::BioFormat,
            9 => NakReason::Record,
            other => NakReason::Other(other),
        }
    }
}

impl From<NakReason> for u8 {
    fn from(reason: NakReason) -> u8 {
        match reason {
            NakReason::None => 0,
            NakReason::MessageCheck => 1,
            NakReason::CommandLength => 2,
            NakReason::UnknownCommand => 3,
            NakReason::Sequence => 4,
            NakReason::SecureChannelUnsupported => 5,
            NakReason::SecurityConditions => 6,
            NakReason::BioType => 7,
            NakReason::BioFormat => 8,
            NakReason::Record => 9,
            NakReason::Other(code) => code,
        }
    }
}

/// osdp_PDID: who the PD is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdId {
    /// Vendor code (IEEE OUI) as on the wire.
    pub vendor: [u8; 3],
    /// Model number.
    pub model: u8,
    /// Model version.
    pub version: u8,
    /// Serial number.
    pub serial: u32,
    /// Firmware major version.
    pub firmware_major: u8,
    /// Firmware minor version.
    pub firmware_minor: u8,
    /// Firmware build.
    pub firmware_build: u8,
}

/// One osdp_PDCAP record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// Function code (e.g. [`CAP_RECEIVE_BUFFER`]).
    pub function: u8,
    /// Compliance level (meaning depends on the function).
    pub compliance: u8,
    /// Number of objects (meaning depends on the function).
    pub number: u8,
}

/// osdp_PDCAP: the PD's capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdCap {
    /// The records, in the PD's order.
    pub capabilities: Vec<Capability>,
}

impl PdCap {
    /// The first record for `function`.
    pub fn get(&self, function: u8) -> Option<Capability> {
        self.capabilities
            .iter()
            .find(|c| c.function == function)
            .copied()
    }

    /// The PD's receive buffer size in bytes (function 0x0A: compliance is the low byte, number
    /// the high byte), if it reports one. Every byte of a frame on the wire counts against it.
    pub fn receive_buffer_size(&self) -> Option<u16> {
        self.get(CAP_RECEIVE_BUFFER)
            .map(|c| u16::from_le_bytes([c.compliance, c.number]))
    }

    /// Whether the PD says it checks CRC-16 (function 0x08, compliance bit 0), if it says.
    pub fn supports_crc(&self) -> Option<bool> {
        self.get(CAP_CHECK_CHARACTER)
            .map(|c| c.compliance & 0x01 != 0)
    }

    /// Whether the PD says it supports the AES-128 Secure Channel (function 0x09, bit 0).
    pub fn supports_secure_channel(&self) -> bool {
        self.get(CAP_COMMUNICATION_SECURITY)
            .is_some_and(|c| c.compliance & 0x01 != 0)
    }
}

/// osdp_LSTATR: local status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LStatR {
    /// Tamper: 0 normal, 1 tamper.
    pub tamper: u8,
    /// Power: 0 normal, 1 power failure.
    pub power: u8,
}

/// osdp_RAW: a card read as raw bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    /// Reader number.
    pub reader: u8,
    /// Format: 0 unspecified raw bits, 1 Wiegand.
    pub format: u8,
    /// Number of bits read.
    pub bits: u16,
    /// The bits, MSB first, `ceil(bits / 8)` bytes (a `Raw` with another length does not
    /// survive a round trip: decoding rejects it).
    pub data: Vec<u8>,
}

/// osdp_CCRYPT: the PD's answer to osdp_CHLNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CCrypt {
    /// The PD's client UID.
    pub client_uid: [u8; 8],
    /// RND.B, the PD's random number.
    pub pd_random: [u8; 8],
    /// The client cryptogram.
    pub pd_cryptogram: [u8; 16],
}

/// osdp_FTSTAT: file transfer status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FtStat {
    /// Action flags: bit 0 interleave allowed, bit 1 leave the Secure Channel, bit 2 a separate
    /// poll response is available.
    pub action: u8,
    /// Requested delay before the next fragment, in ms.
    pub delay_ms: u16,
    /// Status: see the `STATUS_*` constants. "Processed" (1) only means the bytes arrived.
    pub status: i16,
    /// Alternative maximum fragment message size, 0 for no change.
    pub update_msg_max: u16,
}

impl FtStat {
    /// Status 0: ok to proceed.
    pub const STATUS_OK: i16 = 0;
    /// Status 1: file contents processed (arrived; not necessarily applied).
    pub const STATUS_PROCESSED: i16 = 1;
    /// Status 2: rebooting now.
    pub const STATUS_REBOOTING: i16 = 2;
    /// Status 3: finishing; keep sending idle fragments.
    pub const STATUS_FINISHING: i16 = 3;
    /// Status -1: aborted.
    pub const STATUS_ABORT: i16 = -1;
    /// Status -2: unrecognised file contents.
    pub const STATUS_UNRECOGNIZED: i16 = -2;
    /// Status -3: malformed file contents.
    pub const STATUS_MALFORMED: i16 = -3;
}

/// A reply, PD to CP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// osdp_ACK (0x40), no data.
    Ack,
    /// osdp_NAK (0x41): reason code (any bytes after it are ignored).
    Nak(NakReason),
    /// osdp_PDID (0x45), 12 bytes.
    PdId(PdId),
    /// osdp_PDCAP (0x46), 3-byte records.
    PdCap(PdCap),
    /// osdp_LSTATR (0x48), 2 bytes.
    LStatR(LStatR),
    /// osdp_RAW (0x50): reader, format, bit count, bits.
    Raw(Raw),
    /// osdp_COM (0x54): the address and baud rate the PD now uses.
    Com {
        /// Address.
        address: u8,
        /// Baud rate.
        baud: u32,
    },
    /// osdp_CCRYPT (0x76), 32 bytes.
    CCrypt(CCrypt),
    /// osdp_RMAC_I (0x78): the initial R-MAC, 16 bytes.
    RMacI {
        /// The initial R-MAC.
        rmac: [u8; 16],
    },
    /// osdp_BUSY (0x79), no data.
    Busy,
    /// osdp_FTSTAT (0x7A), 7 bytes.
    FtStat(FtStat),
    /// osdp_MFGREP (0x90): vendor code and data.
    MfgRep(Manufacturer),
    /// Any other code, data kept as is.
    Other {
        /// The reply code.
        code: u8,
        /// The data.
        data: Vec<u8>,
    },
}

impl Reply {
    /// The reply code.
    pub fn code(&self) -> u8 {
        match self {
            Reply::Ack => REPLY_ACK,
            Reply::Nak(_) => REPLY_NAK,
            Reply::PdId(_) => REPLY_PDID,
            Reply::PdCap(_) => REPLY_PDCAP,
            Reply::LStatR(_) => REPLY_LSTATR,
            Reply::Raw(_) => REPLY_RAW,
            Reply::Com { .. } => REPLY_COM,
            Reply::CCrypt(_) => REPLY_CCRYPT,
            Reply::RMacI { .. } => REPLY_RMAC_I,
            Reply::Busy => REPLY_BUSY,
            Reply::FtStat(_) => REPLY_FTSTAT,
            Reply::MfgRep(_) => REPLY_MFGREP,
            Reply::Other { code, .. } => *code,
        }
    }

    /// The data after the code.
    pub fn encode_data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Reply::Ack | Reply::Busy => {}
            Reply::Nak(reason) => out.push((*reason).into()),
            Reply::PdId(id) => {
                out.extend_from_slice(&id.vendor);
                out.extend_from_slice(&[id.model, id.version]);
                out.extend_from_slice(&id.serial.to_le_bytes());
                out.extend_from_slice(&[id.firmware_major, id.firmware_minor, id.firmware_build]);
            }
            Reply::PdCap(cap) => {
                for c in &cap.capabilities {
                    out.extend_from_slice(&[c.function, c.compliance, c.number]);
                }
            }
            Reply::LStatR(s) => out.extend_from_slice(&[s.tamper, s.power]),
            Reply::Raw(raw) => {
                out.extend_from_slice(&[raw.reader, raw.format]);
                out.extend_from_slice(&raw.bits.to_le_bytes());
                out.extend_from_slice(&raw.data);
            }
            Reply::Com { address, baud } => {
                out.push(*address);
                out.extend_from_slice(&baud.to_le_bytes());
            }
            Reply::CCrypt(c) => {
                out.extend_from_slice(&c.client_uid);
                out.extend_from_slice(&c.pd_random);
                out.extend_from_slice(&c.pd_cryptogram);
            }
            Reply::RMacI { rmac } => out.extend_from_slice(rmac),
            Reply::FtStat(s) => {
                out.push(s.action);
                out.extend_from_slice(&s.delay_ms.to_le_bytes());
                out.extend_from_slice(&s.status.to_le_bytes());
                out.extend_from_slice(&s.update_msg_max.to_le_bytes());
            }
            Reply::MfgRep(m) => m.encode_into(&mut out),
            Reply::Other { data, .. } => out.extend_from_slice(data),
        }
        out
    }

    /// Decodes a reply from its code and data.
    pub fn decode(code: u8, data: &[u8]) -> Result<Self, MessageError> {
        Ok(match code {
            REPLY_ACK => empty(code, data).map(|()| Reply::Ack)?,
            REPLY_NAK => {
                // OSDP allows error-specific data after the reason; nothing here uses it.
                let (&[reason], _) = take::<1>(code, data, "at least 1")?;
                Reply::Nak(reason.into())
            }
            REPLY_PDID => {
                let [
                    v0,
                    v1,
                    v2,
                    model,
                    version,
                    s0,
                    s1,
                    s2,
                    s3,
                    major,
                    minor,
                    build,
                ] = exact::<12>(code, data, "12")?;
                Reply::PdId(PdId {
                    vendor: [v0, v1, v2],
                    model,
                    version,
                    serial: u32::from_le_bytes([s0, s1, s2, s3]),
                    firmware_major: major,
                    firmware_minor: minor,
                    firmware_build: build,
                })
            }
            REPLY_PDCAP => Reply::PdCap(PdCap {
                capabilities: records::<CAP_RECORD>(code, data, "a multiple of 3")?
                    .into_iter()
                    .map(|[function, compliance, number]| Capability {
                        function,
                        compliance,
                        number,
                    })
                    .collect(),
            }),
            REPLY_LSTATR => {
                let [tamper, power] = exact::<2>(code, data, "2")?;
                Reply::LStatR(LStatR { tamper, power })
            }
            REPLY_RAW => {
                let (&[reader, format, b0, b1], bits_data) = take::<4>(code, data, "at least 4")?;
                let bits = u16::from_le_bytes([b0, b1]);
                if bits_data.len() != usize::from(bits).div_ceil(8) {
                    return Err(MessageError::BadField {
                        code,
                        field: "bit count",
                        value: bits.into(),
                    });
                }
                Reply::Raw(Raw {
                    reader,
                    format,
                    bits,
                    data: bits_data.to_vec(),
                })
            }
            REPLY_COM => {
                let [address, b0, b1, b2, b3] = exact::<5>(code, data, "5")?;
                Reply::Com {
                    address,
                    baud: u32::from_le_bytes([b0, b1, b2, b3]),
                }
            }
            REPLY_CCRYPT => {
                // The length is checked once up front so every error names the whole reply.
                exact::<32>(code, data, "32")?;
                let (uid, rest) = take::<8>(code, data, "32")?;
                let (random, rest) = take::<8>(code, rest, "32")?;
                Reply::CCrypt(CCrypt {
                    client_uid: *uid,
                    pd_random: *random,
                    pd_cryptogram: exact::<16>(code, rest, "32")?,
                })
            }
            REPLY_RMAC_I => Reply::RMacI {
                rmac: exact::<16>(code, data, "16")?,
            },
            REPLY_BUSY => empty(code, data).map(|()| Reply::Busy)?,
            REPLY_FTSTAT => {
                let [action, d0, d1, s0, s1, m0, m1] = exact::<7>(code, data, "7")?;
                Reply::FtStat(FtStat {
                    action,
                    delay_ms: u16::from_le_bytes([d0, d1]),
                    status: i16::from_le_bytes([s0, s1]),
                    update_msg_max: u16::from_le_bytes([m0, m1]),
                })
            }
            REPLY_MFGREP => Reply::MfgRep(Manufacturer::decode(code, data)?),
            _ => Reply::Other {
                code,
                data: data.to_vec(),
            },
        })
    }

    /// A plain (no Secure Channel) reply frame with CRC-16, the way a PD answers.
    pub fn to_frame(&self, address: u8, sequence: u8) -> Frame {
        Frame::plain(address, true, sequence, self.code(), self.encode_data())
    }

    /// The reply a frame carries (its data must be plain text, i.e. already decrypted).
    pub fn from_frame(frame: &Frame) -> Result<Self, MessageError> {
        Self::decode(frame.code, &frame.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_layout() {
        let cmd = Command::Out(vec![Out {
            output: 1,
            control: 5,
            timer_100ms: 0x0132,
        }]);
        assert_eq!(cmd.code(), 0x68);
        assert_eq!(cmd.encode_data(), [1, 5, 0x32, 0x01]);
        assert_eq!(Command::decode(0x68, &[1, 5, 0x32, 0x01]), Ok(cmd));
        assert!(Command::decode(0x68, &[1, 5, 0x32]).is_err());
    }

    #[test]
    fn led_layout() {
        let led = Led {
            reader: 0,
            led: 1,
            temporary: LedTemporary {
                control: 2,
                on_time: 3,
                off_time: 4,
                on_color: 2,
                off_color: 0,
                timer_100ms: 0x0A0B,
            },
            permanent: LedPermanent {
                control: 1,
                on_time: 5,
                off_time: 6,
                on_color: 1,
                off_color: 7,
            },
        };
        let bytes = Command::Led(vec![led]).encode_data();
        assert_eq!(bytes, [0, 1, 2, 3, 4, 2, 0, 0x0B, 0x0A, 1, 5, 6, 1, 7]);
        assert_eq!(
            Command::decode(CMD_LED, &bytes),
            Ok(Command::Led(vec![led]))
        );
    }

    #[test]
    fn filetransfer_header() {
        let ft = Command::FileTransfer(FileTransfer {
            file_type: 0x80,
            total_size: 0x0102_0304,
            offset: 0x10,
            data: vec![0xAA, 0xBB],
        });
        let bytes = ft.encode_data();
        assert_eq!(bytes, [0x80, 4, 3, 2, 1, 0x10, 0, 0, 0, 2, 0, 0xAA, 0xBB]);
        assert_eq!(Command::decode(CMD_FILETRANSFER, &bytes), Ok(ft));
        let mut short = bytes.clone();
        short.pop();
        assert!(Command::decode(CMD_FILETRANSFER, &short).is_err());
        assert!(Command::decode(CMD_FILETRANSFER, &bytes[..10]).is_err());
    }

    #[test]
    fn keyset_debug_hides_the_key() {
        let key = [
            0xA7, 0x3C, 0x19, 0xE2, 0x5D, 0x80, 0x41, 0xF6, 0x0B, 0x92, 0xC8, 0x37, 0x6E, 0xD4,
            0x25, 0xBF,
        ];
        let cmd = Command::KeySet { key: KeyBytes(key) };
        let shown = format!("{cmd:?}");
        for form in [
            hex::encode(key),
            hex::encode_upper(key),
            format!("{key:?}"),
            format!("{key:x?}"),
        ] {
            assert!(!shown.contains(&form), "{form} in {shown}");
        }
        assert_eq!(format!("{cmd:?}"), "KeySet { key: KeyBytes(..) }");
    }

    #[test]
    fn keyset_checks_type_and_length() {
        let mut bytes = vec![1, 16];
        bytes.extend_from_slice(&[7; 16]);
        assert_eq!(
            Command::decode(CMD_KEYSET, &bytes),
            Ok(Command::KeySet {
                key: KeyBytes([7; 16])
            })
        );
        bytes[0] = 2;
        assert!(Command::decode(CMD_KEYSET, &bytes).is_err());
        bytes[0] = 1;
        bytes[1] = 15;
        assert!(Command::decode(CMD_KEYSET, &bytes).is_err());
        assert!(Command::decode(CMD_KEYSET, &bytes[..17]).is_err());
    }

    #[test]
    fn pdcap_receive_buffer() {
        let reply = Reply::decode(REPLY_PDCAP, &[0x09, 1, 0, 0x0A, 0x00, 0x01, 0x08, 1, 0]);
        let Ok(Reply::PdCap(cap)) = reply else {
            panic!("not a PDCAP: {reply:?}");
        };
        assert_eq!(cap.receive_buffer_size(), Some(256));
        assert_eq!(cap.supports_crc(), Some(true));
        assert!(cap.supports_secure_channel());
        assert!(Reply::decode(REPLY_PDCAP, &[0x0A, 0]).is_err());
    }

    #[test]
    fn raw_and_pdid() {
        let bytes = [0, 1, 26, 0, 0xDE, 0xAD, 0xBE, 0xC0];
        assert_eq!(
            Reply::decode(REPLY_RAW, &bytes),
            Ok(Reply::Raw(Raw {
                reader: 0,
                format: 1,
                bits: 26,
                data: vec![0xDE, 0xAD, 0xBE, 0xC0],
            }))
        );
        assert!(Reply::decode(REPLY_RAW, &bytes[..7]).is_err());
        let id = [0x0A, 0x44, 0x48, 1, 2, 0x78, 0x56, 0x34, 0x12, 3, 4, 5];
        assert_eq!(
            Reply::decode(REPLY_PDID, &id),
            Ok(Reply::PdId(PdId {
                vendor: [0x0A, 0x44, 0x48],
                model: 1,
                version: 2,
                serial: 0x1234_5678,
                firmware_major: 3,
                firmware_minor: 4,
                firmware_build: 5,
            }))
        );
    }

    #[test]
    fn ftstat_signed_status() {
        let bytes = [1, 10, 0, 0xFF, 0xFF, 0x80, 0];
        assert_eq!(
            Reply::decode(REPLY_FTSTAT, &bytes),
            Ok(Reply::FtStat(FtStat {
                action: 1,
                delay_ms: 10,
                status: FtStat::STATUS_ABORT,
                update_msg_max: 128,
            }))
        );
    }

    #[test]
    fn nak_and_unknown_codes() {
        assert_eq!(
            Reply::decode(REPLY_NAK, &[6]),
            Ok(Reply::Nak(NakReason::SecurityConditions))
        );
        assert_eq!(
            Reply::decode(REPLY_NAK, &[0x42, 1]),
            Ok(Reply::Nak(NakReason::Other(0x42)))
        );
        assert!(Reply::decode(REPLY_NAK, &[]).is_err());
        for code in 0..=255u8 {
            assert_eq!(u8::from(NakReason::from(code)), code);
        }
        assert_eq!(
            Reply::decode(0x53, &[1, 2]),
            Ok(Reply::Other {
                code: 0x53,
                data: vec![1, 2]
            })
        );
        assert_eq!(
            Command::decode(0x65, &[]),
            Ok(Command::Other {
                code: 0x65,
                data: vec![]
            })
        );
    }

    #[test]
    fn every_code_and_length_is_total() {
        // No (code, data) pair of modest size panics.
        let data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        for code in 0..=255u8 {
            for n in 0..data.len() {
                let _ = Command::decode(code, &data[..n]);
                let _ = Reply::decode(code, &data[..n]);
            }
        }
    }
}

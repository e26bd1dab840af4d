//! One OSDP frame on the wire: encode, and check-then-parse decode.
//!
//! ```text
//! [FF] 53 ADDR LEN_LO LEN_HI CTRL [SB_LEN SB_TYPE SB_DATA..] CODE DATA.. [MAC x4] CRC_LO CRC_HI
//!                                                                                  | CKSUM
//! ```
//!
//! - The mark `FF` is optional and not counted in LEN; LEN counts SOM through the check bytes.
//! - ADDR bits 0-6 are the PD address (0x7F broadcast); bit 7 is set on replies.
//! - CTRL bits 0-1 are the sequence number, bit 2 selects CRC-16 (else the 8-bit checksum), bit 3
//!   says a security block follows the header.
//! - The Secure Channel's security block types 0x15-0x18 are followed, after the data, by a 4-byte
//!   MAC; 0x11-0x14 (the handshake) are not. With 0x17/0x18 the data is encrypted; this module
//!   carries it as it is on the wire and leaves the cryptography to [`super::secure`].

use super::crc::{checksum, crc16};
use thiserror::Error;

/// Start of message: the first byte of every frame after the optional mark.
pub const SOM: u8 = 0x53;

/// The mark byte a sender may put before SOM; also what an idle, biased RS-485 line reads as.
pub const MARK: u8 = 0xFF;

/// The largest LEN accepted (spec: frames over 1440 bytes are dropped). Bounds every buffer.
pub const MAX_FRAME: usize = 1440;

/// SOM, address, LEN (2 bytes) and CTRL.
pub const HEADER_LEN: usize = 5;

/// Length of the Secure Channel MAC that follows the data in SCS_15..SCS_18 frames.
pub const MAC_LEN: usize = 4;

/// The broadcast address.
pub const BROADCAST: u8 = 0x7F;

/// Bit 7 of the address byte: set on replies (PD to CP).
const REPLY_BIT: u8 = 0x80;
/// CTRL bits 0-1: the sequence number.
const CTRL_SEQUENCE: u8 = 0x03;
/// CTRL bit 2: CRC-16 rather than the checksum.
const CTRL_CRC: u8 = 0x04;
/// CTRL bit 3: a security block follows the header.
const CTRL_SECURITY: u8 = 0x08;
/// The longest security block data: its length byte counts itself and the type byte.
const MAX_SECURITY_DATA: usize = u8::MAX as usize - 2;

/// Security block types (SIA OSDP 2.2 Annex D), for the Secure Channel.
pub mod scs {
    /// CP to PD, osdp_CHLNG (handshake, no MAC).
    pub const SCS_11: u8 = 0x11;
    /// PD to CP, osdp_CCRYPT (handshake, no MAC).
    pub const SCS_12: u8 = 0x12;
    /// CP to PD, osdp_SCRYPT (handshake, no MAC).
    pub const SCS_13: u8 = 0x13;
    /// PD to CP, osdp_RMAC_I (handshake, no MAC).
    pub const SCS_14: u8 = 0x14;
    /// CP to PD, MAC, data not encrypted (used when there is no data).
    pub const SCS_15: u8 = 0x15;
    /// PD to CP, MAC, data not encrypted (used when there is no data).
    pub const SCS_16: u8 = 0x16;
    /// CP to PD, MAC and encrypted data.
    pub const SCS_17: u8 = 0x17;
    /// PD to CP, MAC and encrypted data.
    pub const SCS_18: u8 = 0x18;
}

/// Why bytes are not a frame, or a frame can't be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The buffer does not start with SOM (optionally after one mark byte).
    #[error("no start of message (0x53) at the start of the buffer")]
    NoSom,
    /// LEN is below the smallest frame CTRL allows, or above [`MAX_FRAME`].
    #[error("bad frame length {0}")]
    BadLength(usize),
    /// The CRC-16 does not match.
    #[error("bad CRC: computed {computed:#06x}, received {received:#06x}")]
    BadCrc {
        /// What the bytes give.
        computed: u16,
        /// What the frame carries.
        received: u16,
    },
    /// The 8-bit checksum does not match.
    #[error("bad checksum: computed {computed:#04x}, received {received:#04x}")]
    BadChecksum {
        /// What the bytes give.
        computed: u8,
        /// What the frame carries.
        received: u8,
    },
    /// The security block is shorter than 2 bytes, does not fit the frame, has an unknown type
    /// (not 0x11-0x18), or (on encode) has more than 253 data bytes.
    #[error("bad security block")]
    BadSecurityBlock,
    /// Encode: the address is over 0x7F (the reply bit is the `reply` field).
    #[error("bad address {0:#04x}")]
    BadAddress(u8),
    /// Encode: the sequence number is over 3.
    #[error("bad sequence number {0}")]
    BadSequence(u8),
    /// Encode: the security block type calls for a MAC (0x15-0x18) and the frame has none.
    #[error("security block type calls for a MAC and the frame has none")]
    MissingMac,
    /// Encode: the frame has a MAC but no security block of a type that carries one.
    #[error("MAC without a security block type that carries one")]
    UnexpectedMac,
    /// Encode: the frame would be longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLong(usize),
}

/// The security block of a Secure Channel frame. On the wire: length byte (`2 + data.len()`),
/// type byte, data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityBlock {
    /// The type, one of [`scs`] (0x11-0x18).
    pub kind: u8,
    /// The data after the type (e.g. one byte saying whether SCBK-D is in use in the handshake).
    pub data: Vec<u8>,
}

impl SecurityBlock {
    /// Whether a frame with this block carries a 4-byte MAC after its data (types 0x15-0x18).
    pub fn carries_mac(&self) -> bool {
        (scs::SCS_15..=scs::SCS_18).contains(&self.kind)
    }

    /// Bytes on the wire, the length byte and the type byte included.
    fn wire_len(&self) -> usize {
        2 + self.data.len()
    }
}

/// One frame, decoded: header fields, security block, code, data and MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// PD address, 0..=0x7F (0x7F is broadcast).
    pub address: u8,
    /// Address bit 7: a reply (PD to CP) rather than a command.
    pub reply: bool,
    /// Sequence number, 0..=3.
    pub sequence: u8,
    /// CRC-16 (CTRL bit 2) rather than the 8-bit checksum.
    pub use_crc: bool,
    /// The security block, present when CTRL bit 3 is set.
    pub security: Option<SecurityBlock>,
    /// Command or reply code.
    pub code: u8,
    /// The data after the code (still encrypted for SCS_17/SCS_18).
    pub data: Vec<u8>,
    /// The MAC after the data; present exactly when the security block type carries one.
    pub mac: Option<[u8; MAC_LEN]>,
}

impl Frame {
    /// A frame in the clear, checked by CRC-16: every frame outside the Secure Channel.
    pub fn plain(address: u8, reply: bool, sequence: u8, code: u8, data: Vec<u8>) -> Frame {
        Frame {
            address,
            reply,
            sequence,
            use_crc: true,
            security: None,
            code,
            data,
            mac: None,
        }
    }

    /// LEN of this frame (SOM through the check bytes, the MAC counted when the security block
    /// calls for one, even before [`Frame::mac`] is filled in), after checking every field fits
    /// the wire. `require_mac` says whether a missing MAC is an error.
    fn wire_len(&self, require_mac: bool) -> Result<usize, FrameError> {
        if self.address > BROADCAST {
            return Err(FrameError::BadAddress(self.address));
        }
        if self.sequence > CTRL_SEQUENCE {
            return Err(FrameError::BadSequence(self.sequence));
        }
        let (security_len, mac_expected) = match &self.security {
            Some(sb) => {
                if !(scs::SCS_11..=scs::SCS_18).contains(&sb.kind)
                    || sb.data.len() > MAX_SECURITY_DATA
                {
                    return Err(FrameError::BadSecurityBlock);
                }
                (sb.wire_len(), sb.carries_mac())
            }
            None => (0, false),
        };
        match (mac_expected, self.mac.is_some()) {
            (true, false) if require_mac => return Err(FrameError::MissingMac),
            (false, true) => return Err(FrameError::UnexpectedMac),
            _ => {}
        }
        let len = HEADER_LEN
            + security_len
            + 1
            + self.data.len()
            + if mac_expected { MAC_LEN } else { 0 }
            + check_len(self.use_crc);
        if len > MAX_FRAME {
            return Err(FrameError::TooLong(len));
        }
        Ok(len)
    }

    /// Appends SOM through the end of the data, with LEN `len`.
    fn write_through_data(&self, out: &mut Vec<u8>, len: usize) {
        out.push(SOM);
        out.push(self.address | if self.reply { REPLY_BIT } else { 0 });
        // `wire_len` checked len <= MAX_FRAME (1440), so it fits in 16 bits; the fallback is
        // never taken.
        let len = u16::try_from(len).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        let mut ctrl = self.sequence & CTRL_SEQUENCE;
        if self.use_crc {
            ctrl |= CTRL_CRC;
        }
        if self.security.is_some() {
            ctrl |= CTRL_SECURITY;
        }
        out.push(ctrl);
        if let Some(sb) = &self.security {
            // `wire_len` checked the block is at most 255 bytes; the fallback is never taken.
            out.push(u8::try_from(sb.wire_len()).unwrap_or(u8::MAX));
            out.push(sb.kind);
            out.extend_from_slice(&sb.data);
        }
        out.push(self.code);
        out.extend_from_slice(&self.data);
    }

    /// The bytes the Secure Channel MAC covers: SOM through the end of the data (as on the wire,
    /// so encrypted for SCS_17/SCS_18), with LEN already counting the MAC and the check bytes.
    /// Works before [`Frame::mac`] is filled in, which is how a sender computes it.
    pub fn mac_input(&self) -> Result<Vec<u8>, FrameError> {
        let len = self.wire_len(false)?;
        let mut out = Vec::with_capacity(len);
        self.write_through_data(&mut out, len);
        Ok(out)
    }

    /// LEN of the encoded frame (not counting the mark byte).
    pub fn encoded_len(&self) -> Result<usize, FrameError> {
        self.wire_len(true)
    }

    /// The frame on the wire, with the mark byte 0xFF first when `mark`. Fails if a field does
    /// not fit the wire (address, sequence, security block, MAC presence, [`MAX_FRAME`]), so that
    /// a frame that encodes always decodes to itself.
    pub fn encode(&self, mark: bool) -> Result<Vec<u8>, FrameError> {
        let len = self.wire_len(true)?;
        let mut out = Vec::with_capacity(len + usize::from(mark));
        if mark {
            out.push(MARK);
        }
        let start = out.len();
        self.write_through_data(&mut out, len);
        if let Some(mac) = &self.mac {
            out.extend_from_slice(mac);
        }
        // The check bytes cover SOM onward, never the mark.
        let covered = out.get(start..).unwrap_or_default();
        if self.use_crc {
            let crc = crc16(covered);
            out.extend_from_slice(&crc.to_le_bytes());
        } else {
            let sum = checksum(covered);
            out.push(sum);
        }
        Ok(out)
    }
}

/// Check bytes at the end of a frame: 2 for CRC-16, 1 for the checksum.
fn check_len(use_crc: bool) -> usize {
    if use_crc { 2 } else { 1 }
}

/// Decodes one frame from the start of `buf` (SOM, or one mark byte then SOM).
///
/// Returns `Ok(None)` while the frame is incomplete (more bytes may complete it),
/// `Ok(Some((frame, consumed)))` with the bytes it took (the mark included), or an error when the
/// bytes at the start cannot be a frame: a caller reading a stream then drops the SOM and looks
/// for the next one. The header and LEN are checked first, then the CRC or checksum over exactly
/// LEN bytes, and only then is the content parsed.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let mark = match buf {
        [] | [MARK] => return Ok(None),
        [MARK, SOM, ..] => 1,
        [SOM, ..] => 0,
        _ => return Err(FrameError::NoSom),
    };
    let rest = buf.get(mark..).unwrap_or_default();
    let Some(&[_, address, len_lo, len_hi, ctrl]) = rest.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = usize::from(u16::from_le_bytes([len_lo, len_hi]));
    let use_crc = ctrl & CTRL_CRC != 0;
    let has_security = ctrl & CTRL_SECURITY != 0;
    // Smallest frame: header, (security block length and type), code, check bytes.
    let min_len = HEADER_LEN + if has_security { 2 } else { 0 } + 1 + check_len(use_crc);
    if len < min_len || len > MAX_FRAME {
        return Err(FrameError::BadLength(len));
    }
    let Some(bytes) = rest.get(..len) else {
        return Ok(None);
    };

    let (body, check) = bytes.split_at(len - check_len(use_crc));
    if use_crc {
        let computed = crc16(body);
        let received = match check {
            [lo, hi] => u16::from_le_bytes([*lo, *hi]),
            // split_at above left exactly two bytes; unreachable, but not a panic if it were.
            _ => return Err(FrameError::BadLength(len)),
        };
        if computed != received {
            return Err(FrameError::BadCrc { computed, received });
        }
    } else {
        let computed = checksum(body);
        let received = check.first().copied().unwrap_or_default();
        if computed != received {
            return Err(FrameError::BadChecksum { computed, received });
        }
    }

    // The check passed: parse. `body` is at least HEADER_LEN + 1 bytes (min_len above).
    let mut content = body.get(HEADER_LEN..).unwrap_or_default();
    let security = if has_security {
        let [sb_len, kind, ..] = *content else {
            return Err(FrameError::BadSecurityBlock);
        };
        let sb_len = usize::from(sb_len);
        if sb_len < 2 || !(scs::SCS_11..=scs::SCS_18).contains(&kind) {
            return Err(FrameError::BadSecurityBlock);
        }
        let Some((block, after)) = content.split_at_checked(sb_len) else {
            return Err(FrameError::BadSecurityBlock);
        };
        content = after;
        Some(SecurityBlock {
            kind,
            data: block.get(2..).unwrap_or_default().to_vec(),
        })
    } else {
        None
    };
    let mac_len = match &security {
        Some(sb) if sb.carries_mac() => MAC_LEN,
        _ => 0,
    };
    let Some((&code, after_code)) = content.split_first() else {
        return Err(FrameError::BadSecurityBlock);
    };
    let Some((data, mac)) = after_code.split_at_checked(after_code.len().saturating_sub(mac_len))
    else {
        return Err(FrameError::BadSecurityBlock);
    };
    let mac = if mac_len == 0 {
        None
    } else {
        match <[u8; MAC_LEN]>::try_from(mac) {
            Ok(mac) => Some(mac),
            // Fewer than four bytes after the code: the block's type promised a MAC.
            Err(_) => return Err(FrameError::BadSecurityBlock),
        }
    };
    let frame = Frame {
        address: address & BROADCAST,
        reply: address & REPLY_BIT != 0,
        sequence: ctrl & CTRL_SEQUENCE,
        use_crc,
        security,
        code,
        data: data.to_vec(),
        mac,
    };
    Ok(Some((frame, mark + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: [u8; 9] = [0xFF, 0x53, 0x00, 0x08, 0x00, 0x04, 0x60, 0xEB, 0xAA];
    const ACK: [u8; 8] = [0x53, 0x80, 0x08, 0x00, 0x04, 0x40, 0x59, 0xAC];

    fn poll() -> Frame {
        Frame::plain(0, false, 0, 0x60, vec![])
    }

    #[test]
    fn known_poll_and_ack() {
        assert_eq!(poll().encode(true).as_deref(), Ok(&POLL[..]));
        assert_eq!(decode(&POLL), Ok(Some((poll(), 9))));
        let ack = Frame {
            reply: true,
            code: 0x40,
            ..poll()
        };
        assert_eq!(ack.encode(false).as_deref(), Ok(&ACK[..]));
        assert_eq!(decode(&ACK), Ok(Some((ack, 8))));
    }

    #[test]
    fn incomplete_is_none_at_every_prefix() {
        for n in 0..POLL.len() {
            assert_eq!(decode(&POLL[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn trailing_bytes_are_not_consumed() {
        let mut buf = ACK.to_vec();
        buf.extend_from_slice(&[0x53, 0x01]);
        assert_eq!(decode(&buf).map(|r| r.map(|(_, n)| n)), Ok(Some(8)));
    }

    #[test]
    fn checksum_frame() {
        let frame = Frame {
            use_crc: false,
            sequence: 2,
            address: 0x12,
            ..poll()
        };
        let bytes = frame.encode(false).unwrap_or_default();
        assert_eq!(bytes.len(), 7);
        assert_eq!(bytes[2..4], [7, 0]);
        assert_eq!(bytes[4], 0x02);
        assert_eq!(decode(&bytes), Ok(Some((frame, 7))));
    }

    #[test]
    fn errors() {
        assert_eq!(decode(&[0x00]), Err(FrameError::NoSom));
        assert_eq!(decode(&[0xFF, 0x00]), Err(FrameError::NoSom));
        assert_eq!(decode(&[0xFF]), Ok(None));
        assert_eq!(
            decode(&[0x53, 0x00, 0x05, 0x00, 0x04]),
            Err(FrameError::BadLength(5))
        );
        assert_eq!(
            decode(&[0x53, 0x00, 0xA1, 0x05, 0x04]),
            Err(FrameError::BadLength(1441))
        );
        let mut bad = ACK;
        bad[7] ^= 1;
        assert!(matches!(decode(&bad), Err(FrameError::BadCrc { .. })));
        let mut sum = poll();
        sum.use_crc = false;
        let mut bytes = sum.encode(false).unwrap_or_default();
        bytes[6] ^= 0x10;
        assert!(matches!(
            decode(&bytes),
            Err(FrameError::BadChecksum { .. })
        ));
    }

    #[test]
    fn security_block_and_mac() {
        let frame = Frame {
            security: Some(SecurityBlock {
                kind: scs::SCS_17,
                data: vec![],
            }),
            data: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
            code: 0x69,
            mac: Some([0xA, 0xB, 0xC, 0xD]),
            ..poll()
        };
        let bytes = frame.encode(false).unwrap_or_default();
        assert_eq!(bytes[4] & 0x08, 0x08);
        assert_eq!(bytes[5..7], [2, 0x17]);
        assert_eq!(
            bytes[bytes.len() - 6..bytes.len() - 2],
            [0xA, 0xB, 0xC, 0xD]
        );
        assert_eq!(decode(&bytes), Ok(Some((frame.clone(), bytes.len()))));

        // The MAC covers SOM..data, with LEN already counting MAC and CRC.
        let unsigned = Frame {
            mac: None,
            ..frame.clone()
        };
        let input = unsigned.mac_input().unwrap_or_default();
        assert_eq!(input[..], bytes[..bytes.len() - 6]);
        assert_eq!(unsigned.encode(false), Err(FrameError::MissingMac));

        // Handshake types carry no MAC.
        let chlng = Frame {
            security: Some(SecurityBlock {
                kind: scs::SCS_11,
                data: vec![1],
            }),
            code: 0x76,
            data: vec![9; 8],
            mac: None,
            ..poll()
        };
        let bytes = chlng.encode(true).unwrap_or_default();
        assert_eq!(bytes[6..9], [3, 0x11, 1]);
        assert_eq!(decode(&bytes), Ok(Some((chlng.clone(), bytes.len()))));
        let with_mac = Frame {
            mac: Some([0; 4]),
            ..chlng
        };
        assert_eq!(with_mac.encode(false), Err(FrameError::UnexpectedMac));
    }

    #[test]
    fn bad_security_blocks_are_rejected_after_the_check() {
        // A CRC-valid frame whose block type is unknown.
        let mut raw = vec![0x53, 0x00, 0, 0, 0x0C, 2, 0x30, 0x60];
        let len = raw.len() + 2;
        raw[2] = len as u8;
        let crc = crc16(&raw);
        raw.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&raw), Err(FrameError::BadSecurityBlock));

        // Block length 1, and a block longer than the frame.
        for sb_len in [1u8, 9] {
            let mut raw = vec![0x53, 0x00, 0, 0, 0x0C, sb_len, 0x11, 0x60];
            let len = raw.len() + 2;
            raw[2] = len as u8;
            let crc = crc16(&raw);
            raw.extend_from_slice(&crc.to_le_bytes());
            assert_eq!(decode(&raw), Err(FrameError::BadSecurityBlock));
        }

        // A MAC-carrying type with fewer than four bytes after the code.
        let mut raw = vec![0x53, 0x00, 0, 0, 0x0C, 2, 0x15, 0x60, 1, 2];
        let len = raw.len() + 2;
        raw[2] = len as u8;
        let crc = crc16(&raw);
        raw.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&raw), Err(FrameError::BadSecurityBlock));
    }

    #[test]
    fn encode_rejects_what_the_wire_cannot_carry() {
        let f = Frame {
            address: 0x80,
            ..poll()
        };
        assert_eq!(f.encode(false), Err(FrameError::BadAddress(0x80)));
        let f = Frame {
            sequence: 4,
            ..poll()
        };
        assert_eq!(f.encode(false), Err(FrameError::BadSequence(4)));
        let f = Frame {
            data: vec![0; MAX_FRAME],
            ..poll()
        };
        assert!(matches!(f.encode(false), Err(FrameError::TooLong(_))));
        let f = Frame {
            data: vec![0; MAX_FRAME - 8],
            ..poll()
        };
        assert_eq!(f.encode(false).map(|b| b.len()), Ok(MAX_FRAME));
        let f = Frame {
            security: Some(SecurityBlock {
                kind: 0x20,
                data: vec![],
            }),
            ..poll()
        };
        assert_eq!(f.encode(false), Err(FrameError::BadSecurityBlock));
    }
}

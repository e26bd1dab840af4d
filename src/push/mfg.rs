//! Manufacturer-specific messages of the credential push (`reader-link.md`): osdp_MFG commands
//! from the hub and osdp_MFGREP replies from a PD.
//!
//! On the wire both start with the 3-byte vendor code (`0A 44 48` by default, config
//! `vendor_code`); [`MfgCommand::encode`] and friends handle the bytes after it, starting at the
//! sub-command, and the `*_with_vendor` functions add or check the vendor code. Integers are
//! little-endian.
//!
//! Size limits: libosdp caps osdp_MFG data at 64 bytes after the vendor code and osdp_MFGREP data
//! at 128 bytes (`notes/libosdp-peer.md`). Every message defined here fits with room to spare:
//! QUERY is 1 byte, TIME 9, STATE 25, ERROR 10 and ACCESS at most 4 + 16 = 20 (128-bit card).
//! Only `Other` can exceed them; its size is the caller's business.

use crate::snapshot::{MAX_BITS, SetDigest};

/// The contract's default vendor code, as the bytes on the wire (libosdp's integer `0x48440A`).
pub const DEFAULT_VENDOR_CODE: [u8; 3] = [0x0A, 0x44, 0x48];
/// libosdp's cap on osdp_MFG data after the vendor code.
pub const MFG_MAX_DATA: usize = 64;
/// libosdp's cap on osdp_MFGREP data.
pub const MFGREP_MAX_DATA: usize = 128;

/// Sub-command QUERY.
pub const SUB_QUERY: u8 = 0x01;
/// Sub-command TIME.
pub const SUB_TIME: u8 = 0x02;
/// Reply STATE.
pub const SUB_STATE: u8 = 0x81;
/// Reply ERROR.
pub const SUB_ERROR: u8 = 0x8F;
/// Reply ACCESS.
pub const SUB_ACCESS: u8 = 0x90;

/// ERROR code: capacity exceeded.
pub const ERROR_CAPACITY: u8 = 1;
/// ERROR code: delta does not apply.
pub const ERROR_DELTA: u8 = 2;
/// ERROR code: malformed file.
pub const ERROR_MALFORMED: u8 = 3;
/// ERROR code: storage failure.
pub const ERROR_STORAGE: u8 = 4;

/// ACCESS reason: ok.
pub const REASON_OK: u8 = 0;
/// ACCESS reason: unknown card.
pub const REASON_UNKNOWN_CARD: u8 = 1;
/// ACCESS reason: not yet valid.
pub const REASON_NOT_YET_VALID: u8 = 2;
/// ACCESS reason: expired.
pub const REASON_EXPIRED: u8 = 3;

/// STATE capacity meaning "unknown".
pub const CAPACITY_UNKNOWN: u32 = u32::MAX;

/// Why manufacturer-specific bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MfgError {
    /// No sub-command byte.
    #[error("empty manufacturer-specific data")]
    Empty,
    /// Shorter than the vendor code.
    #[error("shorter than the 3-byte vendor code")]
    NoVendorCode,
    /// Another vendor's message: not malformed, just not ours.
    #[error("vendor code {got:02X?} is not ours ({want:02X?})")]
    VendorCode {
        /// The message's vendor code.
        got: [u8; 3],
        /// Ours.
        want: [u8; 3],
    },
    /// A known sub-command with a body of the wrong length.
    #[error("sub-command 0x{sub:02x} has {got} body bytes, expected {want}")]
    Length {
        /// The sub-command.
        sub: u8,
        /// The length it needs.
        want: usize,
        /// The length it has.
        got: usize,
    },
    /// ACCESS `granted` other than 0 or 1.
    #[error("ACCESS granted byte is {0}, not 0 or 1")]
    Granted(u8),
    /// ACCESS card bits 0 or over 128, or non-zero padding.
    #[error("ACCESS card of {bits} bits: {reason}")]
    Card {
        /// The card's bit count.
        bits: u8,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Splits off and checks the vendor code; returns the bytes from the sub-command on.
pub fn strip_vendor(vendor: [u8; 3], data: &[u8]) -> Result<&[u8], MfgError> {
    let (head, rest) = data.split_at_checked(3).ok_or(MfgError::NoVendorCode)?;
    if head != vendor {
        let mut got = [0u8; 3];
        got.copy_from_slice(head);
        return Err(MfgError::VendorCode { got, want: vendor });
    }
    Ok(rest)
}

fn with_vendor(vendor: [u8; 3], body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + body.len());
    out.extend_from_slice(&vendor);
    out.extend_from_slice(&body);
    out
}

/// Splits the sub-command off and requires exactly `want` body bytes.
fn body_of(bytes: &[u8], want: usize) -> Result<&[u8], MfgError> {
    let (sub, body) = bytes.split_first().ok_or(MfgError::Empty)?;
    if body.len() != want {
        return Err(MfgError::Length {
            sub: *sub,
            want,
            got: body.len(),
        });
    }
    Ok(body)
}

// Callers pass slices of a body whose exact length was checked, so the ranges are in bounds.
fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// A hub-to-PD osdp_MFG command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfgCommand {
    /// `01`: asks for STATE; no body.
    Query,
    /// `02`: sets the PD's clock.
    Time {
        /// Unix seconds.
        unix_seconds: u64,
    },
    /// Any other sub-command, kept as is. One with a known sub-command decodes as that.
    Other {
        /// The sub-command.
        sub: u8,
        /// The bytes after it.
        body: Vec<u8>,
    },
}

impl MfgCommand {
    /// The bytes from the sub-command on.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            MfgCommand::Query => vec![SUB_QUERY],
            MfgCommand::Time { unix_seconds } => {
                let mut out = vec![SUB_TIME];
                out.extend_from_slice(&unix_seconds.to_le_bytes());
                out
            }
            MfgCommand::Other { sub, body } => {
                let mut out = vec![*sub];
                out.extend_from_slice(body);
                out
            }
        }
    }

    /// Decodes the bytes from the sub-command on; a known sub-command must have its exact length.
    pub fn decode(bytes: &[u8]) -> Result<MfgCommand, MfgError> {
        let (&sub, rest) = bytes.split_first().ok_or(MfgError::Empty)?;
        Ok(match sub {
            SUB_QUERY => {
                body_of(bytes, 0)?;
                MfgCommand::Query
            }
            SUB_TIME => MfgCommand::Time {
                unix_seconds: le_u64(body_of(bytes, 8)?),
            },
            _ => MfgCommand::Other {
                sub,
                body: rest.to_vec(),
            },
        })
    }

    /// The whole osdp_MFG data: vendor code, then [`MfgCommand::encode`].
    pub fn encode_with_vendor(&self, vendor: [u8; 3]) -> Vec<u8> {
        with_vendor(vendor, self.encode())
    }

    /// Decodes whole osdp_MFG data, checking the vendor code.
    pub fn decode_with_vendor(vendor: [u8; 3], data: &[u8]) -> Result<MfgCommand, MfgError> {
        MfgCommand::decode(strip_vendor(vendor, data)?)
    }
}

/// A PD-to-hub osdp_MFGREP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfgReply {
    /// `81`: the PD's table.
    State {
        /// The table's version (0 for a new or wiped PD).
        version: u64,
        /// Entries in the table.
        count: u32,
        /// The table's set digest.
        digest: SetDigest,
        /// Most entries the PD holds; [`CAPACITY_UNKNOWN`] if unknown.
        capacity: u32,
    },
    /// `8F`: a file was refused.
    Error {
        /// One of the `ERROR_*` codes (others are kept as sent).
        code: u8,
        /// The refused file's target version; 0 if unreadable.
        version: u64,
    },
    /// `90`: an access decision the PD made.
    Access {
        /// Whether the door was opened.
        granted: bool,
        /// One of the `REASON_*` codes (others are kept as sent).
        reason: u8,
        /// Number of bits on the card.
        bits: u8,
        /// The card's bits, ceil(bits/8) bytes, padding zero.
        data: Vec<u8>,
    },
    /// Any other sub-command, kept as is. One with a known sub-command decodes as that.
    Other {
        /// The sub-command.
        sub: u8,
        /// The bytes after it.
        body: Vec<u8>,
    },
}

impl MfgReply {
    /// The bytes from the sub-command on.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            MfgReply::State {
                version,
                count,
                digest,
                capacity,
            } => {
                let mut out = vec![SUB_STATE];
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
                out.extend_from_slice(&digest.0);
                out.extend_from_slice(&capacity.to_le_bytes());
                out
            }
            MfgReply::Error { code, version } => {
                let mut out = vec![SUB_ERROR, *code];
                out.extend_from_slice(&version.to_le_bytes());
                out
            }
            MfgReply::Access {
                granted,
                reason,
                bits,
                data,
            } => {
                let mut out = vec![SUB_ACCESS, u8::from(*granted), *reason, *bits];
                out.extend_from_slice(data);
                out
            }
            MfgReply::Other { sub, body } => {
                let mut out = vec![*sub];
                out.extend_from_slice(body);
                out
            }
        }
    }

    /// Decodes the bytes from the sub-command on; a known sub-command must have its exact length,
    /// and an ACCESS card must be 1..=128 bits in ceil(bits/8) bytes with zero padding.
    pub fn decode(bytes: &[u8]) -> Result<MfgReply, MfgError> {
        let (&sub, rest) = bytes.split_first().ok_or(MfgError::Empty)?;
        Ok(match sub {
            SUB_STATE => {
                // Exactly 24 bytes, so every range below is in bounds.
                let b = body_of(bytes, 24)?;
                let mut digest = [0u8; 8];
                digest.copy_from_slice(&b[12..20]);
                MfgReply::State {
                    version: le_u64(&b[0..8]),
                    count: le_u32(&b[8..12]),
                    digest: SetDigest(digest),
                    capacity: le_u32(&b[20..24]),
                }
            }
            SUB_ERROR => {
                // Exactly 9 bytes.
                let b = body_of(bytes, 9)?;
                MfgReply::Error {
                    code: b[0],
                    version: le_u64(&b[1..9]),
                }
            }
            SUB_ACCESS => decode_access(rest)?,
            _ => MfgReply::Other {
                sub,
                body: rest.to_vec(),
            },
        })
    }

    /// The whole osdp_MFGREP data: vendor code, then [`MfgReply::encode`].
    pub fn encode_with_vendor(&self, vendor: [u8; 3]) -> Vec<u8> {
        with_vendor(vendor, self.encode())
    }

    /// Decodes whole osdp_MFGREP data, checking the vendor code.
    pub fn decode_with_vendor(vendor: [u8; 3], data: &[u8]) -> Result<MfgReply, MfgError> {
        MfgReply::decode(strip_vendor(vendor, data)?)
    }
}

fn decode_access(body: &[u8]) -> Result<MfgReply, MfgError> {
    let short = || MfgError::Length {
        sub: SUB_ACCESS,
        want: 3,
        got: body.len(),
    };
    let [granted, reason, bits, data @ ..] = body else {
        return Err(short());
    };
    let granted = match granted {
        0 => false,
        1 => true,
        other => return Err(MfgError::Granted(*other)),
    };
    let bits = *bits;
    if bits == 0 || u64::from(bits) > MAX_BITS {
        return Err(MfgError::Card {
            bits,
            reason: "bits must be 1..=128",
        });
    }
    let want = usize::from(bits).div_ceil(8);
    if data.len() != want {
        return Err(MfgError::Length {
            sub: SUB_ACCESS,
            want: 3 + want,
            got: body.len(),
        });
    }
    let pad = want * 8 - usize::from(bits);
    // want >= 1 since bits >= 1, and data.len() == want.
    if pad > 0 && data[want - 1] & ((1u8 << pad) - 1) != 0 {
        return Err(MfgError::Card {
            bits,
            reason: "padding bits are not zero",
        });
    }
    Ok(MfgReply::Access {
        granted,
        reason: *reason,
        bits,
        data: data.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for c in [
            MfgCommand::Query,
            MfgCommand::Time {
                unix_seconds: 1_793_491_200,
            },
            MfgCommand::Other {
                sub: 0x33,
                body: vec![1, 2],
            },
        ] {
            let wire = c.encode_with_vendor(DEFAULT_VENDOR_CODE);
            assert!(wire.len() - 3 <= MFG_MAX_DATA);
            assert_eq!(
                MfgCommand::decode_with_vendor(DEFAULT_VENDOR_CODE, &wire),
                Ok(c)
            );
        }
        assert_eq!(
            MfgCommand::Time { unix_seconds: 1 }.encode_with_vendor(DEFAULT_VENDOR_CODE),
            [0x0A, 0x44, 0x48, 0x02, 1, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            MfgReply::State {
                version: 1042,
                count: 9_999,
                digest: SetDigest([1, 2, 3, 4, 5, 6, 7, 8]),
                capacity: CAPACITY_UNKNOWN,
            },
            MfgReply::Error {
                code: ERROR_DELTA,
                version: 7,
            },
            MfgReply::Access {
                granted: true,
                reason: REASON_OK,
                bits: 26,
                data: vec![0xbd, 0x88, 0xeb, 0x80],
            },
            MfgReply::Access {
                granted: false,
                reason: REASON_EXPIRED,
                bits: 128,
                data: vec![0xff; 16],
            },
            MfgReply::Other {
                sub: 0x99,
                body: vec![],
            },
        ] {
            let wire = r.encode_with_vendor(DEFAULT_VENDOR_CODE);
            assert!(wire.len() <= MFGREP_MAX_DATA);
            assert_eq!(
                MfgReply::decode_with_vendor(DEFAULT_VENDOR_CODE, &wire),
                Ok(r)
            );
        }
    }

    #[test]
    fn decoding_is_strict() {
        assert_eq!(MfgCommand::decode(&[]), Err(MfgError::Empty));
        assert!(matches!(
            MfgCommand::decode(&[SUB_QUERY, 0]),
            Err(MfgError::Length {
                want: 0,
                got: 1,
                ..
            })
        ));
        assert!(matches!(
            MfgCommand::decode(&[SUB_TIME, 0, 0]),
            Err(MfgError::Length { want: 8, .. })
        ));
        assert!(matches!(
            MfgReply::decode(&[SUB_STATE; 24]),
            Err(MfgError::Length {
                want: 24,
                got: 23,
                ..
            })
        ));
        assert!(matches!(
            MfgReply::decode(&[SUB_ACCESS, 2, 0, 8, 1]),
            Err(MfgError::Granted(2))
        ));
        assert!(matches!(
            MfgReply::decode(&[SUB_ACCESS, 1, 0, 0]),
            Err(MfgError::Card { bits: 0, .. })
        ));
        assert!(matches!(
            MfgReply::decode(&[SUB_ACCESS, 1, 0, 4, 0x11]),
            Err(MfgError::Card { bits: 4, .. })
        ));
        assert!(matches!(
            MfgReply::decode(&[SUB_ACCESS, 1, 0, 9, 1]),
            Err(MfgError::Length { .. })
        ));
        assert_eq!(
            MfgReply::decode_with_vendor(DEFAULT_VENDOR_CODE, &[0x0A, 0x44]),
            Err(MfgError::NoVendorCode)
        );
        assert!(matches!(
            MfgReply::decode_with_vendor(DEFAULT_VENDOR_CODE, &[1, 2, 3, SUB_QUERY]),
            Err(MfgError::VendorCode { got: [1, 2, 3], .. })
        ));
    }
}

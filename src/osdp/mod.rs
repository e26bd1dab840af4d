//! OSDP v2.2 (SIA OSDP 2.2 / IEC 60839-11-5), as the reader link uses it
//! (`../shared/spec/reader-link.md`, restated in `docs/reader-link.md`).
//!
//! - [`crc`]: CRC-16 (AUG-CCITT) and the 8-bit checksum.
//! - [`frame`]: one frame on the wire: encode, and check-then-parse decode.
//! - [`message`]: the commands and replies the link uses, and their data.
//! - [`stream`]: reading frames from a byte stream, resynchronising after noise.
//! - [`secure`]: the Secure Channel (AES-128 keys, cryptograms, MACs, encryption).

pub mod crc;
pub mod frame;
pub mod message;
pub mod secure;
pub mod stream;

//! The OSDP Secure Channel (SIA OSDP 2.2, annex D), for both ends of the link: the hub as the
//! Control Panel (CP) and the reader simulator as the Peripheral Device (PD).
//!
//! Every algorithm here was checked against libosdp (`src/osdp_sc.c`, `src/osdp_phy.c`), our
//! interop peer, and against a CP-to-PD session captured from libosdp 3.2.9 (the replay tests in
//! `tests/osdp_secure.rs`).
//!
//! # Keys and handshake
//! - Session keys: `S-ENC = AES-ECB(SCBK, 01 82 ‖ RND.A[0..6] ‖ 00×8)`, S-MAC1 the same with
//!   `01 01`, S-MAC2 with `01 02`. RND.A is the CP's 8-byte random, RND.B the PD's.
//! - Client cryptogram (PD to CP, in CCRYPT): `AES-ECB(S-ENC, RND.A ‖ RND.B)`.
//! - Server cryptogram (CP to PD, in SCRYPT): `AES-ECB(S-ENC, RND.B ‖ RND.A)`.
//! - Initial R-MAC (PD to CP, in RMAC_I): `AES-ECB(S-MAC2, AES-ECB(S-MAC1, server cryptogram))`.
//!
//! | step | frame | security block | data |
//! |---|---|---|---|
//! | CP | osdp_CHLNG (0x76) | `03 11 k` | RND.A (8) |
//! | PD | osdp_CCRYPT (0x76) | `03 12 k` | client UID (8), RND.B (8), client cryptogram (16) |
//! | CP | osdp_SCRYPT (0x77) | `03 13 k` | server cryptogram (16) |
//! | PD | osdp_RMACI (0x78) | `03 14 01` | initial R-MAC (16) |
//!
//! `k` is 0 when SCBK-D is used and 1 for the reader's own SCBK. Handshake frames carry no MAC and
//! nothing is encrypted in them. [`SecureChannel`] builds and checks their data and security
//! blocks; the frame code places them.
//!
//! # Messages once established
//! The security block is `02 15` (command) / `02 16` (reply) when the message has no data, and
//! `02 17` / `02 18` when it has data, which is then encrypted: `AES-CBC(S-ENC)` with the IV the
//! bitwise NOT of the last MAC of the *other* direction, after padding with `80` and zeros to a
//! multiple of 16 (always at least one byte of padding). The MAC is a CBC-MAC over the frame from
//! SOM (never the `FF` mark) through the last (encrypted) data byte, with LEN already counting the
//! MAC and the CRC: S-MAC1 for all blocks but the last, S-MAC2 for the last, the IV the last MAC of
//! the other direction, and `80`-then-zeros padding only when the length is not a multiple of 16.
//! The first 4 bytes of the 16-byte MAC go on the wire, between the data and the CRC; the whole 16
//! bytes chain: a command's MAC is the IV of the reply's MAC and data, and a reply's MAC the IV of
//! the next command's (the first command uses the initial R-MAC).
//!
//! # How the frame code calls this
//! - Sending: [`SecureChannel::seal_command`] (CP) or [`SecureChannel::seal_reply`] (PD) with the
//!   plaintext data (after the command/reply code) returns a [`Sealing`]. Put its
//!   [`Sealing::security_block`] after CTRL (set CTRL bit 3) and its [`Sealing::payload`] after
//!   the code, set LEN to count the 4 MAC bytes and the CRC, then pass the bytes from SOM through
//!   the payload to [`Sealing::finish`], which returns the 4 MAC bytes to append before the CRC.
//!   Only `finish` advances the MAC chain, and it consumes the `Sealing`, so a message is sealed
//!   exactly once. A retransmission resends the same bytes (sealing the same command again would
//!   give the same bytes, as nothing has advanced in between).
//! - Receiving (CRC already checked): [`SecureChannel::open_reply`] (CP) or
//!   [`SecureChannel::open_command`] (PD) with the bytes from SOM through the data and the 4 MAC
//!   bytes that follow. It verifies the MAC, advances the chain, decrypts, and returns the
//!   plaintext data. Any failure tears the session down (as libosdp does), so the caller
//!   must handshake again; a PD answers it with a plaintext NAK.
//! - A frame without a security block while established is the link's business: libosdp sends a
//!   plaintext NAK when it has dropped its session, and may ACK a KEYSET in plaintext. Call
//!   [`SecureChannel::reset`] then, and on sequence 0, and after a KEYSET is acknowledged.

use std::fmt;

use aes::Aes128;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecryptMut, BlockEncrypt, BlockEncryptMut, KeyInit, KeyIvInit};
use subtle::ConstantTimeEq;

/// AES-128 in CBC mode, for the data blocks and the MAC chain (OSDP pads by itself).
type CbcEnc = cbc::Encryptor<Aes128>;
type CbcDec = cbc::Decryptor<Aes128>;

/// AES block size; padding, cryptograms and MACs are all one or more blocks.
const BLOCK: usize = 16;

/// How many bytes of the 16-byte MAC travel on the wire (the first four).
pub const MAC_WIRE_LEN: usize = 4;

/// SCBK-D, the default Secure Channel Base Key (OSDP 2.2 D.1), used only in install mode to set
/// a reader's own key.
pub const SCBK_D: [u8; 16] = [
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F,
];

/// Start of message; checked so that bytes handed to [`Sealing::finish`] or the open calls are
/// really a frame from SOM (and not from the mark byte).
const SOM: u8 = 0x53;
/// CTRL bit: the frame ends in a CRC-16 (2 bytes) rather than a checksum (1 byte).
const CTRL_CRC: u8 = 0x04;
/// CTRL bit: a security block follows CTRL.
const CTRL_SCB: u8 = 0x08;
/// Offset of CTRL from SOM.
const CTRL_AT: usize = 4;
/// Offset of the security block (its length byte) from SOM.
const SCB_AT: usize = 5;
/// SOM, address, LEN (2), CTRL, security block `02 type`, and the code: what precedes the data
/// in every message of an established session.
const SEALED_HEADER_LEN: usize = 8;
/// End-of-message marker that starts the padding.
const PAD_MARKER: u8 = 0x80;

/// Security block types, shared with the frame code.
pub use crate::osdp::frame::scs;

/// Why a Secure Channel step failed. No input makes this module panic; every malformed or
/// unexpected input ends up here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScError {
    /// A message was sealed or opened without an established session.
    #[error("the secure channel is not established")]
    NotEstablished,
    /// A handshake step came out of order (e.g. CCRYPT without a CHLNG sent).
    #[error("{0} is out of order in the secure channel handshake")]
    OutOfOrder(&'static str),
    /// The call belongs to the other end of the link (e.g. a CP opening a command).
    #[error("{0} is not a step for this end of the link")]
    WrongRole(&'static str),
    /// A field had the wrong length.
    #[error("{what} is {got} bytes long")]
    BadLength {
        /// Which field.
        what: &'static str,
        /// Its length as received.
        got: usize,
    },
    /// The PD's client cryptogram did not verify: the PD holds another key (or is not genuine).
    #[error("the PD's client cryptogram does not verify (wrong key?)")]
    BadClientCryptogram,
    /// The CP's server cryptogram did not verify.
    #[error("the CP's server cryptogram does not verify (wrong key?)")]
    BadServerCryptogram,
    /// The PD's initial R-MAC is not the one the session keys give.
    #[error("the PD's initial R-MAC does not verify")]
    BadInitialRmac,
    /// A message's MAC did not verify: tampered, replayed, or out of step.
    #[error("the message MAC does not verify")]
    BadMac,
    /// Decrypted data did not end in `80` then zeros, or was not whole blocks.
    #[error("the encrypted data block is not padded correctly")]
    BadPadding,
    /// The bytes are not a frame with the security block this step needs.
    #[error("malformed secure frame: {0}")]
    Malformed(&'static str),
    /// A reply was opened with no command sealed since the last reply (a replay), or a reply
    /// sealed with no command opened since the last reply.
    #[error("{0}")]
    OutOfTurn(&'static str),
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Random(getrandom::Error),
}

/// Which key a handshake uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scbk {
    /// SCBK-D ([`SCBK_D`]), for install mode only; signalled by `k = 0` in the handshake blocks.
    Default,
    /// The reader's own SCBK; signalled by `k = 1`.
    Key([u8; 16]),
}

impl fmt::Debug for Scbk {
    // Never print key material into logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scbk::Default => f.write_str("Scbk::Default"),
            Scbk::Key(_) => f.write_str("Scbk::Key(..)"),
        }
    }
}

/// 16 bytes of key material (a reader's SCBK, or the new key of an osdp_KEYSET): copied and
/// compared like the array it wraps, but its `Debug` never shows the bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyBytes(pub [u8; 16]);

impl fmt::Debug for KeyBytes {
    // Never print key material into logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyBytes(..)")
    }
}

impl Scbk {
    /// The 16 key bytes.
    pub fn bytes(&self) -> [u8; 16] {
        match self {
            Scbk::Default => SCBK_D,
            Scbk::Key(key) => *key,
        }
    }

    /// The handshake blocks' data byte `k`: 0 for SCBK-D, 1 for an SCBK.
    pub fn block_byte(&self) -> u8 {
        match self {
            Scbk::Default => 0,
            Scbk::Key(_) => 1,
        }
    }

    /// The key a PD answers a CHLNG with, the way libosdp decides it: SCBK-D only when the CP
    /// asked for it (`k = 0`) and the PD is in install mode, otherwise the PD's own key. `None`
    /// when the PD has no key to use (it then NAKs the CHLNG).
    pub fn for_pd(requested: u8, own: Option<[u8; 16]>, install_mode: bool) -> Option<Scbk> {
        if requested == 0 && install_mode {
            Some(Scbk::Default)
        } else {
            own.map(Scbk::Key)
        }
    }
}

/// A 16-byte random key from the operating system, for KEYSET to a reader in install mode.
pub fn random_key() -> Result<[u8; 16], ScError> {
    let mut key = [0u8; 16];
    getrandom::getrandom(&mut key).map_err(ScError::Random)?;
    Ok(key)
}

/// RND.A or RND.B.
fn random_8() -> Result<[u8; 8], ScError> {
    let mut rnd = [0u8; 8];
    getrandom::getrandom(&mut rnd).map_err(ScError::Random)?;
    Ok(rnd)
}

/// One AES-128 block encryption (ECB of one block).
fn aes_block(key: &[u8; 16], block: &[u8; 16]) -> [u8; 16] {
    let cipher = Aes128::new(&GenericArray::from(*key));
    let mut b = GenericArray::from(*block);
    cipher.encrypt_block(&mut b);
    b.into()
}

fn not_block(a: &[u8; 16]) -> [u8; 16] {
    let mut out = *a;
    for b in &mut out {
        *b = !*b;
    }
    out
}

/// Equality that takes the same time wherever the first difference is, so a forged MAC or
/// cryptogram learns nothing from timing.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A 16-byte block from a slice of exactly 16 bytes; an error otherwise.
fn block_of(bytes: &[u8], what: &'static str) -> Result<[u8; 16], ScError> {
    bytes.try_into().map_err(|_| ScError::BadLength {
        what,
        got: bytes.len(),
    })
}

/// `80` then zeros up to the next multiple of 16; always adds at least one byte.
fn pad(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((data.len() / BLOCK + 1) * BLOCK);
    out.extend_from_slice(data);
    out.push(PAD_MARKER);
    while !out.len().is_multiple_of(BLOCK) {
        out.push(0);
    }
    out
}

/// Strips `80`-then-zeros padding. Like libosdp, any number of zeros is accepted (the MAC was
/// verified first, so the padding is the sender's own, and there is no padding oracle).
fn unpad(mut data: Vec<u8>) -> Result<Vec<u8>, ScError> {
    let marker = data
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(ScError::BadPadding)?;
    if data.get(marker) != Some(&PAD_MARKER) {
        return Err(ScError::BadPadding);
    }
    data.truncate(marker);
    Ok(data)
}

/// The three AES-128 session keys of one Secure Channel session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// S-ENC: encrypts data blocks and makes the cryptograms.
    pub s_enc: [u8; 16],
    /// S-MAC1: the CBC-MAC key for every block but the last.
    pub s_mac1: [u8; 16],
    /// S-MAC2: the CBC-MAC key for the last block.
    pub s_mac2: [u8; 16],
}

impl fmt::Debug for SessionKeys {
    // Never print key material into logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

impl SessionKeys {
    /// Derives the session keys from the base key and the CP's random (only its first 6 bytes
    /// count, per the standard).
    pub fn derive(scbk: &[u8; 16], cp_random: &[u8; 8]) -> SessionKeys {
        let seed = |second: u8| {
            let mut block = [0u8; 16];
            block[0] = 0x01;
            block[1] = second;
            block[2..8].copy_from_slice(&cp_random[..6]);
            aes_block(scbk, &block)
        };
        SessionKeys {
            s_enc: seed(0x82),
            s_mac1: seed(0x01),
            s_mac2: seed(0x02),
        }
    }

    /// The client cryptogram, which the PD sends in CCRYPT: `AES(S-ENC, RND.A ‖ RND.B)`.
    pub fn client_cryptogram(&self, cp_random: &[u8; 8], pd_random: &[u8; 8]) -> [u8; 16] {
        aes_block(&self.s_enc, &concat(cp_random, pd_random))
    }

    /// The server cryptogram, which the CP sends in SCRYPT: `AES(S-ENC, RND.B ‖ RND.A)`.
    pub fn server_cryptogram(&self, cp_random: &[u8; 8], pd_random: &[u8; 8]) -> [u8; 16] {
        aes_block(&self.s_enc, &concat(pd_random, cp_random))
    }

    /// The initial R-MAC, which the PD sends in RMAC_I and which starts the MAC chain:
    /// `AES(S-MAC2, AES(S-MAC1, server cryptogram))`.
    pub fn initial_rmac(&self, server_cryptogram: &[u8; 16]) -> [u8; 16] {
        aes_block(&self.s_mac2, &aes_block(&self.s_mac1, server_cryptogram))
    }

    /// The 16-byte MAC of `msg` with chaining value `iv`: CBC with S-MAC1 over all blocks but
    /// the last, S-MAC2 for the last; `80`-then-zeros padding only when `msg` is not whole
    /// blocks (an empty `msg` is one padding block, as in libosdp).
    pub fn mac(&self, iv: &[u8; 16], msg: &[u8]) -> [u8; 16] {
        let mut blocks = msg.to_vec();
        if !msg.len().is_multiple_of(BLOCK) || msg.is_empty() {
            blocks.push(PAD_MARKER);
            blocks.resize(blocks.len().next_multiple_of(BLOCK), 0);
        }
        // At least one block: the last one goes under S-MAC2, chained from the others.
        let split = blocks.len() - BLOCK;
        let (init, last) = blocks.split_at_mut(split);
        let mut mac1 = CbcEnc::new(&self.s_mac1.into(), &(*iv).into());
        for chunk in init.chunks_exact_mut(BLOCK) {
            mac1.encrypt_block_mut(GenericArray::from_mut_slice(chunk));
        }
        let chain = match init.rchunks_exact(BLOCK).next() {
            Some(prev) => GenericArray::clone_from_slice(prev),
            None => GenericArray::from(*iv),
        };
        let mut mac2 = CbcEnc::new(&self.s_mac2.into(), &chain);
        let last = GenericArray::from_mut_slice(last);
        mac2.encrypt_block_mut(last);
        (*last).into()
    }

    /// Pads and encrypts a data block: AES-CBC with S-ENC, IV `!last_mac_other_direction`.
    pub fn encrypt(&self, last_mac_other_direction: &[u8; 16], data: &[u8]) -> Vec<u8> {
        let iv = not_block(last_mac_other_direction);
        let mut cbc = CbcEnc::new(&self.s_enc.into(), &iv.into());
        let mut out = pad(data);
        for chunk in out.chunks_exact_mut(BLOCK) {
            cbc.encrypt_block_mut(GenericArray::from_mut_slice(chunk));
        }
        out
    }

    /// Decrypts a data block and strips its padding; the inverse of [`SessionKeys::encrypt`].
    pub fn decrypt(
        &self,
        last_mac_other_direction: &[u8; 16],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, ScError> {
        if !ciphertext.len().is_multiple_of(BLOCK) || ciphertext.is_empty() {
            return Err(ScError::BadPadding);
        }
        let iv = not_block(last_mac_other_direction);
        let mut cbc = CbcDec::new(&self.s_enc.into(), &iv.into());
        let mut out = ciphertext.to_vec();
        for chunk in out.chunks_exact_mut(BLOCK) {
            cbc.decrypt_block_mut(GenericArray::from_mut_slice(chunk));
        }
        unpad(out)
    }
}

fn concat(a: &[u8; 8], b: &[u8; 8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(a);
    out[8..].copy_from_slice(b);
    out
}

/// Which end of the link a [`SecureChannel`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The Control Panel (the hub): starts handshakes, sends commands, opens replies.
    Cp,
    /// The Peripheral Device (the reader simulator): answers handshakes, opens commands, sends
    /// replies.
    Pd,
}

/// The security block and data of one handshake frame (no MAC, nothing encrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeMessage {
    /// The security block to place after CTRL (with CTRL bit 3 set): `03 type k`.
    pub security_block: [u8; 3],
    /// The command or reply data, after the code byte.
    pub data: Vec<u8>,
}

/// An established session's keys and MAC chain.
#[derive(Clone)]
struct Session {
    keys: SessionKeys,
    /// The last command MAC (sent by the CP, received by the PD): the IV of the reply's MAC and
    /// data.
    c_mac: [u8; 16],
    /// The last reply MAC, starting with the initial R-MAC: the IV of the next command's MAC
    /// and data.
    r_mac: [u8; 16],
    /// CP: a command was sealed and its reply not yet opened. PD: a command was opened and not
    /// yet answered. Guards against opening a replayed reply and sealing two replies for one
    /// command.
    reply_due: bool,
    scbk: Scbk,
    client_uid: [u8; 8],
}

#[derive(Clone)]
enum State {
    Idle,
    /// CP: CHLNG sent.
    CpChallenged {
        scbk: Scbk,
        cp_random: [u8; 8],
    },
    /// CP: CCRYPT verified, SCRYPT sent.
    CpCryptogramSent {
        keys: SessionKeys,
        scbk: Scbk,
        client_uid: [u8; 8],
        expected_rmac: [u8; 16],
    },
    /// PD: CCRYPT sent.
    PdChallenged {
        keys: SessionKeys,
        scbk: Scbk,
        client_uid: [u8; 8],
        cp_random: [u8; 8],
        pd_random: [u8; 8],
    },
    Established(Session),
}

/// The Secure Channel state of one reader link, at either end. Starts idle; a handshake
/// establishes it; any failure returns it to idle.
#[derive(Clone)]
pub struct SecureChannel {
    role: Role,
    state: State,
}

impl fmt::Debug for SecureChannel {
    // Keys and MACs stay out of logs; the state name is what a reader of a log needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Idle => "idle",
            State::CpChallenged { .. } => "challenged",
            State::CpCryptogramSent { .. } => "cryptogram sent",
            State::PdChallenged { .. } => "challenged",
            State::Established(_) => "established",
        };
        f.debug_struct("SecureChannel")
            .field("role", &self.role)
            .field("state", &state)
            .finish()
    }
}

/// Reads the parts of a frame that the Secure Channel checks, from SOM through the data.
struct SealedFrame<'a> {
    scs: u8,
    data: &'a [u8],
}

fn parse_sealed(mac_input: &[u8]) -> Result<SealedFrame<'_>, ScError> {
    if mac_input.len() < SEALED_HEADER_LEN {
        return Err(ScError::Malformed("shorter than a secure message header"));
    }
    if mac_input[0] != SOM {
        return Err(ScError::Malformed("does not start at SOM"));
    }
    if mac_input[CTRL_AT] & CTRL_SCB == 0 {
        return Err(ScError::Malformed("CTRL has no security block"));
    }
    if mac_input[SCB_AT] != 2 {
        return Err(ScError::Malformed("security block is not 2 bytes"));
    }
    Ok(SealedFrame {
        scs: mac_input[SCB_AT + 1],
        data: &mac_input[SEALED_HEADER_LEN..],
    })
}

impl SecureChannel {
    /// A new, idle channel for one end of a link.
    pub fn new(role: Role) -> SecureChannel {
        SecureChannel {
            role,
            state: State::Idle,
        }
    }

    /// This end of the link.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the handshake has completed and messages can be sealed and opened.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// The key of the established session (SCBK-D means the CP must KEYSET a fresh key);
    /// `None` when not established.
    pub fn scbk(&self) -> Option<Scbk> {
        match &self.state {
            State::Established(s) => Some(s.scbk),
            _ => None,
        }
    }

    /// The PD's client UID from the handshake (CP: from CCRYPT), once known.
    pub fn client_uid(&self) -> Option<[u8; 8]> {
        match &self.state {
            State::Established(s) => Some(s.client_uid),
            State::CpCryptogramSent { client_uid, .. } | State::PdChallenged { client_uid, .. } => {
                Some(*client_uid)
            }
            _ => None,
        }
    }

    /// Drops any session or handshake: after sequence 0, a plaintext NAK or KEYSET ACK while
    /// established, a handshake timeout, or a link going offline.
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    fn need(&self, role: Role, step: &'static str) -> Result<(), ScError> {
        if self.role == role {
            Ok(())
        } else {
            Err(ScError::WrongRole(step))
        }
    }

    // ---- CP handshake ----

    /// CP: starts a handshake with a fresh random RND.A. Returns the osdp_CHLNG block and data.
    /// Any earlier session is dropped.
    pub fn begin(&mut self, scbk: Scbk) -> Result<HandshakeMessage, ScError> {
        let cp_random = random_8()?;
        self.begin_with_random(scbk, cp_random)
    }

    /// CP: [`SecureChannel::begin`] with a given RND.A, for tests and replayed transcripts.
    /// Production code uses `begin`, as a predictable RND.A weakens the session.
    pub fn begin_with_random(
        &mut self,
        scbk: Scbk,
        cp_random: [u8; 8],
    ) -> Result<HandshakeMessage, ScError> {
        self.need(Role::Cp, "CHLNG")?;
        self.state = State::CpChallenged { scbk, cp_random };
        Ok(HandshakeMessage {
            security_block: [3, scs::SCS_11, scbk.block_byte()],
            data: cp_random.to_vec(),
        })
    }

    /// CP: checks osdp_CCRYPT's 32 data bytes (client UID, RND.B, client cryptogram) and
    /// returns the osdp_SCRYPT block and data (the server cryptogram). On any error the
    /// handshake is over (a CP then typically retries with SCBK-D, or gives up).
    pub fn on_ccrypt(&mut self, ccrypt: &[u8]) -> Result<HandshakeMessage, ScError> {
        self.need(Role::Cp, "CCRYPT")?;
        // Out of order leaves the state alone, so a stray reply cannot end a session.
        let State::CpChallenged { scbk, cp_random } = self.state else {
            return Err(ScError::OutOfOrder("CCRYPT"));
        };
        self.state = State::Idle;
        if ccrypt.len() != 32 {
            return Err(ScError::BadLength {
                what: "CCRYPT data",
                got: ccrypt.len(),
            });
        }
        let mut client_uid = [0u8; 8];
        let mut pd_random = [0u8; 8];
        client_uid.copy_from_slice(&ccrypt[..8]);
        pd_random.copy_from_slice(&ccrypt[8..16]);
        let keys = SessionKeys::derive(&scbk.bytes(), &cp_random);
        if !ct_eq(
            &keys.client_cryptogram(&cp_random, &pd_random),
            &ccrypt[16..32],
        ) {
            return Err(ScError::BadClientCryptogram);
        }
        let server = keys.server_cryptogram(&cp_random, &pd_random);
        let expected_rmac = keys.initial_rmac(&server);
        self.state = State::CpCryptogramSent {
            keys,
            scbk,
            client_uid,
            expected_rmac,
        };
        Ok(HandshakeMessage {
            security_block: [3, scs::SCS_13, scbk.block_byte()],
            data: server.to_vec(),
        })
    }

    /// CP: checks osdp_RMAC_I's 16 data bytes against the expected initial R-MAC and, if they
    /// match, establishes the session. (libosdp's own CP trusts the value unchecked; checking it
    /// proves the PD accepted our cryptogram with the same keys.)
    pub fn on_rmac_i(&mut self, rmac_i: &[u8]) -> Result<(), ScError> {
        self.need(Role::Cp, "RMAC_I")?;
        // Out of order leaves the state alone, so a stray reply cannot end a session; in order,
        // the handshake is over whatever the outcome.
        let State::CpCryptogramSent {
            keys,
            scbk,
            client_uid,
            expected_rmac,
        } = &self.state
        else {
            return Err(ScError::OutOfOrder("RMAC_I"));
        };
        let (keys, scbk, client_uid, expected_rmac) =
            (keys.clone(), *scbk, *client_uid, *expected_rmac);
        self.state = State::Idle;
        let got = block_of(rmac_i, "RMAC_I data")?;
        if !ct_eq(&got, &expected_rmac) {
            return Err(ScError::BadInitialRmac);
        }
        self.state = State::Established(Session {
            keys,
            c_mac: [0; 16],
            r_mac: expected_rmac,
            reply_due: false,
            scbk,
            client_uid,
        });
        Ok(())
    }

    // ---- PD handshake ----

    /// PD: answers osdp_CHLNG (8 data bytes, RND.A) with a fresh RND.B. `scbk` is the key the PD
    /// uses (see [`Scbk::for_pd`]); `client_uid` is the PD's 8-byte cUID (libosdp: vendor code
    /// 2 bytes, model, version, serial 4 bytes). Returns the osdp_CCRYPT block and data. Any
    /// earlier session is dropped, as in libosdp.
    pub fn on_chlng(
        &mut self,
        scbk: Scbk,
        client_uid: [u8; 8],
        chlng: &[u8],
    ) -> Result<HandshakeMessage, ScError> {
        let pd_random = random_8()?;
        self.on_chlng_with_random(scbk, client_uid, chlng, pd_random)
    }

    /// PD: [`SecureChannel::on_chlng`] with a given RND.B, for tests and replayed transcripts.
    pub fn on_chlng_with_random(
        &mut self,
        scbk: Scbk,
        client_uid: [u8; 8],
        chlng: &[u8],
        pd_random: [u8; 8],
    ) -> Result<HandshakeMessage, ScError> {
        self.need(Role::Pd, "CHLNG")?;
        self.state = State::Idle;
        let cp_random: [u8; 8] = chlng.try_into().map_err(|_| ScError::BadLength {
            what: "CHLNG data",
            got: chlng.len(),
        })?;
        let keys = SessionKeys::derive(&scbk.bytes(), &cp_random);
        let cryptogram = keys.client_cryptogram(&cp_random, &pd_random);
        let mut data = Vec::with_capacity(32);
        data.extend_from_slice(&client_uid);
        data.extend_from_slice(&pd_random);
        data.extend_from_slice(&cryptogram);
        self.state = State::PdChallenged {
            keys,
            scbk,
            client_uid,
            cp_random,
            pd_random,
        };
        Ok(HandshakeMessage {
            security_block: [3, scs::SCS_12, scbk.block_byte()],
            data,
        })
    }

    /// PD: checks osdp_SCRYPT's 16 data bytes (the server cryptogram) and returns the
    /// osdp_RMAC_I block and data; the session is established from then on. On an error the PD
    /// NAKs and the handshake is over.
    pub fn on_scrypt(&mut self, scrypt: &[u8]) -> Result<HandshakeMessage, ScError> {
        self.need(Role::Pd, "SCRYPT")?;
        // Out of order leaves the state alone (libosdp NAKs an SCRYPT in an open session); in
        // order, the handshake is over whatever the outcome.
        let State::PdChallenged {
            keys,
            scbk,
            client_uid,
            cp_random,
            pd_random,
        } = &self.state
        else {
            return Err(ScError::OutOfOrder("SCRYPT"));
        };
        let (keys, scbk, client_uid, cp_random, pd_random) =
            (keys.clone(), *scbk, *client_uid, *cp_random, *pd_random);
        self.state = State::Idle;
        let got = block_of(scrypt, "SCRYPT data")?;
        let server = keys.server_cryptogram(&cp_random, &pd_random);
        if !ct_eq(&got, &server) {
            return Err(ScError::BadServerCryptogram);
        }
        let rmac = keys.initial_rmac(&server);
        self.state = State::Established(Session {
            keys,
            c_mac: [0; 16],
            r_mac: rmac,
            reply_due: false,
            scbk,
            client_uid,
        });
        Ok(HandshakeMessage {
            // 01: the CP's cryptogram was accepted (a refusal is a NAK instead, as in libosdp).
            security_block: [3, scs::SCS_14, 0x01],
            data: rmac.to_vec(),
        })
    }

    // ---- messages ----

    fn session(&mut self) -> Result<&mut Session, ScError> {
        match &mut self.state {
            State::Established(s) => Ok(s),
            _ => Err(ScError::NotEstablished),
        }
    }

    /// CP: starts sealing a command with `data` (the bytes after the command code, possibly
    /// empty). See [`Sealing`] for the rest.
    pub fn seal_command(&mut self, data: &[u8]) -> Result<Sealing<'_>, ScError> {
        self.need(Role::Cp, "sealing a command")?;
        let s = self.session()?;
        let (scs, payload) = if data.is_empty() {
            (scs::SCS_15, Vec::new())
        } else {
            (scs::SCS_17, s.keys.encrypt(&s.r_mac, data))
        };
        Ok(Sealing {
            channel: self,
            scs,
            payload,
        })
    }

    /// PD: starts sealing the reply to the command last opened, with `data` (the bytes after
    /// the reply code, possibly empty). See [`Sealing`] for the rest.
    pub fn seal_reply(&mut self, data: &[u8]) -> Result<Sealing<'_>, ScError> {
        self.need(Role::Pd, "sealing a reply")?;
        let s = self.session()?;
        if !s.reply_due {
            return Err(ScError::OutOfTurn("no command was opened to reply to"));
        }
        let (scs, payload) = if data.is_empty() {
            (scs::SCS_16, Vec::new())
        } else {
            (scs::SCS_18, s.keys.encrypt(&s.c_mac, data))
        };
        Ok(Sealing {
            channel: self,
            scs,
            payload,
        })
    }

    /// PD: verifies and decrypts a command. `mac_input` is the frame from SOM through the last
    /// data byte (security block `02 15` or `02 17`), `mac` the 4 bytes after it. Returns the
    /// plaintext data after the command code. Any error drops the session.
    ///
    /// A command with the same bytes may be opened again while its reply has not been sealed (a
    /// CP's retransmission); once the reply is sealed, the chain has moved on and a replay fails.
    pub fn open_command(&mut self, mac_input: &[u8], mac: &[u8]) -> Result<Vec<u8>, ScError> {
        self.need(Role::Pd, "opening a command")?;
        let result = self.open(mac_input, mac, Direction::Command);
        if result.is_err() {
            self.state = State::Idle;
        }
        result
    }

    /// CP: verifies and decrypts the reply to the command last sealed. `mac_input` is the frame
    /// from SOM through the last data byte (security block `02 16` or `02 18`), `mac` the 4
    /// bytes after it. Returns the plaintext data after the reply code. Any error drops the
    /// session, except [`ScError::OutOfTurn`] (a second reply to one command), which leaves the
    /// session as it was.
    pub fn open_reply(&mut self, mac_input: &[u8], mac: &[u8]) -> Result<Vec<u8>, ScError> {
        self.need(Role::Cp, "opening a reply")?;
        if let State::Established(s) = &self.state
            && !s.reply_due
        {
            return Err(ScError::OutOfTurn("no command is awaiting a reply"));
        }
        let result = self.open(mac_input, mac, Direction::Reply);
        if result.is_err() {
            self.state = State::Idle;
        }
        result
    }

    fn open(&mut self, mac_input: &[u8], mac: &[u8], dir: Direction) -> Result<Vec<u8>, ScError> {
        let s = self.session()?;
        if mac.len() != MAC_WIRE_LEN {
            return Err(ScError::BadLength {
                what: "MAC",
                got: mac.len(),
            });
        }
        let frame = parse_sealed(mac_input)?;
        let (plain, encrypted) = match dir {
            Direction::Command => (scs::SCS_15, scs::SCS_17),
            Direction::Reply => (scs::SCS_16, scs::SCS_18),
        };
        if frame.scs != plain && frame.scs != encrypted {
            return Err(ScError::Malformed(
                "security block type is not for this direction",
            ));
        }
        // The IV is the other direction's last MAC; the result becomes this direction's.
        let iv = match dir {
            Direction::Command => s.r_mac,
            Direction::Reply => s.c_mac,
        };
        let full = s.keys.mac(&iv, mac_input);
        if !ct_eq(&full[..MAC_WIRE_LEN], mac) {
            return Err(ScError::BadMac);
        }
        // Data is encrypted under the same IV source as the MAC (the other direction's MAC),
        // so decrypting after updating this direction's MAC is still correct.
        let data = if frame.scs == encrypted && !frame.data.is_empty() {
            s.keys.decrypt(&iv, frame.data)?
        } else {
            // SCS_15/16 carry any data in plaintext (MAC only). An empty SCS_17/18 data block
            // is tolerated, as libosdp tolerates it.
            frame.data.to_vec()
        };
        match dir {
            Direction::Command => {
                s.c_mac = full;
                s.reply_due = true;
            }
            Direction::Reply => {
                s.r_mac = full;
                s.reply_due = false;
            }
        }
        Ok(data)
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Command,
    Reply,
}

/// A message being sealed: its security block and encrypted payload are known; its MAC is not
/// yet computed, because the MAC covers the frame header whose LEN depends on the payload.
///
/// 1. Build the frame: SOM, address, LEN (counting the whole frame from SOM: header, security
///    block, code, payload, 4 MAC bytes, CRC), CTRL with bit 3 set, [`Sealing::security_block`],
///    the code, [`Sealing::payload`].
/// 2. Call [`Sealing::finish`] with those bytes from SOM through the payload (no mark byte).
/// 3. Append the 4 bytes it returns, then the CRC.
///
/// Dropping a `Sealing` without finishing leaves the chain untouched (nothing was sent).
#[must_use = "a sealed message needs its MAC: call finish"]
pub struct Sealing<'a> {
    channel: &'a mut SecureChannel,
    scs: u8,
    payload: Vec<u8>,
}

impl fmt::Debug for Sealing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealing")
            .field("scs", &self.scs)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Sealing<'_> {
    /// The security block type: SCS_15/SCS_16 without data, SCS_17/SCS_18 with encrypted data.
    pub fn scs(&self) -> u8 {
        self.scs
    }

    /// The 2-byte security block to place after CTRL: `02 type`.
    pub fn security_block(&self) -> [u8; 2] {
        [2, self.scs]
    }

    /// The bytes to place after the command/reply code: the encrypted data (whole blocks), or
    /// nothing when the message has no data.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The total frame length from SOM through the CRC (the LEN field), for a frame with a
    /// CRC-16 (`crc = true`) or a checksum.
    pub fn frame_len(&self, crc: bool) -> usize {
        SEALED_HEADER_LEN + self.payload.len() + MAC_WIRE_LEN + if crc { 2 } else { 1 }
    }

    /// Computes the MAC over `mac_input` (the frame from SOM through the payload), advances the
    /// chain, and returns the 4 bytes to append. Checks that `mac_input` has this message's
    /// security block, ends with the payload, and that its LEN counts the MAC and the CRC, so a
    /// frame assembled wrongly is an error rather than a MAC the peer rejects. On an error the
    /// chain is untouched.
    pub fn finish(self, mac_input: &[u8]) -> Result<[u8; MAC_WIRE_LEN], ScError> {
        let frame = parse_sealed(mac_input)?;
        if frame.scs != self.scs {
            return Err(ScError::Malformed(
                "security block type differs from the sealing",
            ));
        }
        if frame.data != self.payload.as_slice() {
            return Err(ScError::Malformed("data is not the sealed payload"));
        }
        let len = usize::from(u16::from_le_bytes([mac_input[2], mac_input[3]]));
        let crc = mac_input[CTRL_AT] & CTRL_CRC != 0;
        if len != self.frame_len(crc) {
            return Err(ScError::Malformed(
                "LEN does not count the MAC and check bytes",
            ));
        }
        let role = self.channel.role;
        let s = self.channel.session()?;
        let full = match role {
            Role::Cp => {
                let m = s.keys.mac(&s.r_mac, mac_input);
                s.c_mac = m;
                s.reply_due = true;
                m
            }
            Role::Pd => {
                let m = s.keys.mac(&s.c_mac, mac_input);
                s.r_mac = m;
                s.reply_due = false;
                m
            }
        };
        let mut wire = [0u8; MAC_WIRE_LEN];
        wire.copy_from_slice(&full[..MAC_WIRE_LEN]);
        Ok(wire)
    }
}

/// Panics if `shown` holds `key` as hex (either case) or as an array (decimal or hex): for the
/// tests that key material never reaches a `Debug` output.
#[cfg(test)]
pub(crate) fn assert_key_hidden(shown: &str, key: &[u8; 16]) {
    for form in [
        hex::encode(key),
        hex::encode_upper(key),
        format!("{key:?}"),
        format!("{key:x?}"),
        format!("{key:X?}"),
    ] {
        assert!(!shown.contains(&form), "{form} in {shown}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = [
        0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE,
        0xAF,
    ];
    const UID: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    fn xor_block(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
            *o = x ^ y;
        }
        out
    }

    fn pair(scbk: Scbk) -> (SecureChannel, SecureChannel) {
        let mut cp = SecureChannel::new(Role::Cp);
        let mut pd = SecureChannel::new(Role::Pd);
        let chlng = cp.begin(scbk).unwrap();
        assert_eq!(chlng.security_block, [3, 0x11, scbk.block_byte()]);
        let ccrypt = pd.on_chlng(scbk, UID, &chlng.data).unwrap();
        assert_eq!(ccrypt.security_block, [3, 0x12, scbk.block_byte()]);
        let scrypt = cp.on_ccrypt(&ccrypt.data).unwrap();
        assert_eq!(scrypt.security_block, [3, 0x13, scbk.block_byte()]);
        let rmac = pd.on_scrypt(&scrypt.data).unwrap();
        assert_eq!(rmac.security_block, [3, 0x14, 1]);
        assert!(pd.is_established());
        cp.on_rmac_i(&rmac.data).unwrap();
        assert!(cp.is_established());
        assert_eq!(cp.client_uid(), Some(UID));
        (cp, pd)
    }

    /// Builds a sealed frame (no mark, CRC left off: the MAC never covers it) and returns the
    /// MAC input and the MAC.
    fn seal(sc: &mut SecureChannel, code: u8, data: &[u8]) -> (Vec<u8>, [u8; 4]) {
        let addr = if sc.role() == Role::Cp { 0x01 } else { 0x81 };
        let sealing = if sc.role() == Role::Cp {
            sc.seal_command(data).unwrap()
        } else {
            sc.seal_reply(data).unwrap()
        };
        let len = sealing.frame_len(true) as u16;
        let mut f = vec![SOM, addr];
        f.extend_from_slice(&len.to_le_bytes());
        f.push(0x0D);
        f.extend_from_slice(&sealing.security_block());
        f.push(code);
        f.extend_from_slice(sealing.payload());
        let mac = sealing.finish(&f).unwrap();
        (f, mac)
    }

    #[test]
    fn debug_never_shows_key_material() {
        let (cp, pd) = pair(Scbk::Key(KEY));
        let keys = SessionKeys::derive(&KEY, &[9; 8]);
        let shown = format!(
            "{:?} {:?} {:?} {:?} {keys:?}",
            KeyBytes(KEY),
            Scbk::Key(KEY),
            cp,
            pd
        );
        for key in [KEY, keys.s_enc, keys.s_mac1, keys.s_mac2] {
            assert_key_hidden(&shown, &key);
        }
    }

    #[test]
    fn scbk_d_is_the_standard_default() {
        let expected: Vec<u8> = (0x30..=0x3F).collect();
        assert_eq!(SCBK_D.to_vec(), expected);
        assert_eq!(Scbk::Default.bytes(), SCBK_D);
    }

    #[test]
    fn messages_flow_both_ways_and_the_chain_advances() {
        for scbk in [Scbk::Key(KEY), Scbk::Default] {
            let (mut cp, mut pd) = pair(scbk);
            let mut payloads = Vec::new();
            for i in 0..6u8 {
                let cmd_data: Vec<u8> = (0..i * 5).collect();
                let (f, mac) = seal(&mut cp, 0x60 + i, &cmd_data);
                assert_eq!(f[6], if cmd_data.is_empty() { 0x15 } else { 0x17 });
                assert_eq!(pd.open_command(&f, &mac).unwrap(), cmd_data);
                let reply_data = vec![0xEE; usize::from(i) * 7];
                let (r, rmac) = seal(&mut pd, 0x40, &reply_data);
                assert_eq!(r[6], if reply_data.is_empty() { 0x16 } else { 0x18 });
                assert_eq!(cp.open_reply(&r, &rmac).unwrap(), reply_data);
                // The same command data seals differently each time: the IV follows the chain.
                let (same, same_mac) = seal(&mut cp, 0x6A, b"same");
                assert_eq!(pd.open_command(&same, &same_mac).unwrap(), b"same");
                let (r, rmac) = seal(&mut pd, 0x40, b"");
                cp.open_reply(&r, &rmac).unwrap();
                payloads.push(same[8..].to_vec());
            }
            payloads.sort();
            payloads.dedup();
            assert_eq!(payloads.len(), 6);
        }
    }

    #[test]
    fn tampering_fails_and_drops_the_session() {
        let (mut cp, mut pd) = pair(Scbk::Key(KEY));
        let (mut f, mac) = seal(&mut cp, 0x6A, b"hello");
        f[9] ^= 1;
        assert_eq!(pd.open_command(&f, &mac), Err(ScError::BadMac));
        assert!(!pd.is_established());
        assert!(matches!(pd.seal_reply(b""), Err(ScError::NotEstablished)));
    }

    #[test]
    fn replays_fail() {
        let (mut cp, mut pd) = pair(Scbk::Key(KEY));
        let (f, mac) = seal(&mut cp, 0x6A, b"open the door");
        pd.open_command(&f, &mac).unwrap();
        let (r, rmac) = seal(&mut pd, 0x40, b"");
        cp.open_reply(&r, &rmac).unwrap();
        // The same reply again: no command is waiting for it.
        assert!(matches!(
            cp.open_reply(&r, &rmac),
            Err(ScError::OutOfTurn(_))
        ));
        assert!(cp.is_established());
        // The same command again, after it was answered: the chain has moved on.
        assert_eq!(pd.open_command(&f, &mac), Err(ScError::BadMac));
        // An old reply to a newer command.
        let (mut cp, mut pd) = pair(Scbk::Key(KEY));
        let (f, mac) = seal(&mut cp, 0x60, b"");
        pd.open_command(&f, &mac).unwrap();
        let (r, rmac) = seal(&mut pd, 0x40, b"");
        cp.open_reply(&r, &rmac).unwrap();
        let (f2, mac2) = seal(&mut cp, 0x60, b"");
        pd.open_command(&f2, &mac2).unwrap();
        assert_eq!(cp.open_reply(&r, &rmac), Err(ScError::BadMac));
    }

    #[test]
    fn a_wrong_key_fails_the_handshake() {
        let mut cp = SecureChannel::new(Role::Cp);
        let mut pd = SecureChannel::new(Role::Pd);
        let chlng = cp.begin(Scbk::Key(KEY)).unwrap();
        let ccrypt = pd.on_chlng(Scbk::Default, UID, &chlng.data).unwrap();
        assert_eq!(
            cp.on_ccrypt(&ccrypt.data),
            Err(ScError::BadClientCryptogram)
        );
        assert!(!cp.is_established());
        // And the PD refuses a server cryptogram it did not expect.
        let mut pd = SecureChannel::new(Role::Pd);
        pd.on_chlng(Scbk::Default, UID, &chlng.data).unwrap();
        assert_eq!(pd.on_scrypt(&[0x55; 16]), Err(ScError::BadServerCryptogram));
        assert!(!pd.is_established());
    }

    #[test]
    fn wrong_lengths_and_orders_are_errors() {
        let mut cp = SecureChannel::new(Role::Cp);
        assert_eq!(cp.on_ccrypt(&[0; 32]), Err(ScError::OutOfOrder("CCRYPT")));
        assert_eq!(cp.on_rmac_i(&[0; 16]), Err(ScError::OutOfOrder("RMAC_I")));
        assert!(matches!(
            cp.seal_command(b"x"),
            Err(ScError::NotEstablished)
        ));
        assert!(matches!(cp.seal_reply(b"x"), Err(ScError::WrongRole(_))));
        cp.begin(Scbk::Default).unwrap();
        assert!(matches!(
            cp.on_ccrypt(&[0; 31]),
            Err(ScError::BadLength { .. })
        ));
        let mut pd = SecureChannel::new(Role::Pd);
        assert!(matches!(
            pd.on_chlng(Scbk::Default, UID, &[0; 7]),
            Err(ScError::BadLength { .. })
        ));
        assert_eq!(pd.on_scrypt(&[0; 16]), Err(ScError::OutOfOrder("SCRYPT")));
        let (mut cp, mut pd) = pair(Scbk::Key(KEY));
        assert!(matches!(pd.seal_reply(b""), Err(ScError::OutOfTurn(_))));
        assert!(matches!(
            cp.on_rmac_i(&[0; 15]),
            Err(ScError::OutOfOrder(_))
        ));
        assert!(cp.is_established());
        let (f, mac) = seal(&mut cp, 0x60, b"abc");
        assert!(matches!(
            pd.open_command(&f, &mac[..3]),
            Err(ScError::BadLength { .. })
        ));
        let (mut cp, mut pd) = pair(Scbk::Key(KEY));
        let (f, mac) = seal(&mut cp, 0x60, b"abc");
        assert!(matches!(
            pd.open_command(&f[..7], &mac),
            Err(ScError::Malformed(_))
        ));
    }

    #[test]
    fn finish_rejects_a_wrongly_assembled_frame_without_advancing() {
        let (mut cp, mut pd) = pair(Scbk::Key(KEY));
        let s = cp.seal_command(b"data").unwrap();
        let payload = s.payload().to_vec();
        // LEN not counting the MAC.
        let len = (8 + payload.len() + 2) as u16;
        let mut f = vec![SOM, 1];
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&[0x0D, 2, 0x17, 0x6A]);
        f.extend_from_slice(&payload);
        assert!(matches!(s.finish(&f), Err(ScError::Malformed(_))));
        // Plaintext instead of the payload.
        let s = cp.seal_command(b"data").unwrap();
        let mut g = f[..8].to_vec();
        g[2..4].copy_from_slice(&(s.frame_len(true) as u16).to_le_bytes());
        g.extend_from_slice(b"data");
        assert!(matches!(s.finish(&g), Err(ScError::Malformed(_))));
        // The chain did not move: a proper seal still opens.
        let (f, mac) = seal(&mut cp, 0x6A, b"data");
        assert_eq!(pd.open_command(&f, &mac).unwrap(), b"data");
    }

    #[test]
    fn mac_padding_and_block_alignment() {
        let keys = SessionKeys::derive(&KEY, &[9; 8]);
        let iv = [0x11; 16];
        // 16 bytes: one block, no padding block; the MAC is AES(S-MAC2, iv ^ block).
        let msg = [0x42u8; 16];
        assert_eq!(
            keys.mac(&iv, &msg),
            aes_block(&keys.s_mac2, &xor_block(&iv, &msg))
        );
        // 17 bytes: a full block with S-MAC1, then `42 80 00..` with S-MAC2.
        let msg17 = [0x42u8; 17];
        let first = aes_block(&keys.s_mac1, &xor_block(&iv, &[0x42; 16]));
        let mut last = [0u8; 16];
        last[0] = 0x42;
        last[1] = 0x80;
        assert_eq!(
            keys.mac(&iv, &msg17),
            aes_block(&keys.s_mac2, &xor_block(&first, &last))
        );
        // Empty: one padding block.
        let mut pad_only = [0u8; 16];
        pad_only[0] = 0x80;
        assert_eq!(
            keys.mac(&iv, &[]),
            aes_block(&keys.s_mac2, &xor_block(&iv, &pad_only))
        );
    }

    #[test]
    fn encryption_pads_and_round_trips() {
        let keys = SessionKeys::derive(&KEY, &[3; 8]);
        let last = [0x5A; 16];
        for n in 0..40 {
            let data: Vec<u8> = (0..n as u8).collect();
            let ct = keys.encrypt(&last, &data);
            assert_eq!(ct.len(), (n / 16 + 1) * 16);
            assert_eq!(keys.decrypt(&last, &ct).unwrap(), data);
        }
        // 15 bytes pad to one block: `data 80`, first block XOR !last then AES(S-ENC).
        let data = [0x01u8; 15];
        let mut block = [0x01u8; 16];
        block[15] = 0x80;
        assert_eq!(
            keys.encrypt(&last, &data),
            aes_block(&keys.s_enc, &xor_block(&block, &not_block(&last))).to_vec()
        );
        assert_eq!(keys.decrypt(&last, &[0; 15]), Err(ScError::BadPadding));
        assert_eq!(keys.decrypt(&last, &[]), Err(ScError::BadPadding));
        // A block that decrypts to all zeros has no marker.
        let zeros = aes_block(&keys.s_enc, &not_block(&last));
        assert_eq!(keys.decrypt(&last, &zeros), Err(ScError::BadPadding));
    }

    #[test]
    fn pd_key_choice_follows_libosdp() {
        assert_eq!(Scbk::for_pd(0, None, true), Some(Scbk::Default));
        assert_eq!(Scbk::for_pd(0, Some(KEY), false), Some(Scbk::Key(KEY)));
        assert_eq!(Scbk::for_pd(1, Some(KEY), true), Some(Scbk::Key(KEY)));
        assert_eq!(Scbk::for_pd(1, None, true), None);
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(random_key().unwrap(), random_key().unwrap());
    }
}

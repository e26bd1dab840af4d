//! The Secure Channel's open (MAC check, then decryption and unpadding) with a fixed session,
//! on any bytes, at both ends of the link, and seal-then-open of any data. Input: a flags byte,
//! then the frame from SOM through its data followed by the 4 MAC bytes.
//!
//! Flags: bit 0 selects the end (0: the PD opens a command, 1: the CP opens a reply); bit 1 has
//! the harness put the right MAC in place of the input's last 4 bytes, so mutations get past the
//! MAC check to the decryption; bit 2 also feeds the bytes to each handshake step.
//!
//! - An open succeeds only with the right MAC; then the session stays up, otherwise it is torn
//!   down; and the plaintext is what the data decrypts to (re-encrypting it gives the data).
//! - The same bytes as a wire frame (`frame::decode`, then open) follow the same rules.
//! - What one end seals, the other opens to the same data.
#![no_main]

use std::sync::OnceLock;

use doorhub::osdp::frame::{self, scs};
use doorhub::osdp::message::{CMD_POLL, REPLY_ACK};
use doorhub::osdp::secure::{Role, Scbk, SecureChannel, SessionKeys};
use libfuzzer_sys::fuzz_target;

#[path = "../shared/session.rs"]
mod session;
use session::{CLIENT_UID, CP_RANDOM, KEY, PD_RANDOM, established, seal};

/// The data sealed in the round trip is cut to what fits a frame with room to spare.
const MAX_SEALED_DATA: usize = 1200;

/// An established session, built once: the channels and the chain values the harness needs.
struct Session {
    keys: SessionKeys,
    /// The CP, established, nothing sent yet.
    cp: SecureChannel,
    /// The PD, established; the first command's MAC chains from `r_mac`.
    pd: SecureChannel,
    /// The initial R-MAC: the IV of the first command.
    r_mac: [u8; 16],
    /// The CP after sealing a POLL: waiting for its reply, whose IV is `c_mac`.
    cp_polled: SecureChannel,
    /// The POLL's full MAC.
    c_mac: [u8; 16],
}

fn session() -> &'static Session {
    static SESSION: OnceLock<Session> = OnceLock::new();
    SESSION.get_or_init(|| {
        let (cp, pd) = established();
        let keys = SessionKeys::derive(&KEY, &CP_RANDOM);
        let r_mac = keys.initial_rmac(&keys.server_cryptogram(&CP_RANDOM, &PD_RANDOM));
        let mut cp_polled = cp.clone();
        let poll = seal(&mut cp_polled, CMD_POLL, &[]);
        let c_mac = keys.mac(&r_mac, &poll.mac_input().expect("POLL"));
        Session {
            keys,
            cp,
            pd,
            r_mac,
            cp_polled,
            c_mac,
        }
    })
}

/// Opens `mac_input` and `mac` at one end and checks the rules above.
fn open_and_check(s: &Session, reply: bool, mac_input: &[u8], mac: &[u8]) {
    let (mut channel, iv, plain, encrypted) = if reply {
        (s.cp_polled.clone(), s.c_mac, scs::SCS_16, scs::SCS_18)
    } else {
        (s.pd.clone(), s.r_mac, scs::SCS_15, scs::SCS_17)
    };
    let opened = if reply {
        channel.open_reply(mac_input, mac)
    } else {
        channel.open_command(mac_input, mac)
    };
    assert_eq!(channel.is_established(), opened.is_ok());
    let Ok(data) = opened else {
        return;
    };
    let right_mac = s.keys.mac(&iv, mac_input);
    assert_eq!(mac, &right_mac[..4], "opened with a wrong MAC");
    assert!(mac_input.len() >= 8 && mac_input[0] == 0x53 && mac_input[5] == 2);
    let kind = mac_input[6];
    let wire = &mac_input[8..];
    assert!(kind == plain || kind == encrypted);
    if kind == encrypted && !wire.is_empty() {
        assert_eq!(s.keys.encrypt(&iv, &data), wire);
    } else {
        assert_eq!(data, wire);
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, bytes)) = input.split_first() else {
        return;
    };
    let s = session();
    let reply = flags & 1 != 0;
    let (mac_input, mac) = bytes.split_at(bytes.len().saturating_sub(4));
    let right;
    let mac = if flags & 2 != 0 {
        let iv = if reply { s.c_mac } else { s.r_mac };
        right = s.keys.mac(&iv, mac_input);
        &right[..4]
    } else {
        mac
    };
    open_and_check(s, reply, mac_input, mac);

    // The bytes as a frame on the wire, opened the way the bus task opens a reply.
    if let Ok(Some((frame, _))) = frame::decode(bytes)
        && let Some(mac) = frame.mac
        && let Ok(input) = frame.mac_input()
    {
        open_and_check(s, frame.reply, &input, &mac);
    }

    // Seal, then open at the other end, both ways.
    let data = &bytes[..bytes.len().min(MAX_SEALED_DATA)];
    let (mut cp, mut pd) = (s.cp.clone(), s.pd.clone());
    let command = seal(&mut cp, CMD_POLL, data);
    let mac = command.mac.expect("sealed");
    let input = command.mac_input().expect("sealed");
    assert_eq!(pd.open_command(&input, &mac).as_deref(), Ok(data));
    let answer = seal(&mut pd, REPLY_ACK, data);
    let mac = answer.mac.expect("sealed");
    let input = answer.mac_input().expect("sealed");
    assert_eq!(cp.open_reply(&input, &mac).as_deref(), Ok(data));
    // A reply opens once.
    assert!(cp.open_reply(&input, &mac).is_err());

    // The handshake steps on the same bytes: only the right values pass.
    if flags & 4 != 0 {
        let scbk = Scbk::Key(KEY);
        let mut cp = SecureChannel::new(Role::Cp);
        cp.begin_with_random(scbk, CP_RANDOM).expect("CHLNG");
        if cp.on_ccrypt(bytes).is_ok() {
            let pd_random: [u8; 8] = bytes[8..16].try_into().expect("32 bytes");
            assert_eq!(
                s.keys.client_cryptogram(&CP_RANDOM, &pd_random),
                bytes[16..32]
            );
            assert!(cp.on_rmac_i(bytes).is_err());
        }
        let mut pd = SecureChannel::new(Role::Pd);
        let _ = pd.on_chlng_with_random(scbk, CLIENT_UID, bytes, PD_RANDOM);
        let mut pd = SecureChannel::new(Role::Pd);
        pd.on_chlng_with_random(scbk, CLIENT_UID, &CP_RANDOM, PD_RANDOM)
            .expect("CCRYPT");
        let server = s.keys.server_cryptogram(&CP_RANDOM, &PD_RANDOM);
        assert_eq!(pd.on_scrypt(bytes).is_ok(), bytes == server);
        let mut cp = s.cp.clone();
        cp.reset();
        assert!(cp.on_rmac_i(bytes).is_err());
        assert!(!cp.is_established());
    }
});

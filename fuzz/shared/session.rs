//! The fixed Secure Channel session that `secure_open` fuzzes and `seedgen` writes seeds for
//! (shared with `#[path]`, so the seeds open in the target's session).

use doorhub::osdp::frame::{Frame, SecurityBlock};
use doorhub::osdp::secure::{Role, Scbk, SecureChannel};

/// The session's base key.
pub const KEY: [u8; 16] = *b"doorhub fuzz key";
/// RND.A.
pub const CP_RANDOM: [u8; 8] = [0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8];
/// RND.B.
pub const PD_RANDOM: [u8; 8] = [0xB1, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8];
/// The PD's cUID.
pub const CLIENT_UID: [u8; 8] = [0x0A, 0x44, 0x48, 0x01, 0x02, 0x03, 0x04, 0x05];

/// A CP and a PD after the handshake with the values above.
pub fn established() -> (SecureChannel, SecureChannel) {
    let scbk = Scbk::Key(KEY);
    let mut cp = SecureChannel::new(Role::Cp);
    let mut pd = SecureChannel::new(Role::Pd);
    let chlng = cp.begin_with_random(scbk, CP_RANDOM).expect("CHLNG");
    let ccrypt = pd
        .on_chlng_with_random(scbk, CLIENT_UID, &chlng.data, PD_RANDOM)
        .expect("CCRYPT");
    let scrypt = cp.on_ccrypt(&ccrypt.data).expect("SCRYPT");
    let rmac_i = pd.on_scrypt(&scrypt.data).expect("RMAC_I");
    cp.on_rmac_i(&rmac_i.data).expect("established");
    (cp, pd)
}

/// Seals `data` under `code` on `channel` (a command from the CP, a reply from the PD) into a
/// whole frame to address 1, sequence 1, MAC in place.
pub fn seal(channel: &mut SecureChannel, code: u8, data: &[u8]) -> Frame {
    let reply = channel.role() == Role::Pd;
    let sealing = if reply {
        channel.seal_reply(data)
    } else {
        channel.seal_command(data)
    }
    .expect("an established session seals");
    let mut frame = Frame {
        security: Some(SecurityBlock {
            kind: sealing.scs(),
            data: Vec::new(),
        }),
        ..Frame::plain(1, reply, 1, code, sealing.payload().to_vec())
    };
    let input = frame.mac_input().expect("a sealed frame fits");
    frame.mac = Some(sealing.finish(&input).expect("the frame is the sealing's"));
    frame
}

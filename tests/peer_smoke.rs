//! The interop peer (`tests/interop/pd_peer.py`, a libosdp PD) works, shown without the hub's
//! bus task: the test is the CP and speaks OSDP to it with doorhub's own codec over a pty.
//!
//! - plain mode: ID, CAP, POLL; a card read comes back as osdp_RAW; OUT/LED/BUZ are recorded.
//! - stored mode: MFG TIME and QUERY/STATE; a full table in parts over FILETRANSFER; access
//!   decisions from the table; a delta; a delta that does not apply (ERROR 2); wipe.

mod common;

use std::time::Duration;

use common::hub::credentials;
use common::peer::{Mode, Peer, PeerOptions, RawCp, pty_pair};
use doorhub::osdp::frame::{Frame, SecurityBlock};
use doorhub::osdp::message::{
    Buz, CMD_CHLNG, CMD_SCRYPT, Command, FILE_TRANSFER_HEADER, FileTransfer, FtStat, Led,
    LedPermanent, LedTemporary, Manufacturer, NakReason, Out, REPLY_CCRYPT, REPLY_RMAC_I, Reply,
};
use doorhub::osdp::secure::{HandshakeMessage, Role, Scbk, SecureChannel};
use doorhub::push::file::{DELTA, FULL_TABLE, delta_file, full_table_files};
use doorhub::push::mfg::{DEFAULT_VENDOR_CODE, ERROR_DELTA, ERROR_MALFORMED, MfgCommand, MfgReply};
use doorhub::snapshot::{Credential, SetDigest};
use serde_json::Value;
use tokio_serial::SerialPortBuilderExt;

/// How long the peer may take to print an event.
const EVENT: Duration = Duration::from_secs(3);
/// libosdp's receive buffer (PDCAP 0x0A).
const RX_BUFFER: usize = 256;
/// Fragment data that fits: mark, 5-byte header, code, 11-byte transfer header, CRC.
const MAX_FRAGMENT: usize = RX_BUFFER - 1 - 5 - 1 - FILE_TRANSFER_HEADER - 2;

async fn start(mode: Mode) -> (Peer, RawCp) {
    let (master, path, slave) = pty_pair();
    let peer = Peer::spawn(&path, Some(slave), &PeerOptions::new(3, mode)).await;
    (peer, RawCp::new(master, 3))
}

/// ID, CAP and a POLL, as the hub does when a reader comes online.
async fn bring_online(cp: &mut RawCp) {
    let Reply::PdId(id) = cp.exchange(&Command::Id).await else {
        panic!("ID not answered with PDID");
    };
    assert_eq!(id.vendor, DEFAULT_VENDOR_CODE, "the peer's vendor code");
    let Reply::PdCap(cap) = cp.exchange(&Command::Cap).await else {
        panic!("CAP not answered with PDCAP");
    };
    assert_eq!(cap.receive_buffer_size(), Some(RX_BUFFER as u16));
    assert_eq!(cap.supports_crc(), Some(true));
    assert_eq!(cp.exchange(&Command::Poll).await, Reply::Ack);
}

fn mfg(cmd: &MfgCommand) -> Command {
    Command::Mfg(Manufacturer {
        vendor: DEFAULT_VENDOR_CODE,
        data: cmd.encode(),
    })
}

fn mfg_reply(reply: Reply) -> MfgReply {
    let Reply::MfgRep(m) = reply else {
        panic!("expected MFGREP, got {reply:?}");
    };
    assert_eq!(m.vendor, DEFAULT_VENDOR_CODE);
    MfgReply::decode(&m.data).unwrap_or_else(|e| panic!("bad MFGREP {m:?}: {e}"))
}

/// QUERY, its ACK, then POLLs until the STATE.
async fn query(cp: &mut RawCp) -> (u64, u32, SetDigest) {
    assert_eq!(cp.exchange(&mfg(&MfgCommand::Query)).await, Reply::Ack);
    match mfg_reply(cp.poll_until_reply(EVENT).await) {
        MfgReply::State {
            version,
            count,
            digest,
            capacity,
        } => {
            assert_eq!(capacity, u32::MAX);
            (version, count, digest)
        }
        other => panic!("expected STATE, got {other:?}"),
    }
}

/// One file over FILETRANSFER, as the transfer rules say: ABORT first (the PD may hold a half
/// file), fragments that fit the receive buffer, a POLL between fragments. FTSTAT 1 on the last
/// fragment only says the bytes arrived.
async fn send_file(cp: &mut RawCp, file_type: u8, file: &[u8]) {
    assert_eq!(cp.exchange(&Command::Abort).await, Reply::Ack);
    let chunks: Vec<&[u8]> = file.chunks(MAX_FRAGMENT).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let ft = Command::FileTransfer(FileTransfer {
            file_type,
            total_size: file.len() as u32,
            offset: (i * MAX_FRAGMENT) as u32,
            data: chunk.to_vec(),
        });
        let Reply::FtStat(stat) = cp.exchange(&ft).await else {
            panic!("fragment {i} not answered with FTSTAT");
        };
        let last = i + 1 == chunks.len();
        let want = if last {
            FtStat::STATUS_PROCESSED
        } else {
            FtStat::STATUS_OK
        };
        assert_eq!(
            stat.status,
            want,
            "FTSTAT of fragment {i} of {}",
            chunks.len()
        );
        if !last {
            assert_eq!(cp.exchange(&Command::Poll).await, Reply::Ack);
        }
    }
}

fn digest_hex(v: &Value) -> String {
    v["digest"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn plain_reader_reports_cards_and_records_commands() {
    let (mut peer, mut cp) = start(Mode::Plain).await;
    bring_online(&mut cp).await;

    peer.send("card 26 bd88eb80").await;
    peer.wait_for(EVENT, |v| v["event"] == "card").await;
    let Reply::Raw(raw) = cp.poll_until_reply(EVENT).await else {
        panic!("a card read is not osdp_RAW");
    };
    assert_eq!((raw.reader, raw.format, raw.bits), (0, 1, 26));
    assert_eq!(raw.data, [0xbd, 0x88, 0xeb, 0x80]);
    // Reported once.
    assert_eq!(cp.exchange(&Command::Poll).await, Reply::Ack);

    // The strike: output 0, temporary on (5), 3 s.
    let out = Command::Out(vec![Out {
        output: 0,
        control: 5,
        timer_100ms: 30,
    }]);
    assert_eq!(cp.exchange(&out).await, Reply::Ack);
    let ev = peer
        .wait_for(EVENT, |v| {
            v["event"] == "command" && v["command"] == "output"
        })
        .await;
    assert_eq!(
        (&ev["output_no"], &ev["control_code"], &ev["timer_count"]),
        (&Value::from(0), &Value::from(5), &Value::from(30)),
        "{ev}"
    );

    // Green LED for 2 s, one beep.
    let led = Command::Led(vec![Led {
        reader: 0,
        led: 0,
        temporary: LedTemporary {
            control: 2,
            on_time: 5,
            off_time: 0,
            on_color: 2,
            off_color: 0,
            timer_100ms: 20,
        },
        permanent: LedPermanent::UNCHANGED,
    }]);
    assert_eq!(cp.exchange(&led).await, Reply::Ack);
    let ev = peer
        .wait_for(EVENT, |v| v["event"] == "command" && v["command"] == "led")
        .await;
    assert_eq!(ev["on_color"], 2, "{ev}");
    let buz = Command::Buz(vec![Buz {
        reader: 0,
        tone: 2,
        on_time: 2,
        off_time: 0,
        count: 1,
    }]);
    assert_eq!(cp.exchange(&buz).await, Reply::Ack);
    peer.wait_for(EVENT, |v| {
        v["event"] == "command" && v["command"] == "buzzer"
    })
    .await;

    assert_eq!(peer.shutdown(EVENT).await, Some(0));
}

#[tokio::test]
async fn stored_controller_takes_the_push() {
    let (mut peer, mut cp) = start(Mode::Stored).await;
    bring_online(&mut cp).await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let time = mfg(&MfgCommand::Time { unix_seconds: now });
    assert_eq!(cp.exchange(&time).await, Reply::Ack);
    let ev = peer.wait_for(EVENT, |v| v["event"] == "time").await;
    assert_eq!(ev["unix"], now);

    // A new PD: version 0, empty.
    assert_eq!(query(&mut cp).await, (0, 0, SetDigest::default()));

    // A fragment one byte over the receive buffer is dropped without an answer.
    let over = Command::FileTransfer(FileTransfer {
        file_type: FULL_TABLE,
        total_size: 1000,
        offset: 0,
        data: vec![0; MAX_FRAGMENT + 1],
    });
    assert!(
        cp.try_exchange(&over, Duration::from_millis(300))
            .await
            .is_none(),
        "a {}-byte frame was answered",
        RX_BUFFER + 1
    );

    let ev = peer.wait_for(EVENT, |v| v["event"] == "dropped").await;
    assert_eq!(ev["bytes"], RX_BUFFER + 1);

    // Half a file, then ABORT: the peer drops what it had (libosdp closes the file).
    let half = Command::FileTransfer(FileTransfer {
        file_type: FULL_TABLE,
        total_size: 1000,
        offset: 0,
        data: vec![0; 100],
    });
    let Reply::FtStat(stat) = cp.exchange(&half).await else {
        panic!("fragment not answered with FTSTAT");
    };
    assert_eq!(stat.status, FtStat::STATUS_OK);
    assert_eq!(cp.exchange(&Command::Abort).await, Reply::Ack);
    let ev = peer.wait_for(EVENT, |v| v["event"] == "file").await;
    assert_eq!(
        (&ev["result"], &ev["received"]),
        (&Value::from("incomplete"), &Value::from(100))
    );

    // A file that is not a table: FTSTAT still says processed, then MFGREP ERROR 3.
    send_file(&mut cp, FULL_TABLE, b"not a table").await;
    let got = mfg_reply(cp.poll_until_reply(EVENT).await);
    assert_eq!(
        got,
        MfgReply::Error {
            code: ERROR_MALFORMED,
            version: 0
        }
    );
    let ev = peer.wait_for(EVENT, |v| v["event"] == "file").await;
    assert_eq!(
        (&ev["result"], &ev["code"]),
        (&Value::from("error"), &Value::from(3))
    );

    // The full table, in parts: 400 cards, one not yet valid, one expired.
    let mut set: Vec<Credential> = credentials("c", 400);
    set[1].not_before = (now + 86_400) as u32;
    set[2].not_after = (now - 86_400) as u32;
    let files = full_table_files(5, &set, 4096).unwrap();
    assert!(files.len() >= 2, "{} parts", files.len());
    for (i, file) in files.iter().enumerate() {
        send_file(&mut cp, FULL_TABLE, file).await;
        let ev = peer.wait_for(EVENT, |v| v["event"] == "file").await;
        let want = if i + 1 == files.len() {
            "applied"
        } else {
            "staged"
        };
        assert_eq!(ev["result"], want, "{ev}");
    }
    let digest = SetDigest::of(&set);
    let ev = peer.wait_for(EVENT, |v| v["event"] == "state").await;
    assert_eq!(digest_hex(&ev), digest.to_string());
    assert_eq!(query(&mut cp).await, (5, 400, digest));

    // Access decisions from the table, reported as MFGREP ACCESS.
    for (card, granted, reason) in [(&set[0], true, 0), (&set[1], false, 2), (&set[2], false, 3)] {
        peer.send(&format!("card {} {}", card.bits, hex::encode(&card.data)))
            .await;
        let got = mfg_reply(cp.poll_until_reply(EVENT).await);
        let want = MfgReply::Access {
            granted,
            reason,
            bits: card.bits,
            data: card.data.clone(),
        };
        assert_eq!(got, want);
    }
    peer.send("card 26 bd88eb80").await;
    let got = mfg_reply(cp.poll_until_reply(EVENT).await);
    assert!(
        matches!(
            got,
            MfgReply::Access {
                granted: false,
                reason: 1,
                ..
            }
        ),
        "{got:?}"
    );

    // A delta removing one card.
    let mut smaller = set.clone();
    let revoked = smaller.remove(0);
    let delta = delta_file(5, 6, &set, &smaller, 4096).unwrap();
    send_file(&mut cp, DELTA, &delta).await;
    let ev = peer.wait_for(EVENT, |v| v["event"] == "file").await;
    assert_eq!(ev["result"], "applied", "{ev}");
    let small_digest = SetDigest::of(&smaller);
    assert_eq!(query(&mut cp).await, (6, 399, small_digest));
    peer.send(&format!("card 26 {}", hex::encode(&revoked.data)))
        .await;
    let got = mfg_reply(cp.poll_until_reply(EVENT).await);
    assert!(
        matches!(
            got,
            MfgReply::Access {
                granted: false,
                reason: 1,
                ..
            }
        ),
        "revoked card: {got:?}"
    );

    // A delta from a version the PD is not at: ERROR 2, nothing changes.
    let stale = delta_file(5, 7, &set, &smaller, 4096).unwrap();
    send_file(&mut cp, DELTA, &stale).await;
    let got = mfg_reply(cp.poll_until_reply(EVENT).await);
    assert_eq!(
        got,
        MfgReply::Error {
            code: ERROR_DELTA,
            version: 7
        }
    );
    assert_eq!(query(&mut cp).await, (6, 399, small_digest));

    // Wiped: back to version 0.
    peer.send("wipe").await;
    let ev = peer
        .wait_for(EVENT, |v| v["event"] == "state" && v["version"] == 0)
        .await;
    assert_eq!(
        (&ev["count"], digest_hex(&ev).as_str()),
        (&Value::from(0), "0000000000000000")
    );
    assert_eq!(query(&mut cp).await, (0, 0, SetDigest::default()));

    assert_eq!(peer.shutdown(EVENT).await, Some(0));
}

/// A plain frame with a Secure Channel handshake block.
fn handshake_frame(address: u8, seq: u8, code: u8, msg: &HandshakeMessage) -> Frame {
    Frame {
        address,
        reply: false,
        sequence: seq,
        use_crc: true,
        security: Some(SecurityBlock {
            kind: msg.security_block[1],
            data: msg.security_block[2..].to_vec(),
        }),
        code,
        data: msg.data.clone(),
        mac: None,
    }
}

/// `cmd` sealed on `sc`: MAC'd, its data encrypted.
fn sealed(sc: &mut SecureChannel, address: u8, seq: u8, cmd: &Command) -> Frame {
    let sealing = sc.seal_command(&cmd.encode_data()).unwrap();
    let mut frame = Frame {
        address,
        reply: false,
        sequence: seq,
        use_crc: true,
        security: Some(SecurityBlock {
            kind: sealing.scs(),
            data: Vec::new(),
        }),
        code: cmd.code(),
        data: sealing.payload().to_vec(),
        mac: None,
    };
    let mac = sealing.finish(&frame.mac_input().unwrap()).unwrap();
    frame.mac = Some(mac);
    frame
}

/// Sends `cmd` sealed, opens the reply.
async fn secure_exchange(cp: &mut RawCp, sc: &mut SecureChannel, cmd: &Command) -> Reply {
    let address = cp.address;
    let reply = cp.exchange_frame(|seq| sealed(sc, address, seq, cmd)).await;
    let mac = reply
        .mac
        .unwrap_or_else(|| panic!("reply without a MAC: {reply:?}"));
    let plain = sc
        .open_reply(&reply.mac_input().unwrap(), &mac)
        .unwrap_or_else(|e| panic!("reply does not open: {e}"));
    Reply::decode(reply.code, &plain).unwrap()
}

#[tokio::test]
async fn secure_channel_with_an_scbk() {
    const KEY: [u8; 16] = *b"doorhub-peer-key";
    let (master, path, slave) = pty_pair();
    let mut opts = PeerOptions::new(5, Mode::Plain);
    opts.scbk = Some(KEY);
    let mut peer = Peer::spawn(&path, Some(slave), &opts).await;
    let mut cp = RawCp::new(master, 5);
    let Reply::PdCap(cap) = cp.exchange(&Command::Cap).await else {
        panic!("CAP not answered with PDCAP");
    };
    assert!(cap.supports_secure_channel());
    // Without the Secure Channel a POLL is refused.
    assert_eq!(
        cp.exchange(&Command::Poll).await,
        Reply::Nak(NakReason::SecurityConditions)
    );

    let mut sc = SecureChannel::new(Role::Cp);
    let chlng = sc.begin(Scbk::Key(KEY)).unwrap();
    let ccrypt = cp
        .exchange_frame(|seq| handshake_frame(5, seq, CMD_CHLNG, &chlng))
        .await;
    assert_eq!(ccrypt.code, REPLY_CCRYPT, "{ccrypt:?}");
    let scrypt = sc.on_ccrypt(&ccrypt.data).unwrap();
    let rmac = cp
        .exchange_frame(|seq| handshake_frame(5, seq, CMD_SCRYPT, &scrypt))
        .await;
    assert_eq!(rmac.code, REPLY_RMAC_I, "{rmac:?}");
    sc.on_rmac_i(&rmac.data).unwrap();

    assert_eq!(
        secure_exchange(&mut cp, &mut sc, &Command::Poll).await,
        Reply::Ack
    );
    peer.send("card 26 bd88eb80").await;
    peer.wait_for(EVENT, |v| v["event"] == "card").await;
    let end = std::time::Instant::now() + EVENT;
    let raw = loop {
        match secure_exchange(&mut cp, &mut sc, &Command::Poll).await {
            Reply::Ack => assert!(std::time::Instant::now() < end, "no card read"),
            Reply::Raw(raw) => break raw,
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (raw.bits, raw.data.as_slice()),
        (26, &[0xbd, 0x88, 0xeb, 0x80][..])
    );
    assert_eq!(peer.shutdown(EVENT).await, Some(0));
}

#[tokio::test]
async fn peer_made_pty_opened_by_path() {
    // How the hub meets the peer: the peer serves a pty, the hub opens its slave by path.
    let peer = Peer::spawn_pty(&PeerOptions::new(0, Mode::Plain)).await;
    assert!(peer.port().starts_with("/dev/"), "{}", peer.port());
    let port = tokio_serial::new(peer.port(), 115_200)
        .open_native_async()
        .unwrap_or_else(|e| panic!("open {}: {e}", peer.port()));
    let mut cp = RawCp::new(port, 0);
    bring_online(&mut cp).await;
    // Closed and reopened (a hub restart): the peer still answers, sequence 0 again.
    drop(cp);
    let port = tokio_serial::new(peer.port(), 115_200)
        .open_native_async()
        .unwrap();
    let mut cp = RawCp::new(port, 0);
    assert_eq!(cp.exchange(&Command::Poll).await, Reply::Ack);
    assert_eq!(peer.shutdown(EVENT).await, Some(0));
}

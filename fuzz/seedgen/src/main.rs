//! Writes the fuzz targets' seed corpus, `fuzz/seeds/<target>/<name>`: frames and payloads built
//! with doorhub's own encoders, the contract's JSON examples and the repository's config files.
//! Run from anywhere: `cargo run --manifest-path fuzz/Cargo.toml -p doorhub-fuzz-seedgen`.
//! Rewrites the folders, so a change to an encoder shows up as a change to the seeds.

use std::fs;
use std::path::{Path, PathBuf};

use doorhub::credset;
use doorhub::osdp::frame::{Frame, SecurityBlock, scs};
use doorhub::osdp::message::{
    Buz, CCrypt, Capability, Command, FileTransfer, FtStat, LStatR, Led, LedPermanent,
    LedTemporary, Manufacturer, NakReason, Out, PdCap, PdId, Raw, Reply,
};
use doorhub::osdp::secure::KeyBytes;
use doorhub::push::file::{DELTA, FULL_TABLE, delta_file, full_table_files};
use doorhub::push::mfg::{DEFAULT_VENDOR_CODE, MfgCommand, MfgReply};
use doorhub::snapshot::{Credential, SetDigest};

#[path = "../../shared/session.rs"]
mod session;

/// The repository's root (this file is fuzz/seedgen/src/main.rs).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes one target's seeds, replacing what was there.
fn write(target: &str, seeds: &[(String, Vec<u8>)]) {
    let dir = root().join("fuzz/seeds").join(target);
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("removing old seeds");
    }
    fs::create_dir_all(&dir).expect("creating the seed folder");
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).expect("writing a seed");
    }
    let total: usize = seeds.iter().map(|(_, b)| b.len()).sum();
    println!("{target}: {} seeds, {total} bytes", seeds.len());
}

fn named(name: &str, bytes: Vec<u8>) -> (String, Vec<u8>) {
    (name.to_owned(), bytes)
}

/// A card of `bits` bits numbered `n`, left-justified with zero padding.
fn card(n: u128, bits: u8, not_before: u32, not_after: u32) -> Credential {
    let len = usize::from(bits).div_ceil(8);
    let pad = len * 8 - usize::from(bits);
    let n = if bits == 128 {
        n
    } else {
        n & ((1u128 << bits) - 1)
    };
    Credential {
        id: format!("c{n}-{bits}"),
        bits,
        data: (n << pad).to_be_bytes()[16 - len..].to_vec(),
        not_before,
        not_after,
    }
}

fn small_set() -> Vec<Credential> {
    vec![
        card(0x2f623ae, 26, 1_761_955_200, 1_793_491_200),
        card(0x0a1b2c3d4, 37, 0, 0),
        card(7, 8, 0, 1_800_000_000),
        card(u128::MAX, 128, 1, 0),
    ]
}

fn commands() -> Vec<(&'static str, Command)> {
    let led = Led {
        reader: 0,
        led: 0,
        temporary: LedTemporary {
            control: 2,
            on_time: 5,
            off_time: 5,
            on_color: 2,
            off_color: 0,
            timer_100ms: 30,
        },
        permanent: LedPermanent::UNCHANGED,
    };
    vec![
        ("poll", Command::Poll),
        ("id", Command::Id),
        ("cap", Command::Cap),
        ("lstat", Command::LStat),
        (
            "out",
            Command::Out(vec![Out {
                output: 0,
                control: 5,
                timer_100ms: 50,
            }]),
        ),
        ("led", Command::Led(vec![led, led])),
        (
            "buz",
            Command::Buz(vec![Buz {
                reader: 0,
                tone: 2,
                on_time: 3,
                off_time: 1,
                count: 2,
            }]),
        ),
        (
            "comset",
            Command::ComSet {
                address: 5,
                baud: 115_200,
            },
        ),
        (
            "keyset",
            Command::KeySet {
                key: KeyBytes([0x5A; 16]),
            },
        ),
        (
            "chlng",
            Command::Chlng {
                random: session::CP_RANDOM,
            },
        ),
        (
            "scrypt",
            Command::Scrypt {
                cryptogram: [0x11; 16],
            },
        ),
        (
            "filetransfer",
            Command::FileTransfer(FileTransfer {
                file_type: FULL_TABLE,
                total_size: 60,
                offset: 0,
                data: full_table_files(9, &small_set(), 4096)
                    .expect("a small table")
                    .remove(0),
            }),
        ),
        (
            "mfg-query",
            Command::Mfg(Manufacturer {
                vendor: DEFAULT_VENDOR_CODE,
                data: MfgCommand::Query.encode(),
            }),
        ),
        ("abort", Command::Abort),
    ]
}

fn replies() -> Vec<(&'static str, Reply)> {
    vec![
        ("ack", Reply::Ack),
        ("nak", Reply::Nak(NakReason::UnknownCommand)),
        (
            "pdid",
            Reply::PdId(PdId {
                vendor: DEFAULT_VENDOR_CODE,
                model: 1,
                version: 2,
                serial: 0x0102_0304,
                firmware_major: 3,
                firmware_minor: 2,
                firmware_build: 9,
            }),
        ),
        (
            "pdcap",
            Reply::PdCap(PdCap {
                capabilities: vec![
                    Capability {
                        function: 0x08,
                        compliance: 1,
                        number: 0,
                    },
                    Capability {
                        function: 0x09,
                        compliance: 1,
                        number: 1,
                    },
                    Capability {
                        function: 0x0A,
                        compliance: 0x80,
                        number: 0x00,
                    },
                ],
            }),
        ),
        (
            "lstatr",
            Reply::LStatR(LStatR {
                tamper: 0,
                power: 1,
            }),
        ),
        (
            "raw",
            Reply::Raw(Raw {
                reader: 0,
                format: 1,
                bits: 26,
                data: vec![0xBD, 0x88, 0xEB, 0x80],
            }),
        ),
        (
            "com",
            Reply::Com {
                address: 5,
                baud: 9600,
            },
        ),
        (
            "ccrypt",
            Reply::CCrypt(CCrypt {
                client_uid: session::CLIENT_UID,
                pd_random: session::PD_RANDOM,
                pd_cryptogram: [0x22; 16],
            }),
        ),
        ("rmac-i", Reply::RMacI { rmac: [0x33; 16] }),
        ("busy", Reply::Busy),
        (
            "ftstat",
            Reply::FtStat(FtStat {
                action: 0,
                delay_ms: 10,
                status: FtStat::STATUS_PROCESSED,
                update_msg_max: 0,
            }),
        ),
        (
            "mfgrep-state",
            Reply::MfgRep(Manufacturer {
                vendor: DEFAULT_VENDOR_CODE,
                data: MfgReply::State {
                    version: 1042,
                    count: 2,
                    digest: SetDigest([1, 2, 3, 4, 5, 6, 7, 8]),
                    capacity: 10_000,
                }
                .encode(),
            }),
        ),
    ]
}

/// The command named `name` in [`commands`].
fn command(name: &str) -> Command {
    commands()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| c)
        .expect("a listed command")
}

/// The reply named `name` in [`replies`].
fn reply(name: &str) -> Reply {
    replies()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| r)
        .expect("a listed reply")
}

fn mfg_replies() -> Vec<(&'static str, MfgReply)> {
    vec![
        (
            "state",
            MfgReply::State {
                version: 1042,
                count: 2,
                digest: SetDigest([1, 2, 3, 4, 5, 6, 7, 8]),
                capacity: 10_000,
            },
        ),
        (
            "error",
            MfgReply::Error {
                code: 2,
                version: 1043,
            },
        ),
        (
            "access",
            MfgReply::Access {
                granted: true,
                reason: 0,
                bits: 26,
                data: vec![0xBD, 0x88, 0xEB, 0x80],
            },
        ),
        (
            "other",
            MfgReply::Other {
                sub: 0x99,
                body: vec![1, 2, 3],
            },
        ),
    ]
}

/// Every command and reply as a frame, plus handshake and sealed frames and a checksum frame.
fn frames() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, c) in commands() {
        let frame = c.to_frame(1, 1);
        out.push(named(name, frame.encode(name == "poll").expect("encodes")));
    }
    for (name, r) in replies() {
        out.push(named(
            name,
            r.to_frame(1, 1).encode(false).expect("encodes"),
        ));
    }
    let checksum = Frame {
        use_crc: false,
        ..Command::Poll.to_frame(0x7F, 2)
    };
    out.push(named(
        "poll-checksum",
        checksum.encode(false).expect("encodes"),
    ));
    let chlng = Frame {
        security: Some(SecurityBlock {
            kind: scs::SCS_11,
            data: vec![1],
        }),
        ..Command::Chlng {
            random: session::CP_RANDOM,
        }
        .to_frame(1, 1)
    };
    out.push(named("chlng-sb", chlng.encode(true).expect("encodes")));
    for (name, frame) in sealed_frames() {
        out.push(named(name, frame.encode(false).expect("encodes")));
    }
    out
}

/// Frames of the fixed session: the PD's first command (sealed POLL, LED), and the replies to
/// a sealed POLL (ACK, RAW), as `secure_open` opens them.
fn sealed_frames() -> Vec<(&'static str, Frame)> {
    let (cp, pd) = session::established();
    let led = command("led");
    let mut first = cp.clone();
    let poll = session::seal(&mut first, 0x60, &[]);
    let mut first = cp.clone();
    let led = session::seal(&mut first, led.code(), &led.encode_data());

    let mut cp_polled = cp;
    let mut pd_polled = pd;
    let polled = session::seal(&mut cp_polled, 0x60, &[]);
    pd_polled
        .open_command(
            &polled.mac_input().expect("POLL"),
            &polled.mac.expect("MAC"),
        )
        .expect("the PD opens the POLL");
    let mut pd = pd_polled.clone();
    let ack = session::seal(&mut pd, 0x40, &[]);
    let raw = reply("raw");
    let mut pd = pd_polled;
    let raw = session::seal(&mut pd, raw.code(), &raw.encode_data());
    vec![
        ("sealed-poll", poll),
        ("sealed-led", led),
        ("sealed-ack", ack),
        ("sealed-raw", raw),
    ]
}

fn frame_decode() -> Vec<(String, Vec<u8>)> {
    frames()
}

fn stream_reader() -> Vec<(String, Vec<u8>)> {
    let frames = frames();
    let poll = Command::Poll.to_frame(0, 0).encode(true).expect("POLL");
    let ack = Reply::Ack.to_frame(0, 0).encode(false).expect("ACK");
    let mut line = Vec::new();
    for (i, (_, f)) in frames.iter().enumerate() {
        line.extend_from_slice(f);
        // Noise, idle marks and a stray SOM between frames.
        match i % 4 {
            0 => line.extend_from_slice(&[0x00, 0x12]),
            1 => line.extend_from_slice(&[0xFF, 0xFF]),
            2 => line.extend_from_slice(&[0x53, 0x00, 0xE8, 0x03]),
            _ => {}
        }
    }
    let cut = |flags: u8, seed: u8, bytes: &[u8]| {
        let mut v = vec![flags, seed];
        v.extend_from_slice(bytes);
        v
    };
    vec![
        named("all-frames-any", cut(0, 7, &line)),
        named("all-frames-crc-only", cut(1, 200, &line)),
        named("poll-ack", cut(0, 1, &[poll, ack].concat())),
        named("truncated", cut(1, 3, &line[..line.len() / 3])),
    ]
}

fn message_decode() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, c) in commands() {
        out.push(named(name, [&[c.code()][..], &c.encode_data()].concat()));
    }
    for (name, r) in replies() {
        out.push(named(name, [&[r.code()][..], &r.encode_data()].concat()));
    }
    out
}

fn mfg_decode() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        named(
            "query",
            MfgCommand::Query.encode_with_vendor(DEFAULT_VENDOR_CODE),
        ),
        named(
            "time",
            MfgCommand::Time {
                unix_seconds: 1_764_000_000,
            }
            .encode_with_vendor(DEFAULT_VENDOR_CODE),
        ),
    ];
    for (name, r) in mfg_replies() {
        out.push(named(name, r.encode_with_vendor(DEFAULT_VENDOR_CODE)));
    }
    out
}

fn secure_open() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, frame) in sealed_frames() {
        let flags = u8::from(frame.reply);
        let mut open = vec![flags];
        open.extend_from_slice(&frame.mac_input().expect("sealed"));
        open.extend_from_slice(&frame.mac.expect("sealed"));
        out.push((format!("{name}-open"), open));
        let mut wire = vec![flags];
        wire.extend_from_slice(&frame.encode(false).expect("sealed"));
        out.push((format!("{name}-wire"), wire));
    }
    // The handshake path (flags bit 2): a CCRYPT's data and an SCRYPT's length.
    let mut ccrypt = vec![4];
    ccrypt.extend_from_slice(&reply("ccrypt").encode_data());
    out.push(named("handshake-ccrypt", ccrypt));
    out.push(named(
        "handshake-scrypt",
        [&[6u8][..], &[0x11; 16]].concat(),
    ));
    out
}

fn table_file() -> Vec<(String, Vec<u8>)> {
    let set = small_set();
    let to: Vec<Credential> = set[1..]
        .iter()
        .cloned()
        .chain([card(99, 26, 0, 0)])
        .collect();
    let record = |file_type: u8, bytes: &[u8]| {
        let mut v = vec![file_type];
        v.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        v.extend_from_slice(bytes);
        v
    };
    let full = full_table_files(7, &set, 4096).expect("a small table");
    let split = full_table_files(7, &set, 60).expect("a table in parts");
    let delta = delta_file(7, 8, &set, &to, 4096).expect("a small delta");
    let empty = full_table_files(1, &[], 4096).expect("an empty table");
    let mut parts_then_delta: Vec<u8> = split.iter().flat_map(|p| record(FULL_TABLE, p)).collect();
    parts_then_delta.extend(record(DELTA, &delta));
    vec![
        named("full", record(FULL_TABLE, &full[0])),
        named(
            "full-then-delta",
            [record(FULL_TABLE, &full[0]), record(DELTA, &delta)].concat(),
        ),
        named("parts-then-delta", parts_then_delta),
        named("delta-alone", record(DELTA, &delta)),
        named("empty", record(FULL_TABLE, &empty[0])),
    ]
}

fn snapshot_part() -> Vec<(String, Vec<u8>)> {
    let part = |topic: u8, json: &str| [&[topic][..], json.as_bytes()].concat();
    // The longest id the contract allows (64 characters of 4 bytes, 256 bytes of UTF-8) is not
    // a seed: it is fuzz/regressions/snapshot_part/id-of-64-four-byte-chars, a crash until the
    // stored set keeps such an id.
    vec![
        // The contract's example (cloud.md).
        named(
            "spec-example",
            part(
                0,
                r#"{"version": 1042, "part": 0, "parts": 1,
 "credentials": [
   {"id": "kc-8f3a91", "bits": 26, "data": "bd88eb80",
    "not_before": "2026-11-01T00:00:00Z", "not_after": "2027-11-01T00:00:00Z"},
   {"id": "kc-2b1077", "bits": 37, "data": "0a1b2c3d40"}]}"#,
            ),
        ),
        named(
            "second-part",
            part(
                1,
                r#"{"version":7,"part":1,"parts":3,"credentials":[{"id":"a","bits":128,"data":"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"}]}"#,
            ),
        ),
        named(
            "empty-set",
            part(
                0,
                r#"{"version":9007199254740991,"part":0,"parts":1,"credentials":[]}"#,
            ),
        ),
        named(
            "duplicate-card",
            part(
                0,
                r#"{"version":2,"part":0,"parts":1,"credentials":[{"id":"a","bits":4,"data":"10"},{"id":"b","bits":4,"data":"10"}]}"#,
            ),
        ),
        named("part-level", b"\x0012".to_vec()),
    ]
}

fn config_load() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let files = [
        "config/doorhub.example.toml",
        "config/local.toml",
        "tests/config/valid/minimal.toml",
        "tests/config/valid/full.toml",
        "tests/config/valid/empty-optionals.toml",
        "tests/config/invalid/duplicate-address.toml",
        "tests/config/invalid/wrong-type.toml",
        "tests/config/invalid/unknown-door-key.toml",
    ];
    for file in files {
        let text = fs::read(root().join(file)).expect("a config file of the repository");
        let name = file.replace('/', "-");
        out.push((name, text));
    }
    let mut with_env = fs::read(root().join("tests/config/valid/minimal.toml")).expect("minimal");
    with_env.extend_from_slice(
        b"\0DOORHUB__HUB__ID=0123\nDOORHUB__MQTT__KEEP_ALIVE=45s\nDOORHUB__BUS__X=1\n",
    );
    out.push(named("minimal-with-env", with_env));
    out
}

fn credset_view() -> Vec<(String, Vec<u8>)> {
    let set = small_set();
    vec![
        named("small", credset::encode(1042, &set).expect("encodes")),
        named("empty", credset::encode(1, &[]).expect("encodes")),
        named(
            "one",
            credset::encode(u64::MAX, &set[..1]).expect("encodes"),
        ),
    ]
}

fn main() {
    write("frame_decode", &frame_decode());
    write("stream_reader", &stream_reader());
    write("message_decode", &message_decode());
    write("mfg_decode", &mfg_decode());
    write("secure_open", &secure_open());
    write("table_file", &table_file());
    write("snapshot_part", &snapshot_part());
    write("config_load", &config_load());
    write("credset_view", &credset_view());
}

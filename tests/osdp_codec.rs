//! The OSDP codec against the reader-link spec: known frames byte for byte, round trips of every
//! command and reply through frames, and properties of the decoder and the frame reader on
//! hostile input (noise, truncation, corruption).

use doorhub::osdp::frame::{self, Frame, MAX_FRAME, SecurityBlock, scs};
use doorhub::osdp::message::*;
use doorhub::osdp::secure::KeyBytes;
use doorhub::osdp::stream::FrameReader;
use proptest::prelude::*;

const POLL: [u8; 9] = [0xFF, 0x53, 0x00, 0x08, 0x00, 0x04, 0x60, 0xEB, 0xAA];
const ACK: [u8; 8] = [0x53, 0x80, 0x08, 0x00, 0x04, 0x40, 0x59, 0xAC];

// ---------------------------------------------------------------------------------------------
// (a) Known frames.

#[test]
fn spec_poll_and_ack_byte_for_byte() {
    assert_eq!(Command::Poll.to_frame(0, 0).encode(true), Ok(POLL.to_vec()));
    assert_eq!(Reply::Ack.to_frame(0, 0).encode(false), Ok(ACK.to_vec()));

    let Ok(Some((poll, 9))) = frame::decode(&POLL) else {
        panic!("POLL does not decode");
    };
    assert_eq!(Command::from_frame(&poll), Ok(Command::Poll));
    assert_eq!((poll.address, poll.reply, poll.sequence), (0, false, 0));
    let Ok(Some((ack, 8))) = frame::decode(&ACK) else {
        panic!("ACK does not decode");
    };
    assert_eq!(Reply::from_frame(&ack), Ok(Reply::Ack));
    assert_eq!((ack.address, ack.reply, ack.sequence), (0, true, 0));
}

#[test]
fn known_command_layouts() {
    // osdp_OUT: output 0, temporary on (5), 3 s.
    let out = Command::Out(vec![Out {
        output: 0,
        control: 5,
        timer_100ms: 30,
    }]);
    let bytes = out.to_frame(1, 1).encode(true).unwrap_or_default();
    assert_eq!(bytes[..7], [0xFF, 0x53, 0x01, 0x0C, 0x00, 0x05, 0x68]);
    assert_eq!(bytes[7..11], [0x00, 0x05, 0x1E, 0x00]);

    // osdp_MFG with doorhub's vendor code and QUERY.
    let mfg = Command::Mfg(Manufacturer {
        vendor: [0x0A, 0x44, 0x48],
        data: vec![0x01],
    });
    assert_eq!(mfg.code(), 0x80);
    assert_eq!(mfg.encode_data(), [0x0A, 0x44, 0x48, 0x01]);
    assert_eq!(Command::Abort.code(), 0xA2);
    assert!(Command::Abort.encode_data().is_empty());
    assert_eq!(Command::Id.encode_data(), [0x00]);
    assert_eq!(Command::Cap.encode_data(), [0x00]);
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn arb_out() -> impl Strategy<Value = Out> {
    (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(output, control, timer_100ms)| Out {
        output,
        control,
        timer_100ms,
    })
}

fn arb_led() -> impl Strategy<Value = Led> {
    (
        any::<[u8; 2]>(),
        any::<[u8; 5]>(),
        any::<u16>(),
        any::<[u8; 5]>(),
    )
        .prop_map(|([reader, led], t, timer_100ms, p)| Led {
            reader,
            led,
            temporary: LedTemporary {
                control: t[0],
                on_time: t[1],
                off_time: t[2],
                on_color: t[3],
                off_color: t[4],
                timer_100ms,
            },
            permanent: LedPermanent {
                control: p[0],
                on_time: p[1],
                off_time: p[2],
                on_color: p[3],
                off_color: p[4],
            },
        })
}

fn arb_buz() -> impl Strategy<Value = Buz> {
    any::<[u8; 5]>().prop_map(|b| Buz {
        reader: b[0],
        tone: b[1],
        on_time: b[2],
        off_time: b[3],
        count: b[4],
    })
}

const COMMAND_CODES: [u8; 14] = [
    CMD_POLL,
    CMD_ID,
    CMD_CAP,
    CMD_LSTAT,
    CMD_OUT,
    CMD_LED,
    CMD_BUZ,
    CMD_COMSET,
    CMD_KEYSET,
    CMD_CHLNG,
    CMD_SCRYPT,
    CMD_FILETRANSFER,
    CMD_MFG,
    CMD_ABORT,
];

const REPLY_CODES: [u8; 12] = [
    REPLY_ACK,
    REPLY_NAK,
    REPLY_PDID,
    REPLY_PDCAP,
    REPLY_LSTATR,
    REPLY_RAW,
    REPLY_COM,
    REPLY_CCRYPT,
    REPLY_RMAC_I,
    REPLY_BUSY,
    REPLY_FTSTAT,
    REPLY_MFGREP,
];

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Poll),
        Just(Command::Id),
        Just(Command::Cap),
        Just(Command::LStat),
        Just(Command::Abort),
        prop::collection::vec(arb_out(), 0..8).prop_map(Command::Out),
        prop::collection::vec(arb_led(), 0..4).prop_map(Command::Led),
        prop::collection::vec(arb_buz(), 0..4).prop_map(Command::Buz),
        (any::<u8>(), any::<u32>()).prop_map(|(address, baud)| Command::ComSet { address, baud }),
        any::<[u8; 16]>().prop_map(|key| Command::KeySet { key: KeyBytes(key) }),
        any::<[u8; 8]>().prop_map(|random| Command::Chlng { random }),
        any::<[u8; 16]>().prop_map(|cryptogram| Command::Scrypt { cryptogram }),
        (any::<u8>(), any::<u32>(), any::<u32>(), bytes(200)).prop_map(
            |(file_type, total_size, offset, data)| Command::FileTransfer(FileTransfer {
                file_type,
                total_size,
                offset,
                data,
            })
        ),
        (any::<[u8; 3]>(), bytes(64))
            .prop_map(|(vendor, data)| Command::Mfg(Manufacturer { vendor, data })),
        (
            any::<u8>().prop_filter("unknown code", |c| !COMMAND_CODES.contains(c)),
            bytes(40)
        )
            .prop_map(|(code, data)| Command::Other { code, data }),
    ]
}

fn arb_reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        Just(Reply::Ack),
        Just(Reply::Busy),
        any::<u8>().prop_map(|r| Reply::Nak(NakReason::from(r))),
        (
            any::<[u8; 3]>(),
            any::<[u8; 2]>(),
            any::<u32>(),
            any::<[u8; 3]>()
        )
            .prop_map(|(vendor, [model, version], serial, fw)| Reply::PdId(PdId {
                vendor,
                model,
                version,
                serial,
                firmware_major: fw[0],
                firmware_minor: fw[1],
                firmware_build: fw[2],
            })),
        prop::collection::vec(any::<[u8; 3]>(), 0..16).prop_map(|caps| Reply::PdCap(PdCap {
            capabilities: caps
                .into_iter()
                .map(|[function, compliance, number]| Capability {
                    function,
                    compliance,
                    number,
                })
                .collect(),
        })),
        any::<[u8; 2]>().prop_map(|[tamper, power]| Reply::LStatR(LStatR { tamper, power })),
        (any::<u8>(), any::<u8>(), 0u16..=512).prop_flat_map(|(reader, format, bits)| {
            prop::collection::vec(any::<u8>(), usize::from(bits).div_ceil(8)).prop_map(
                move |data| {
                    Reply::Raw(Raw {
                        reader,
                        format,
                        bits,
                        data,
                    })
                },
            )
        }),
        (any::<u8>(), any::<u32>()).prop_map(|(address, baud)| Reply::Com { address, baud }),
        (any::<[u8; 8]>(), any::<[u8; 8]>(), any::<[u8; 16]>()).prop_map(
            |(client_uid, pd_random, pd_cryptogram)| Reply::CCrypt(CCrypt {
                client_uid,
                pd_random,
                pd_cryptogram,
            })
        ),
        any::<[u8; 16]>().prop_map(|rmac| Reply::RMacI { rmac }),
        (any::<u8>(), any::<u16>(), any::<i16>(), any::<u16>()).prop_map(
            |(action, delay_ms, status, update_msg_max)| Reply::FtStat(FtStat {
                action,
                delay_ms,
                status,
                update_msg_max,
            })
        ),
        (any::<[u8; 3]>(), bytes(128))
            .prop_map(|(vendor, data)| Reply::MfgRep(Manufacturer { vendor, data })),
        (
            any::<u8>().prop_filter("unknown code", |c| !REPLY_CODES.contains(c)),
            bytes(40)
        )
            .prop_map(|(code, data)| Reply::Other { code, data }),
    ]
}

/// A plain frame with random header fields and content.
fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        0u8..=0x7F,
        any::<bool>(),
        0u8..=3,
        any::<bool>(),
        any::<u8>(),
        bytes(64),
    )
        .prop_map(|(address, reply, sequence, use_crc, code, data)| Frame {
            address,
            reply,
            sequence,
            use_crc,
            security: None,
            code,
            data,
            mac: None,
        })
}

/// A frame with a security block of any type, and a MAC when the type calls for one.
fn arb_secure_frame() -> impl Strategy<Value = Frame> {
    (
        arb_frame(),
        scs::SCS_11..=scs::SCS_18,
        bytes(4),
        any::<[u8; 4]>(),
    )
        .prop_map(|(mut f, kind, sb_data, mac)| {
            let sb = SecurityBlock {
                kind,
                data: sb_data,
            };
            f.mac = sb.carries_mac().then_some(mac);
            f.security = Some(sb);
            f
        })
}

/// Noise, heavy in SOM (0x53) and mark (0xFF) bytes so false starts are common.
fn noise(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<u8>(),
            1 => Just(0x53u8),
            1 => Just(0xFFu8),
        ],
        0..=max,
    )
}

/// Splits `stream` at the given cut points and feeds it to `reader`, draining after each push
/// as the bus task does; then reports the line idle until nothing is left. Checks the buffer
/// bound on the way. Returns every frame returned.
fn feed(reader: &mut FrameReader, stream: &[u8], cuts: &[usize]) -> Vec<Frame> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.push(0);
    cuts.push(stream.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut got = Vec::new();
    for pair in cuts.windows(2) {
        let chunk = &stream[pair[0]..pair[1]];
        reader.push(chunk);
        assert!(reader.pending() <= MAX_FRAME + chunk.len());
        while let Some(f) = reader.next_frame() {
            got.push(f);
        }
        // Drained: what is left is a partial frame, shorter than any frame may be.
        assert!(reader.pending() < MAX_FRAME);
    }
    loop {
        while let Some(f) = reader.next_frame() {
            got.push(f);
        }
        if !reader.line_idle() {
            break;
        }
    }
    assert_eq!(reader.pending(), 0);
    got
}

/// `got` holds `want` in order, unless the noise produced a frame of its own: then a check
/// character matched by chance (1 in 65536 for CRC-16, 1 in 256 for the checksum) and that
/// frame may have swallowed a real one, which no reader can tell apart.
fn found_all(got: &[Frame], want: &[Frame]) -> bool {
    let phantom = got.iter().any(|g| !want.contains(g));
    phantom || got == want
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // -----------------------------------------------------------------------------------------
    // (b) Round trips through frames.

    #[test]
    fn command_round_trip(cmd in arb_command(), address in 0u8..=0x7F, sequence in 0u8..=3,
                          use_crc: bool, mark: bool) {
        let mut frame = cmd.to_frame(address, sequence);
        frame.use_crc = use_crc;
        let bytes = frame.encode(mark).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(bytes[0] == 0xFF, mark);
        let decoded = frame::decode(&bytes);
        prop_assert_eq!(decoded.clone(), Ok(Some((frame.clone(), bytes.len()))));
        prop_assert_eq!(Command::from_frame(&frame), Ok(cmd));
    }

    #[test]
    fn reply_round_trip(reply in arb_reply(), address in 0u8..=0x7F, sequence in 0u8..=3,
                        use_crc: bool, mark: bool) {
        let mut frame = reply.to_frame(address, sequence);
        frame.use_crc = use_crc;
        let bytes = frame.encode(mark).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let decoded = frame::decode(&bytes);
        prop_assert_eq!(decoded, Ok(Some((frame.clone(), bytes.len()))));
        prop_assert_eq!(Reply::from_frame(&frame), Ok(reply));
    }

    #[test]
    fn secure_frame_round_trip(frame in arb_secure_frame(), mark: bool) {
        let bytes = frame.encode(mark).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(frame::decode(&bytes), Ok(Some((frame.clone(), bytes.len()))));
        // The MAC covers SOM..data as sent: everything but the mark, MAC and check bytes.
        let input = frame.mac_input().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let start = usize::from(mark);
        let tail = frame.mac.map_or(0, |m| m.len()) + if frame.use_crc { 2 } else { 1 };
        prop_assert_eq!(&input[..], &bytes[start..bytes.len() - tail]);
    }

    /// Any data for any code: decoding never panics, and what decodes re-encodes to data that
    /// decodes to the same message.
    #[test]
    fn message_decode_is_total(code: u8, data in bytes(80)) {
        if let Ok(cmd) = Command::decode(code, &data) {
            prop_assert_eq!(cmd.code(), code);
            prop_assert_eq!(Command::decode(code, &cmd.encode_data()), Ok(cmd));
        }
        if let Ok(reply) = Reply::decode(code, &data) {
            prop_assert_eq!(reply.code(), code);
            prop_assert_eq!(Reply::decode(code, &reply.encode_data()), Ok(reply));
        }
    }

    // -----------------------------------------------------------------------------------------
    // (c) Hostile input.

    #[test]
    fn random_bytes_never_panic_the_decoder(data in noise(300)) {
        for start in 0..data.len() {
            if let Ok(Some((f, n))) = frame::decode(&data[start..]) {
                prop_assert!(n <= data.len() - start);
                // Whatever decodes is a frame that encodes again.
                let again = f.encode(false).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(frame::decode(&again), Ok(Some((f, again.len()))));
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_the_reader(data in noise(3000), cuts in prop::collection::vec(any::<usize>(), 0..20)) {
        let mut reader = FrameReader::new();
        let _ = feed(&mut reader, &data, &cuts);
        let stats = reader.stats();
        prop_assert!(stats.bytes_skipped <= data.len() as u64);
    }

    #[test]
    fn frames_are_found_among_noise(
        items in prop::collection::vec((noise(40), arb_frame(), any::<bool>()), 1..6),
        tail in noise(40),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (before, frame, mark) in &items {
            stream.extend_from_slice(before);
            stream.extend(frame.encode(*mark).map_err(|e| TestCaseError::fail(e.to_string()))?);
            want.push(frame.clone());
        }
        stream.extend_from_slice(&tail);
        let got = feed(&mut FrameReader::new(), &stream, &cuts);
        prop_assert!(found_all(&got, &want), "want {:?}\ngot {:?}", want, got);
    }

    #[test]
    fn crc_frames_are_found_among_noise_by_a_crc_only_reader(
        items in prop::collection::vec((noise(40), arb_frame(), any::<bool>()), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (before, frame, mark) in &items {
            let mut frame = frame.clone();
            frame.use_crc = true;
            stream.extend_from_slice(before);
            stream.extend(frame.encode(*mark).map_err(|e| TestCaseError::fail(e.to_string()))?);
            want.push(frame);
        }
        let got = feed(&mut FrameReader::crc_only(), &stream, &cuts);
        prop_assert!(found_all(&got, &want), "want {:?}\ngot {:?}", want, got);
    }

    /// Truncated frames are never returned, and the valid frames after them are found: once
    /// enough bytes follow (padding of MAX_FRAME idle bytes), or when the line goes idle.
    #[test]
    fn truncated_frames_do_not_stall(
        items in prop::collection::vec((arb_frame(), any::<bool>(), prop::option::of(any::<usize>())), 1..8),
        pad: bool,
        crc_only: bool,
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (frame, mark, cut) in &items {
            // With checksum frames, a truncated frame plus the bytes after it pass the
            // checksum one time in 256 (tolerated by `found_all`); CRC-only is the hub's case.
            let mut frame = frame.clone();
            frame.use_crc |= crc_only;
            let bytes = frame.encode(*mark).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match cut {
                // Keep at least the first byte and drop at least the last one.
                Some(c) => stream.extend_from_slice(&bytes[..1 + c % (bytes.len() - 1)]),
                None => {
                    stream.extend_from_slice(&bytes);
                    want.push(frame);
                }
            }
        }
        let mut reader = if crc_only { FrameReader::crc_only() } else { FrameReader::new() };
        let got = if pad {
            // Without any idle notice: the partial frames resolve as bytes keep coming.
            stream.extend(std::iter::repeat_n(0x00, MAX_FRAME));
            let mut got = Vec::new();
            reader.push(&stream);
            while let Some(f) = reader.next_frame() {
                got.push(f);
            }
            got
        } else {
            feed(&mut reader, &stream, &cuts)
        };
        prop_assert!(found_all(&got, &want), "want {:?}\ngot {:?}", want, got);
    }

    /// One corrupted byte never yields a different valid frame: CRC-16 detects every error of
    /// up to 16 bits, so the reader returns nothing or the original (a corrupted mark byte is
    /// only noise). A corrupted LEN can shorten the frame so that the check lands on other
    /// bytes; that passes by chance (1 in 65536 for CRC-16), which this test accepts as
    /// vanishingly rare, and why the hub reads with a CRC-only reader.
    #[test]
    fn one_corrupted_byte_is_never_a_different_frame(
        frame in prop_oneof![arb_frame(), arb_secure_frame()],
        mark: bool,
        position: usize,
        flip in 1u8..=255,
    ) {
        let mut frame = frame;
        frame.use_crc = true;
        let mut bytes = frame.encode(mark).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let i = position % bytes.len();
        bytes[i] ^= flip;
        let got = feed(&mut FrameReader::crc_only(), &bytes, &[]);
        // Not `frame::decode` alone: a flipped CTRL bit 2 turns the frame into a checksum
        // frame, which passes one time in 256; the CRC-only reader refuses those.
        for g in &got {
            prop_assert_eq!(g, &frame);
        }
    }

    /// The checksum detects every single-byte error too, as long as LEN (which decides which
    /// bytes are summed) is intact.
    #[test]
    fn one_corrupted_byte_fails_the_checksum(
        frame in arb_frame(),
        position: usize,
        flip in 1u8..=255,
    ) {
        let mut frame = frame;
        frame.use_crc = false;
        let mut bytes = frame.encode(false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Any byte but LEN (2 and 3).
        let positions: Vec<usize> = (0..bytes.len()).filter(|&p| p != 2 && p != 3).collect();
        let i = positions[position % positions.len()];
        bytes[i] ^= flip;
        if let Ok(Some((g, _))) = frame::decode(&bytes) {
            prop_assert_eq!(g, frame);
        }
    }
}

//! The reader simulator driven in-process over a pty pair, with our own codec playing the CP:
//! hand-built frames (`Command::to_frame`, `write_frame`) and replies read with `FrameReader`.

use std::time::Duration;

use doorhub::osdp::frame::Frame;
use doorhub::osdp::message::{
    CAP_RECEIVE_BUFFER, Command, FILE_TRANSFER_HEADER, FileTransfer, FtStat, Led, LedPermanent,
    LedTemporary, Manufacturer, Out, Reply,
};
use doorhub::osdp::stream::{FrameReader, write_frame};
use doorhub::push::file::{self, full_table_files};
use doorhub::push::mfg::{self, DEFAULT_VENDOR_CODE, MfgCommand, MfgReply};
use doorhub::sim::{Action, Mode, Reader, ReaderOptions, Script, SimEvent};
use doorhub::snapshot::{Credential, SetDigest};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_serial::SerialStream;

/// How long a reply may take before the test calls it missing (the simulator answers in well
/// under a millisecond without pacing).
const REPLY_WAIT: Duration = Duration::from_secs(2);
/// How long to listen before concluding that no reply comes. Nothing can be awaited for an
/// absence; the simulator's own events confirm the frame was seen first where possible.
const SILENCE: Duration = Duration::from_millis(300);

/// The CP end of a pty, with a simulator serving the other end.
struct Bench {
    line: SerialStream,
    reader: FrameReader,
    sequence: Option<u8>,
    script: mpsc::Sender<Script>,
    events: mpsc::UnboundedReceiver<SimEvent>,
}

impl Bench {
    fn start(reader: Reader) -> Bench {
        let (line, sim_side) = SerialStream::pair().expect("pty pair");
        let (script, script_rx) = mpsc::channel(16);
        let (event_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(reader.run(sim_side, script_rx, event_tx));
        Bench {
            line,
            reader: FrameReader::crc_only(),
            sequence: None,
            script,
            events,
        }
    }

    fn one(options: ReaderOptions) -> Bench {
        Bench::start(Reader::new(options))
    }

    /// 0 first (resets the PD), then 1, 2, 3, 1, ...
    fn next_sequence(&mut self) -> u8 {
        let s = match self.sequence {
            None => 0,
            Some(3) => 1,
            Some(s) => s + 1,
        };
        self.sequence = Some(s);
        s
    }

    async fn send_frame(&mut self, frame: &Frame) {
        write_frame(&mut self.line, frame, true)
            .await
            .expect("write");
    }

    async fn reply_within(&mut self, wait: Duration) -> Option<Frame> {
        match timeout(wait, self.reader.read_frame(&mut self.line)).await {
            Ok(r) => r.expect("read"),
            Err(_) => None,
        }
    }

    /// Sends `cmd` to `address` and returns the reply, which must come and echo the sequence.
    async fn exchange_at(&mut self, address: u8, cmd: &Command) -> Reply {
        let seq = self.next_sequence();
        self.send_frame(&cmd.to_frame(address, seq)).await;
        let frame = self
            .reply_within(REPLY_WAIT)
            .await
            .unwrap_or_else(|| panic!("no reply to {cmd:?}"));
        assert!(frame.reply);
        assert_eq!(frame.address, address);
        assert_eq!(frame.sequence, seq, "the reply echoes the sequence");
        Reply::from_frame(&frame).expect("reply decodes")
    }

    async fn exchange(&mut self, cmd: &Command) -> Reply {
        self.exchange_at(0, cmd).await
    }

    /// Sends `frame` and checks nothing comes back.
    async fn no_reply_to(&mut self, frame: &Frame) {
        self.send_frame(frame).await;
        assert_eq!(self.reply_within(SILENCE).await, None);
    }

    async fn act(&self, action: Action) {
        self.script.send(action.into()).await.expect("sim running");
    }

    /// The next event matching `pred`, skipping others.
    async fn event(&mut self, pred: impl Fn(&SimEvent) -> bool) -> SimEvent {
        let deadline = Instant::now() + REPLY_WAIT;
        loop {
            let e = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("event in time")
                .expect("sim running");
            if pred(&e) {
                return e;
            }
        }
    }

    /// Sends a whole file as FILETRANSFER fragments sized so each frame, mark included, is at
    /// most `rx_buffer` bytes, with a POLL between fragments as the hub does (answered with ACK:
    /// nothing is queued mid-file). Returns the FTSTAT statuses.
    async fn send_file(&mut self, file_type: u8, bytes: &[u8], rx_buffer: usize) -> Vec<i16> {
        // Mark, header (5), code, transfer header, CRC (2).
        let room = rx_buffer - (1 + 5 + 1 + FILE_TRANSFER_HEADER + 2);
        let mut statuses = Vec::new();
        let count = bytes.len().div_ceil(room);
        for (i, chunk) in bytes.chunks(room).enumerate() {
            let cmd = Command::FileTransfer(FileTransfer {
                file_type,
                total_size: bytes.len() as u32,
                offset: (i * room) as u32,
                data: chunk.to_vec(),
            });
            assert!(cmd.to_frame(0, 1).encode(true).expect("encodes").len() <= rx_buffer);
            match self.exchange(&cmd).await {
                Reply::FtStat(s) => statuses.push(s.status),
                other => panic!("FILETRANSFER answered with {other:?}"),
            }
            if i + 1 < count {
                assert_eq!(self.exchange(&Command::Poll).await, Reply::Ack);
            }
        }
        statuses
    }

    async fn query(&mut self) -> MfgReply {
        let q = mfg_cmd(&MfgCommand::Query);
        assert_eq!(self.exchange(&q).await, Reply::Ack);
        self.poll_mfg().await
    }

    async fn poll_mfg(&mut self) -> MfgReply {
        match self.exchange(&Command::Poll).await {
            Reply::MfgRep(m) => {
                assert_eq!(m.vendor, DEFAULT_VENDOR_CODE);
                MfgReply::decode(&m.data).expect("MFGREP decodes")
            }
            other => panic!("POLL answered with {other:?}, not MFGREP"),
        }
    }
}

fn mfg_cmd(c: &MfgCommand) -> Command {
    Command::Mfg(Manufacturer {
        vendor: DEFAULT_VENDOR_CODE,
        data: c.encode(),
    })
}

/// `n` distinct 26-bit cards.
fn cards(n: u32, from: u32) -> Vec<Credential> {
    (from..from + n)
        .map(|i| {
            let v = (i * 7 + 1) << 6; // 26 bits, left-justified in 4 bytes
            Credential {
                id: format!("c{i}"),
                bits: 26,
                data: v.to_be_bytes().to_vec(),
                not_before: 0,
                not_after: 0,
            }
        })
        .collect()
}

#[tokio::test]
async fn id_cap_and_poll() {
    let mut b = Bench::one(ReaderOptions::new(0, Mode::Stored));
    let Reply::PdId(id) = b.exchange(&Command::Id).await else {
        panic!("no PDID");
    };
    assert_eq!(id.vendor, DEFAULT_VENDOR_CODE);
    assert_eq!(id.serial & 0xFF, 0);
    let Reply::PdCap(cap) = b.exchange(&Command::Cap).await else {
        panic!("no PDCAP");
    };
    assert_eq!(cap.receive_buffer_size(), Some(256));
    assert_eq!(cap.supports_crc(), Some(true));
    assert!(!cap.supports_secure_channel());
    assert!(cap.get(CAP_RECEIVE_BUFFER).is_some());
    // Through a full sequence cycle 0, 1, 2, 3, 1.
    for _ in 0..5 {
        assert_eq!(b.exchange(&Command::Poll).await, Reply::Ack);
    }
    // A repeated sequence number is processed again, not refused.
    let again = Command::Poll.to_frame(0, b.sequence.unwrap_or(0));
    b.send_frame(&again).await;
    assert!(b.reply_within(REPLY_WAIT).await.is_some());
    b.event(|e| matches!(e, SimEvent::Cap { address: 0 })).await;
}

#[tokio::test]
async fn full_table_in_parts_then_delta_then_wrong_delta() {
    let mut b = Bench::one(ReaderOptions::new(0, Mode::Stored));
    let set = cards(300, 0);
    // 1024-byte files: several parts, each in several 256-byte fragments.
    let parts = full_table_files(7, &set, 1024).expect("table builds");
    assert!(parts.len() >= 3);
    for (i, part) in parts.iter().enumerate() {
        let statuses = b.send_file(file::FULL_TABLE, part, 256).await;
        let (last, rest) = statuses.split_last().expect("fragments");
        assert!(rest.iter().all(|&s| s == FtStat::STATUS_OK));
        assert_eq!(*last, FtStat::STATUS_PROCESSED);
        let want = if i + 1 == parts.len() {
            "replaced"
        } else {
            "staged"
        };
        b.event(|e| matches!(e, SimEvent::FileApplied { outcome, .. } if *outcome == want))
            .await;
    }
    assert_eq!(
        b.query().await,
        MfgReply::State {
            version: 7,
            count: 300,
            digest: SetDigest::of(&set),
            capacity: mfg::CAPACITY_UNKNOWN,
        }
    );

    // A delta: revoke two, add three.
    let mut next: Vec<Credential> = set[2..].to_vec();
    next.extend(cards(3, 1000));
    let delta = file::delta_file(7, 8, &set, &next, 4096).expect("delta fits");
    let statuses = b.send_file(file::DELTA, &delta, 256).await;
    assert_eq!(statuses.last(), Some(&FtStat::STATUS_PROCESSED));
    assert_eq!(
        b.query().await,
        MfgReply::State {
            version: 8,
            count: 301,
            digest: SetDigest::of(&next),
            capacity: mfg::CAPACITY_UNKNOWN,
        }
    );

    // The same change again, from version 7: the reader is at 8, so it doesn't apply. FTSTAT
    // still says "processed"; the refusal is an ERROR at the next POLL.
    let wrong = file::delta_file(7, 9, &set, &next, 4096).expect("delta fits");
    let statuses = b.send_file(file::DELTA, &wrong, 256).await;
    assert_eq!(statuses.last(), Some(&FtStat::STATUS_PROCESSED));
    assert_eq!(
        b.poll_mfg().await,
        MfgReply::Error {
            code: mfg::ERROR_DELTA,
            version: 9
        }
    );
    let e = b.event(|e| matches!(e, SimEvent::FileRefused { .. })).await;
    assert!(matches!(
        e,
        SimEvent::FileRefused {
            code: 2,
            version: 9,
            ..
        }
    ));
    let state = b.query().await;
    assert!(matches!(state, MfgReply::State { version: 8, .. }));
}

#[tokio::test]
async fn wrong_delta_reports_error_2_at_the_next_poll() {
    let mut b = Bench::one(ReaderOptions::new(0, Mode::Stored));
    let delta = file::delta_file(3, 4, &cards(1, 0), &cards(2, 0), 4096).expect("fits");
    // One fragment, so the POLL after it is the first after the file.
    let cmd = Command::FileTransfer(FileTransfer {
        file_type: file::DELTA,
        total_size: delta.len() as u32,
        offset: 0,
        data: delta.clone(),
    });
    let Reply::FtStat(s) = b.exchange(&cmd).await else {
        panic!("no FTSTAT");
    };
    assert_eq!(s.status, FtStat::STATUS_PROCESSED);
    assert_eq!(
        b.poll_mfg().await,
        MfgReply::Error {
            code: mfg::ERROR_DELTA,
            version: 4
        }
    );
    assert_eq!(b.exchange(&Command::Poll).await, Reply::Ack);
}

#[tokio::test]
async fn a_frame_over_the_receive_buffer_is_dropped() {
    let mut b = Bench::one(ReaderOptions::new(0, Mode::Stored));
    let make = |wire: usize| {
        let room = wire - (1 + 5 + 1 + FILE_TRANSFER_HEADER + 2);
        Command::FileTransfer(FileTransfer {
            file_type: file::FULL_TABLE,
            total_size: 2000,
            offset: 0,
            data: vec![0; room],
        })
        .to_frame(0, 0)
    };
    let over = make(257);
    assert_eq!(over.encode(true).expect("encodes").len(), 257);
    b.no_reply_to(&over).await;
    let e = b.event(|e| matches!(e, SimEvent::Dropped { .. })).await;
    assert_eq!(
        e,
        SimEvent::Dropped {
            address: 0,
            wire_bytes: 257,
            rx_buffer: 256
        }
    );
    // One byte less fits, and is answered.
    let fits = make(256);
    b.send_frame(&fits).await;
    let reply = b.reply_within(REPLY_WAIT).await.expect("answered");
    assert!(matches!(
        Reply::from_frame(&reply),
        Ok(Reply::FtStat(FtStat { status: 0, .. }))
    ));
}

#[tokio::test]
async fn plain_card_is_raw_at_the_next_poll() {
    let mut b = Bench::one(ReaderOptions::new(0, Mode::Plain));
    assert_eq!(b.exchange(&Command::Poll).await, Reply::Ack);
    b.act(Action::Card {
        bits: 26,
        data: vec![0xbd, 0x88, 0xeb, 0x80],
    })
    .await;
    b.event(|e| matches!(e, SimEvent::Card { granted: None, .. }))
        .await;
    let Reply::Raw(raw) = b.exchange(&Command::Poll).await else {
        panic!("no RAW");
    };
    assert_eq!(
        (raw.bits, raw.data.as_slice()),
        (26, &[0xbd, 0x88, 0xeb, 0x80][..])
    );
    // One event per POLL.
    assert_eq!(b.exchange(&Command::Poll).await, Reply::Ack);
    // A plain reader has no doorhub firmware: MFG is refused.
    assert!(matches!(
        b.exchange(&mfg_cmd(&MfgCommand::Query)).await,
        Reply::Nak(_)
    ));
}

#[tokio::test]
async fn stored_card_is_decided_from_the_table() {
    let mut b = Bench::one(ReaderOptions::new(0, Mode::Stored));
    let set = cards(2, 0);
    let part = &full_table_files(1, &set, 4096).expect("builds")[0];
    b.send_file(file::FULL_TABLE, part, 256).await;
    b.act(Action::Card {
        bits: 26,
        data: set[1].data.clone(),
    })
    .await;
    b.act(Action::Card {
        bits: 26,
        data: cards(1, 50)[0].data.clone(),
    })
    .await;
    b.event(|e| {
        matches!(
            e,
            SimEvent::Card {
                granted: Some(false),
                ..
            }
        )
    })
    .await;
    assert_eq!(
        b.poll_mfg().await,
        MfgReply::Access {
            granted: true,
            reason: mfg::REASON_OK,
            bits: 26,
            data: set[1].data.clone()
        }
    );
    assert!(matches!(
        b.poll_mfg().await,
        MfgReply::Access {
            granted: false,
            reason: mfg::REASON_UNKNOWN_CARD,
            ..
        }
    ));
}

#[tokio::test]
async fn out_led_and_buz_are_reported() {
    let mut b = Bench::one(ReaderOptions::new(0, Mode::Plain));
    let out = Command::Out(vec![Out {
        output: 0,
        control: 5,
        timer_100ms: 30,
    }]);
    assert_eq!(b.exchange(&out).await, Reply::Ack);
    assert_eq!(
        b.event(|e| matches!(e, SimEvent::Out { .. })).await,
        SimEvent::Out {
            address: 0,
            output: 0,
            control: 5,
            timer_100ms: 30
        }
    );
    let led = Command::Led(vec![Led {
        reader: 0,
        led: 0,
        temporary: LedTemporary {
            control: 2,
            on_time: 5,
            off_time: 0,
            on_color: 2,
            off_color: 0,
            timer_100ms: 30,
        },
        permanent: LedPermanent {
            control: 1,
            on_time: 1,
            off_time: 0,
            on_color: 1,
            off_color: 0,
        },
    }]);
    assert_eq!(b.exchange(&led).await, Reply::Ack);
    let e = b.event(|e| matches!(e, SimEvent::Led { .. })).await;
    assert!(
        e.to_json()
            .contains(r#""temporary":{"control":2,"on_time":5"#)
    );
    let buz = Command::Buz(vec![doorhub::osdp::message::Buz {
        reader: 0,
        tone: 2,
        on_time: 2,
        off_time: 0,
        count: 1,
    }]);
    assert_eq!(b.exchange(&buz).await, Reply::Ack);
    b.event(|e| matches!(e, SimEvent::Buz { tone: 2, .. }))
        .await;
}

#[tokio::test]
async fn silent_reader_does_not_answer() {
    let mut b = Bench::one(ReaderOptions::new(0, Mode::Plain));
    assert_eq!(b.exchange(&Command::Poll).await, Reply::Ack);
    b.act(Action::Silent(true)).await;
    b.event(|e| matches!(e, SimEvent::Silent { on: true, .. }))
        .await;
    b.no_reply_to(&Command::Poll.to_frame(0, 1)).await;
    b.no_reply_to(&Command::Id.to_frame(0, 2)).await;
    b.act(Action::Silent(false)).await;
    b.event(|e| matches!(e, SimEvent::Silent { on: false, .. }))
        .await;
    b.sequence = Some(2);
    assert_eq!(b.exchange(&Command::Poll).await, Reply::Ack);
}

#[tokio::test]
async fn tamper_and_wipe() {
    let mut b = Bench::one(ReaderOptions::new(0, Mode::Stored));
    let part = &full_table_files(4, &cards(3, 0), 4096).expect("builds")[0];
    b.send_file(file::FULL_TABLE, part, 256).await;
    b.act(Action::Tamper(true)).await;
    let Reply::LStatR(s) = b.exchange(&Command::Poll).await else {
        panic!("no LSTATR");
    };
    assert_eq!(s.tamper, 1);
    b.act(Action::Wipe).await;
    b.event(|e| matches!(e, SimEvent::Wiped { .. })).await;
    assert_eq!(
        b.query().await,
        MfgReply::State {
            version: 0,
            count: 0,
            digest: SetDigest::default(),
            capacity: mfg::CAPACITY_UNKNOWN,
        }
    );
}

#[tokio::test]
async fn multidrop_readers_answer_their_own_address() {
    let mut b = Bench::start(Reader::multidrop([
        ReaderOptions::new(1, Mode::Plain),
        ReaderOptions::new(2, Mode::Stored),
    ]));
    assert!(
        matches!(b.exchange_at(1, &Command::Id).await, Reply::PdId(id) if id.serial & 0xFF == 1)
    );
    assert!(
        matches!(b.exchange_at(2, &Command::Id).await, Reply::PdId(id) if id.serial & 0xFF == 2)
    );
    b.no_reply_to(&Command::Poll.to_frame(3, 1)).await;
    b.script
        .send("@2 card 8 05".parse().expect("script line"))
        .await
        .expect("sim running");
    b.event(|e| matches!(e, SimEvent::Card { address: 2, .. }))
        .await;
    b.sequence = Some(1);
    assert_eq!(b.exchange_at(1, &Command::Poll).await, Reply::Ack);
    assert!(matches!(
        b.exchange_at(2, &Command::Poll).await,
        Reply::MfgRep(_)
    ));
}

#[tokio::test]
async fn replies_are_paced_at_the_line_speed() {
    let mut b = Bench::one(ReaderOptions {
        baud: Some(9600),
        reply_delay: Duration::from_millis(20),
        ..ReaderOptions::new(0, Mode::Plain)
    });
    let started = Instant::now();
    assert_eq!(b.exchange(&Command::Poll).await, Reply::Ack);
    // POLL 9 bytes and ACK 9 bytes at 9600 baud (18.75 ms), plus 20 ms of processing.
    assert!(started.elapsed() >= Duration::from_millis(38));
    // Garbage and a truncated frame before a real one do not stop it being answered.
    b.line
        .write_all(&[0x00, 0x53, 0x00, 0xE8, 0x03, 0x04])
        .await
        .expect("write");
    assert_eq!(b.exchange(&Command::Poll).await, Reply::Ack);
}

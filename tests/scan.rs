//! `doorhub scan` against simulated readers on a pty pair: the library's probe, and the command
//! as a technician sees it, on a terminal and not.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::time::Duration;

use common::simbus::SimBus;
use doorhub::scan::Progress;
use doorhub::sim::{Mode, Reader, ReaderOptions};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_serial::{SerialPort, SerialStream};

#[tokio::test]
async fn scan_lists_the_readers_that_answer() {
    let (master, slave) = SerialStream::pair().unwrap();
    let (_script, script_rx) = mpsc::channel(1);
    let (events, _events_rx) = mpsc::unbounded_channel();
    let sim = Reader::multidrop([
        ReaderOptions::new(1, Mode::Plain),
        ReaderOptions::new(4, Mode::Stored),
    ]);
    let task = tokio::spawn(sim.run(master, script_rx, events));
    let mut told = Vec::new();
    let found = doorhub::scan::scan(slave, 115_200, 0..=5, |p| {
        told.push(match p {
            Progress::Probing(a) => format!("probing {a}"),
            Progress::Found(f) => format!("found {}", f.address),
        })
    })
    .await
    .unwrap();
    task.abort();
    // Each reader is told as soon as it answered, before the next address is probed.
    assert_eq!(
        told,
        [
            "probing 0",
            "probing 1",
            "found 1",
            "probing 2",
            "probing 3",
            "probing 4",
            "found 4",
            "probing 5"
        ]
    );
    let addresses: Vec<u8> = found.iter().map(|f| f.address).collect();
    assert_eq!(addresses, vec![1, 4]);
    let line = found[0].to_string();
    assert!(line.contains("vendor 0A4448"), "{line}");
    assert!(line.contains("rx buffer 256"), "{line}");
    assert!(found.iter().all(|f| f.capabilities.is_some()));
}

/// Readers at addresses 1 and 4 of a simulated bus.
fn two_readers() -> SimBus {
    SimBus::start(vec![
        ReaderOptions::new(1, Mode::Plain),
        ReaderOptions::new(4, Mode::Stored),
    ])
}

/// `doorhub scan` of addresses 0 to 5 on `bus`, with the given stdout and stderr.
fn scan_command(bus: &SimBus, stdout: Stdio, stderr: Stdio) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_doorhub"));
    cmd.args(["scan", "--port", &bus.path, "--baud", "115200"])
        .args(["--addresses", "0-5"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    cmd
}

const FINDINGS: [&str; 3] = [
    "address   1  vendor 0A4448",
    "address   4  vendor 0A4448",
    "2 reader(s) found",
];

#[tokio::test]
async fn scan_without_a_terminal_prints_the_findings_and_no_progress() {
    let bus = two_readers();
    let out = scan_command(&bus, Stdio::piped(), Stdio::piped())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (line, want) in lines.iter().zip(FINDINGS) {
        assert!(
            line.starts_with(want),
            "{line:?} should start with {want:?}"
        );
    }
    // One line saying what is scanned; no line (or carriage return) per address.
    assert_eq!(
        stderr,
        format!(
            "scanning {} at 115200 baud, addresses 0 to 5...\n",
            bus.path
        )
    );
}

#[tokio::test]
async fn scan_on_a_terminal_shows_the_address_and_what_answered_so_far() {
    let bus = two_readers();
    // stderr is a terminal: the slave side of a pty pair, read here through its master.
    let (mut master, slave) = SerialStream::pair().unwrap();
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(slave.name().unwrap())
        .unwrap();
    drop(slave);
    let child = scan_command(&bus, Stdio::piped(), Stdio::from(tty))
        .spawn()
        .unwrap();
    // The child holds the only other end now: the master reads until it exits.
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = master.read(&mut buf).await {
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the scan ends");
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&seen);
    for want in [
        "\r\x1b[2Kprobing address 0/5, found 0",
        "\r\x1b[2Kprobing address 2/5, found 1: 1 (0A4448)",
        "\r\x1b[2Kprobing address 5/5, found 2: 1 (0A4448), 4 (0A4448)",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in {stderr:?}");
    }
    // The line is erased at the end, so the findings (on stdout) start on a clean line.
    assert!(stderr.ends_with("\r\x1b[2K"), "{stderr:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
}

#[tokio::test]
async fn scan_with_a_closed_stdout_ends_normally() {
    let bus = two_readers();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    // Spawned, not `output()`: that would replace stdout with a pipe of its own.
    let out = scan_command(&bus, Stdio::from(writer), Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

//! Where the real binary's log goes. When its stderr is the stream `JOURNAL_STREAM` names (as
//! under systemd), it speaks journald's native protocol, one datagram a record, with `MESSAGE`
//! (the message, then the record's and its spans' fields as `key=value` text), `PRIORITY`,
//! `SYSLOG_IDENTIFIER` and each of those fields as a journal field of its own (`DOOR`, `BUS`).
//! Otherwise, or when the journal can't be reached, it writes text to stderr.
//!
//! The daemon always sends to /run/systemd/journal/socket, so the binary runs in a private
//! mount namespace whose /run is a directory of this test's: "the journal" is a datagram socket
//! the test binds there, and the machine's own journal, if any, never sees these records. Making
//! the namespace needs root (as CI runs) or, failing that, unprivileged user namespaces.

mod common;

use std::ffi::CString;
use std::fs::File;
use std::io::BufRead;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::hub::{Hub, WAIT, signal, wait_exit};
use doorhub::sim::Action;
use tempfile::TempDir;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

/// One journal record: its fields in the order sent.
#[derive(Debug)]
struct Record(Vec<(String, String)>);

impl Record {
    /// The first value of field `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A native-protocol datagram: per field, `NAME=value\n`, or `NAME\n`, the value's length
    /// as a little-endian u64, the value and `\n` (values that may hold a newline).
    fn parse(mut d: &[u8]) -> Record {
        let mut fields = Vec::new();
        while !d.is_empty() {
            let end = d
                .iter()
                .position(|&b| b == b'\n')
                .expect("a field ends in \\n");
            let line = String::from_utf8(d[..end].to_vec()).unwrap();
            d = &d[end + 1..];
            if let Some((name, value)) = line.split_once('=') {
                fields.push((name.to_owned(), value.to_owned()));
                continue;
            }
            let len = u64::from_le_bytes(d[..8].try_into().unwrap()) as usize;
            let value = String::from_utf8(d[8..8 + len].to_vec()).unwrap();
            assert_eq!(d[8 + len], b'\n', "value of {line} ends in \\n");
            d = &d[8 + len + 1..];
            fields.push((line, value));
        }
        Record(fields)
    }
}

/// The test's stand-in for journald: `systemd/journal/socket` in a directory that becomes the
/// daemon's /run, or no socket at all there.
struct Journal {
    run: TempDir,
    socket: Option<UnixDatagram>,
    records: Vec<Record>,
}

impl Journal {
    fn listening() -> Journal {
        let run = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(run.path().join("systemd/journal")).unwrap();
        let socket = UnixDatagram::bind(run.path().join("systemd/journal/socket")).unwrap();
        Journal {
            run,
            socket: Some(socket),
            records: Vec::new(),
        }
    }

    fn absent() -> Journal {
        Journal {
            run: tempfile::tempdir().unwrap(),
            socket: None,
            records: Vec::new(),
        }
    }

    /// Waits for a record matching `pred`; earlier ones are kept for [`Journal::all`].
    async fn wait_for(&mut self, mut pred: impl FnMut(&Record) -> bool) -> &Record {
        let socket = self.socket.as_ref().expect("a listening journal");
        let end = Instant::now() + WAIT;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Ok(got) = timeout_at(end, socket.recv(&mut buf)).await else {
                panic!(
                    "no matching record within {WAIT:?}; got {:#?}",
                    self.records
                );
            };
            let n = got.unwrap();
            // The daemon's empty probe datagram, sent at startup, carries no record.
            if n == 0 {
                continue;
            }
            self.records.push(Record::parse(&buf[..n]));
            if pred(self.records.last().unwrap()) {
                return self.records.last().unwrap();
            }
        }
    }

    /// Every record received, those still queued included (call once the daemon has exited).
    fn all(&mut self) -> &[Record] {
        if let Some(socket) = &self.socket {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = socket.try_recv(&mut buf) {
                if n > 0 {
                    self.records.push(Record::parse(&buf[..n]));
                }
            }
        }
        &self.records
    }
}

/// What `JOURNAL_STREAM` says about the daemon's stderr.
enum Stream {
    /// The device and inode of its stderr, as systemd sets it.
    Stderr,
    /// Those of another file, as in a shell that inherited the variable.
    Other,
    /// Not set.
    Unset,
}

/// The real binary running a hub's config with its /run replaced, its stderr a pipe read line
/// by line.
struct Daemon {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn spawn(hub: &Hub, journal: &Journal, stream: Stream, rust_log: Option<&str>) -> Daemon {
        let (reader, writer) = std::io::pipe().unwrap();
        let writer = File::from(std::os::fd::OwnedFd::from(writer));
        let (dev, ino) = match stream {
            Stream::Stderr => {
                let m = writer.metadata().unwrap();
                (m.dev(), m.ino())
            }
            _ => {
                let m = std::fs::metadata(&hub.config_path).unwrap();
                (m.dev(), m.ino())
            }
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_doorhub"));
        cmd.args(["run", "--config"])
            .arg(&hub.config_path)
            .env_remove("JOURNAL_STREAM")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(writer);
        if !matches!(stream, Stream::Unset) {
            cmd.env("JOURNAL_STREAM", format!("{dev}:{ino}"));
        }
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        with_run(&mut cmd, journal.run.path());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot give the daemon a /run of its own: {e}"));
        // The parent's copy of the pipe's write end goes with `cmd`, so the reader below sees
        // the end of the stream once the daemon has exited.
        drop(cmd);
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(reader).lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line on stderr containing `text`.
    async fn wait_line(&mut self, text: &str) -> String {
        let end = Instant::now() + WAIT;
        loop {
            match timeout_at(end, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Ok(None) => panic!("stderr closed before {text:?}; got {:#?}", self.seen),
                Err(_) => panic!(
                    "no {text:?} on stderr within {WAIT:?}; got {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Stops the daemon as systemd does (SIGTERM), checks it exits cleanly, and returns
    /// everything it wrote to stderr.
    async fn stop(mut self) -> Vec<String> {
        signal(&self.child, "TERM");
        assert_eq!(wait_exit(&mut self.child, WAIT).await, Some(0));
        let end = Instant::now() + WAIT;
        while let Some(line) = timeout_at(end, self.lines.recv())
            .await
            .expect("stderr closes when the daemon exits")
        {
            self.seen.push(line);
        }
        self.seen
    }
}

/// Runs `cmd` in a mount namespace of its own where `run` is mounted over /run.
fn with_run(cmd: &mut Command, run: &Path) {
    let run = CString::new(run.as_os_str().as_bytes()).unwrap();
    let mount_point = c"/run";
    let root = c"/";
    // SAFETY: between fork and exec the closure only makes system calls on memory prepared
    // before the fork (no allocation, no lock), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // Root has the capability; another user gets it in a user namespace of its own.
            if libc::unshare(libc::CLONE_NEWNS) != 0
                && libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Private first, so the bind mount stays in this namespace even where / is shared.
            let null = std::ptr::null();
            if libc::mount(
                null,
                root.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
                || libc::mount(
                    run.as_ptr(),
                    mount_point.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A hub whose door `lobby` (stored mode, address 0) is a simulated reader on bus `rs485-a`,
/// without any broker, plus `extra` TOML.
fn hub(extra: &str) -> Hub {
    let unused = common::free_port();
    Hub::with_mqtt(
        &format!("url = \"mqtt://127.0.0.1:{unused}\"\nallow_plaintext = true\n"),
        &[("lobby", "stored")],
        extra,
    )
}

#[tokio::test]
async fn under_systemd_each_record_goes_to_the_journal_with_its_door_and_bus() {
    let hub = hub("");
    let mut journal = Journal::listening();
    let daemon = Daemon::spawn(&hub, &journal, Stream::Stderr, None);

    let online = journal
        .wait_for(|r| {
            r.get("MESSAGE")
                .is_some_and(|m| m.starts_with("reader online "))
        })
        .await;
    // journalctl's short view shows MESSAGE alone: it names the door and the bus.
    let message = online.get("MESSAGE").unwrap();
    assert!(
        message.starts_with("reader online door=lobby address=0 "),
        "{online:#?}"
    );
    assert!(message.ends_with(" bus=rs485-a"), "{online:#?}");
    assert_eq!(online.get("PRIORITY"), Some("6"), "{online:#?}");
    assert_eq!(online.get("DOOR"), Some("lobby"), "{online:#?}");
    assert_eq!(online.get("ADDRESS"), Some("0"), "{online:#?}");
    assert_eq!(online.get("BUS"), Some("rs485-a"), "{online:#?}");
    assert_eq!(online.get("SPAN_NAME"), Some("bus"), "{online:#?}");
    assert_eq!(online.get("SYSLOG_IDENTIFIER"), Some("doorhub"));

    let stderr = daemon.stop().await;
    assert!(stderr.is_empty(), "the log went to stderr too: {stderr:#?}");
    for r in journal.all() {
        assert!(r.get("MESSAGE").is_some(), "{r:#?}");
        assert_eq!(r.get("SYSLOG_IDENTIFIER"), Some("doorhub"), "{r:#?}");
        // The default level, info: nothing at debug (7).
        assert!(matches!(r.get("PRIORITY"), Some("3" | "4" | "6")), "{r:#?}");
    }
}

#[tokio::test]
async fn at_level_warn_a_warning_still_names_its_door_and_bus() {
    let mut hub = hub("[log]\nlevel = \"warn\"\n");
    let mut journal = Journal::listening();
    let daemon = Daemon::spawn(&hub, &journal, Stream::Stderr, None);

    // The hub sets the reader's clock once it is online; then the reader falls silent.
    let sim = hub.sim.as_mut().unwrap();
    sim.wait_for(WAIT, |e| e["event"] == "time").await;
    sim.act(0, Action::Silent(true)).await;
    let offline = journal
        .wait_for(|r| {
            r.get("MESSAGE")
                .is_some_and(|m| m.starts_with("reader offline "))
        })
        .await;
    assert_eq!(
        offline.get("MESSAGE"),
        Some("reader offline door=lobby address=0 bus=rs485-a"),
        "{offline:#?}"
    );
    assert_eq!(offline.get("PRIORITY"), Some("4"), "{offline:#?}");
    assert_eq!(offline.get("DOOR"), Some("lobby"), "{offline:#?}");
    assert_eq!(offline.get("BUS"), Some("rs485-a"), "{offline:#?}");

    daemon.stop().await;
    for r in journal.all() {
        assert!(
            matches!(r.get("PRIORITY"), Some("3" | "4")),
            "below the level: {r:#?}"
        );
    }
}

#[tokio::test]
async fn without_journal_stream_the_log_goes_to_stderr_and_rust_log_wins() {
    let hub = hub("");
    let mut journal = Journal::listening();
    let mut daemon = Daemon::spawn(&hub, &journal, Stream::Unset, Some("doorhub=debug"));

    let online = daemon.wait_line("reader online").await;
    assert!(online.contains(" INFO "), "{online}");
    assert!(online.contains("bus{bus=rs485-a}"), "{online}");
    assert!(online.contains("door=lobby"), "{online}");
    // RUST_LOG's debug, over the config's default of info.
    daemon.wait_line(" DEBUG ").await;

    daemon.stop().await;
    assert!(journal.all().is_empty(), "{:#?}", journal.all());
}

#[tokio::test]
async fn an_inherited_journal_stream_that_is_not_stderr_leaves_the_log_on_stderr() {
    let hub = hub("");
    let mut journal = Journal::listening();
    let mut daemon = Daemon::spawn(&hub, &journal, Stream::Other, None);

    let online = daemon.wait_line("reader online").await;
    assert!(online.contains("door=lobby"), "{online}");

    daemon.stop().await;
    assert!(journal.all().is_empty(), "{:#?}", journal.all());
}

#[tokio::test]
async fn an_unreachable_journal_falls_back_to_stderr_with_one_warning() {
    let hub = hub("");
    let journal = Journal::absent();
    let mut daemon = Daemon::spawn(&hub, &journal, Stream::Stderr, None);

    let warning = daemon.wait_line("cannot reach the journal").await;
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(warning.contains("logging to stderr"), "{warning}");
    daemon.wait_line("reader online").await;

    let stderr = daemon.stop().await;
    let warnings = stderr
        .iter()
        .filter(|l| l.contains("cannot reach the journal"))
        .count();
    assert_eq!(warnings, 1, "{stderr:#?}");
}

#[tokio::test]
async fn an_invalid_rust_log_is_named_and_the_configured_level_used() {
    let hub = hub("");
    let journal = Journal::absent();
    let mut daemon = Daemon::spawn(&hub, &journal, Stream::Unset, Some("doorhub=loud"));

    let warning = daemon.wait_line("RUST_LOG").await;
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(
        warning.contains("\"doorhub=loud\" is not a valid filter"),
        "{warning}"
    );
    daemon.wait_line("reader online").await;

    let stderr = daemon.stop().await;
    assert!(!stderr.iter().any(|l| l.contains(" DEBUG ")), "{stderr:#?}");
}

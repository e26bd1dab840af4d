//! The `doorhub-sim` binary against an independent OSDP implementation: a libosdp 3.2.9
//! ControlPanel (tests/interop/cp_drive.py) brings the simulated readers online over a pty,
//! polls them, sends osdp_OUT and osdp_LED, and receives their card reads; in stored mode it also
//! sends MFG QUERY and receives MFGREP STATE and ACCESS.
//!
//! The Python interpreter is `$DOORHUB_INTEROP_PYTHON`, or the venv `scripts/interop-venv`
//! creates (it prints the path).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

/// The whole exchange's budget; each test stays well under 15 s.
const BUDGET: Duration = Duration::from_secs(14);

fn python() -> String {
    if let Ok(p) = std::env::var("DOORHUB_INTEROP_PYTHON") {
        return p;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(format!("{root}/scripts/interop-venv"))
        .output()
        .expect("run scripts/interop-venv");
    assert!(out.status.success(), "scripts/interop-venv failed");
    String::from_utf8(out.stdout)
        .expect("utf-8 path")
        .trim()
        .to_owned()
}

/// A child process whose stdout lines are JSON objects, read by a task into a channel.
struct Proc {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Every line so far, for failure messages.
    seen: Vec<Value>,
    /// Lines not yet taken by a `wait`, oldest first: events of different readers interleave.
    backlog: Vec<Value>,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = r.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("{name} (not JSON): {line}"),
                }
            }
        });
        Proc {
            name,
            child,
            stdin,
            lines,
            seen: Vec::new(),
            backlog: Vec::new(),
        }
    }

    /// The first line not yet taken with `"event": kind` passing `pred`, waiting for it until
    /// `deadline`; fails on an `error` event from the Python side.
    async fn wait(
        &mut self,
        deadline: Instant,
        kind: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let matches = |v: &Value| v["event"] == kind && pred(v);
        if let Some(i) = self.backlog.iter().position(matches) {
            return self.backlog.remove(i);
        }
        loop {
            let v = timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: no {kind} event in time; saw {:?}",
                        self.name, self.seen
                    )
                })
                .unwrap_or_else(|| {
                    panic!("{}: ended before {kind}; saw {:?}", self.name, self.seen)
                });
            eprintln!("{}: {v}", self.name);
            self.seen.push(v.clone());
            if self.name == "cp" && v["event"] == "error" {
                panic!("cp failed: {v}");
            }
            if matches(&v) {
                return v;
            }
            self.backlog.push(v);
        }
    }

    async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write stdin");
        stdin.flush().await.expect("flush stdin");
    }
}

/// Starts the CP script and the simulator on its pty, and lets the CP go.
async fn start(addresses: &str, mode: &str, deadline: Instant) -> (Proc, Proc) {
    let script: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "interop",
        "cp_drive.py",
    ]
    .iter()
    .collect();
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(["--addresses", addresses, "--mode", mode]);
    let mut cp = Proc::spawn("cp", cmd);
    let pty = cp.wait(deadline, "pty", |_| true).await;
    let path = pty["path"].as_str().expect("pty path").to_owned();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_doorhub-sim"));
    cmd.args([
        "reader",
        "--port",
        &path,
        "--address",
        addresses,
        "--mode",
        mode,
    ]);
    cmd.env("RUST_LOG", "warn");
    let mut sim = Proc::spawn("sim", cmd);
    sim.wait(deadline, "ready", |_| true).await;
    cp.send_line("go").await;
    (cp, sim)
}

/// Waits for both processes to finish what they print, then checks the CP exited cleanly.
async fn finish(mut cp: Proc, deadline: Instant) {
    cp.wait(deadline, "done", |_| true).await;
    let status = timeout_at(deadline, cp.child.wait())
        .await
        .expect("cp exits in time")
        .expect("cp status");
    assert!(status.success(), "cp exit status {status}");
}

#[tokio::test]
async fn libosdp_cp_drives_plain_readers_on_one_line() {
    let deadline = Instant::now() + BUDGET;
    let (mut cp, mut sim) = start("101,102", "plain", deadline).await;

    let mut online = BTreeSet::new();
    while online.len() < 2 {
        let v = cp.wait(deadline, "online", |_| true).await;
        assert_eq!(
            v["vendor_code"], 0x48440A,
            "PDID vendor code as libosdp reads it"
        );
        assert_eq!(v["rx_buffer"], 256, "PDCAP receive buffer");
        let a = v["address"].as_u64().expect("address");
        assert_eq!(v["serial"].as_u64().map(|s| s & 0xFF), Some(a));
        online.insert(a);
    }
    // The CP brought both up with ID and CAP.
    for a in [101, 102] {
        sim.wait(deadline, "id", |v| v["address"] == a).await;
        sim.wait(deadline, "cap", |v| v["address"] == a).await;
    }
    cp.wait(deadline, "commands_sent", |_| true).await;
    for a in [101u64, 102] {
        let out = sim.wait(deadline, "out", |v| v["address"] == a).await;
        assert_eq!(
            (out["control"].clone(), out["timer_100ms"].clone()),
            (5.into(), 30.into())
        );
        let led = sim.wait(deadline, "led", |v| v["address"] == a).await;
        assert_eq!(led["temporary"]["on_color"], 2, "green");
    }
    sim.send_line("@101 card 26 bd88eb80").await;
    sim.send_line("@102 card 8 a5").await;
    let c = cp.wait(deadline, "card", |v| v["address"] == 101).await;
    assert_eq!(
        (c["length"].clone(), c["data"].clone()),
        (26.into(), "bd88eb80".into())
    );
    let c = cp.wait(deadline, "card", |v| v["address"] == 102).await;
    assert_eq!(
        (c["length"].clone(), c["data"].clone()),
        (8.into(), "a5".into())
    );
    finish(cp, deadline).await;
}

#[tokio::test]
async fn libosdp_cp_gets_mfgrep_from_a_stored_reader() {
    let deadline = Instant::now() + BUDGET;
    let (mut cp, mut sim) = start("7", "stored", deadline).await;
    cp.wait(deadline, "online", |_| true).await;
    sim.wait(deadline, "out", |_| true).await;
    // QUERY arrived: STATE is queued for the next POLL.
    sim.wait(deadline, "state", |v| v["cause"] == "query").await;
    sim.send_line("card 26 bd88eb80").await;
    let state = cp
        .wait(deadline, "mfgrep", |v| {
            v["data"].as_str().is_some_and(|d| d.starts_with("81"))
        })
        .await;
    // Vendor code as libosdp's integer; STATE of an empty table: version 0, count 0, digest 0,
    // capacity unknown.
    assert_eq!(state["vendor_code"], 0x48440A);
    assert_eq!(
        state["data"],
        format!(
            "81{}{}{}ffffffff",
            "00".repeat(8),
            "00".repeat(4),
            "00".repeat(8)
        )
    );
    let access = cp
        .wait(deadline, "mfgrep", |v| {
            v["data"].as_str().is_some_and(|d| d.starts_with("90"))
        })
        .await;
    // Denied, unknown card, 26 bits, the card's data.
    assert_eq!(access["data"], "9000011abd88eb80");
    finish(cp, deadline).await;
}

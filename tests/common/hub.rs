//! Starting doorhub for a test: a config file in a temp dir, the daemon in-process or as the
//! real binary, and snapshot payloads with their expected digests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use doorhub::config::Config;
use doorhub::daemon::Daemon;
use doorhub::snapshot::Credential;
use serde_json::json;

use super::{Broker, Msg, Subscriber};

/// The hub id every test uses.
pub const HUB: &str = "hub-1";
/// How long a test waits for the daemon to react.
pub const WAIT: Duration = Duration::from_secs(10);

/// A hub's config and data directory, in a temp dir, and the simulated readers of its doors
/// when the test did not wire its own bus.
pub struct Hub {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub sim: Option<super::simbus::SimBus>,
}

impl Hub {
    /// A plaintext hub config for `broker`, with `doors` as `(id, mode)`, plus extra TOML.
    pub fn new(broker: &Broker, doors: &[(&str, &str)], extra: &str) -> Hub {
        Hub::with_mqtt(&plaintext(broker), doors, extra)
    }

    /// A hub for `broker` whose bus `rs485-a` is `port` at `baud`, with `doors` as
    /// `(id, mode, address)`, plus extra TOML.
    pub fn with_bus(
        broker: &Broker,
        port: &str,
        baud: u32,
        doors: &[(&str, &str, u8)],
        extra: &str,
    ) -> Hub {
        let doors: Vec<_> = doors
            .iter()
            .map(|(id, m, a)| (*id, *m, "rs485-a", *a))
            .collect();
        Hub::with_buses(broker, &[("rs485-a", port, baud)], "", &doors, extra)
    }

    /// A hub for `broker` with `buses` as `(name, port, baud)`, `bus_keys` added to every bus,
    /// and `doors` as `(id, mode, bus, address)`, plus extra TOML.
    pub fn with_buses(
        broker: &Broker,
        buses: &[(&str, &str, u32)],
        bus_keys: &str,
        doors: &[(&str, &str, &str, u8)],
        extra: &str,
    ) -> Hub {
        Hub::build(&plaintext(broker), &body(buses, bus_keys, doors, extra))
    }

    /// A plaintext hub config for `broker` whose bus has no readers (its port cannot be opened):
    /// for measuring the cloud side alone. Doors report `offline`, `applied` as usual.
    pub fn without_readers(broker: &Broker, doors: &[(&str, &str)], extra: &str) -> Hub {
        let buses = [("rs485-a", "/dev/null", 9600)];
        Hub::build(
            &plaintext(broker),
            &body(&buses, "", &on_one_bus(doors), extra),
        )
    }

    /// A hub config with the given `[mqtt]` body; its doors' readers are simulated on one bus,
    /// each at the address of its position (a `hub` door gets a plain reader).
    pub fn with_mqtt(mqtt: &str, doors: &[(&str, &str)], extra: &str) -> Hub {
        use doorhub::sim::{Mode, ReaderOptions};
        let readers = doors
            .iter()
            .enumerate()
            .map(|(i, (_, mode))| {
                let mode = if *mode == "hub" {
                    Mode::Plain
                } else {
                    Mode::Stored
                };
                ReaderOptions::new(i as u8, mode)
            })
            .collect();
        let sim = super::simbus::SimBus::start(readers);
        let buses = [("rs485-a", sim.path.as_str(), 115_200)];
        let mut hub = Hub::build(mqtt, &body(&buses, "", &on_one_bus(doors), extra));
        hub.sim = Some(sim);
        hub
    }

    fn build(mqtt: &str, body: &str) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = format!(
            "[hub]\nid = \"{HUB}\"\ndata_dir = \"{}\"\nstatus_socket = \"{}\"\n\n[mqtt]\n{mqtt}\n",
            dir.path().join("data").display(),
            dir.path().join("status.sock").display()
        );
        if !body.contains("[health]") {
            toml.push_str("[health]\ninterval_s = 60\n\n");
        }
        toml.push_str(body);
        let config_path = dir.path().join("doorhub.toml");
        std::fs::write(&config_path, toml).unwrap();
        Hub {
            dir,
            config_path,
            sim: None,
        }
    }

    /// The loaded config.
    pub fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap_or_else(|e| panic!("test config: {e}"))
    }

    /// The store's directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the daemon in this process, its log captured by the test.
    pub fn start(&self) -> Daemon {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "doorhub=debug".into()),
            )
            .with_test_writer()
            .try_init();
        Daemon::start(self.config()).unwrap_or_else(|e| panic!("daemon start: {e:#}"))
    }

    /// Starts the real binary, logging to a file in the temp dir.
    pub fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("doorhub.log"))
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_doorhub"))
            .args(["run", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "doorhub=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Rewrites the config file: `edit` gets its text and returns the new one.
    pub fn rewrite(&self, edit: impl FnOnce(&str) -> String) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        std::fs::write(&self.config_path, edit(&text)).unwrap();
    }

    /// What the binary logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("doorhub.log")).unwrap_or_default()
    }
}

/// The `[mqtt]` body for `broker` without TLS.
fn plaintext(broker: &Broker) -> String {
    format!("url = \"{}\"\nallow_plaintext = true\n", broker.url())
}

/// `doors` as `(id, mode)` on bus `rs485-a`, each at the address of its position.
fn on_one_bus<'a>(doors: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str, &'static str, u8)> {
    doors
        .iter()
        .enumerate()
        .map(|(i, (id, mode))| (*id, *mode, "rs485-a", i as u8))
        .collect()
}

/// The `[[bus]]` and `[[door]]` tables of a config, then `extra`.
fn body(
    buses: &[(&str, &str, u32)],
    bus_keys: &str,
    doors: &[(&str, &str, &str, u8)],
    extra: &str,
) -> String {
    let mut body = String::new();
    for (name, port, baud) in buses {
        body.push_str(&format!(
            "[[bus]]\nname = \"{name}\"\nport = \"{port}\"\nbaud = {baud}\n{bus_keys}\n"
        ));
    }
    for (id, mode, bus, address) in doors {
        body.push_str(&format!(
            "[[door]]\nid = \"{id}\"\nbus = \"{bus}\"\naddress = {address}\nmode = \"{mode}\"\n\n"
        ));
    }
    body.push_str(extra);
    body
}

/// Sends `signal` (e.g. "KILL", "TERM") to a child process.
pub fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} failed");
}

/// Waits for a child to exit, up to `deadline`; returns its exit code.
pub async fn wait_exit(child: &mut Child, deadline: Duration) -> Option<i32> {
    let end = std::time::Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            std::time::Instant::now() < end,
            "process did not exit within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `doorhub/v1/hub-1/...`
pub fn topic(rest: &str) -> String {
    format!("doorhub/v1/{HUB}/{rest}")
}

/// `n` distinct 26-bit credentials, ids prefixed by `tag`.
pub fn credentials(tag: &str, n: usize) -> Vec<Credential> {
    (0..n)
        .map(|i| {
            let v = (i as u32 + 1) << 6; // 26 bits, left-justified in 4 bytes
            Credential {
                id: format!("{tag}-{i:06}"),
                bits: 26,
                data: v.to_be_bytes().to_vec(),
                not_before: 0,
                not_after: 0,
            }
        })
        .collect()
}

/// The digest the contract defines, computed here independently of the daemon's code.
pub fn digest(set: &[Credential]) -> String {
    use sha2::Digest;
    let mut acc = [0u8; 8];
    for c in set {
        let mut entry = vec![c.bits];
        entry.extend_from_slice(&c.data);
        entry.extend_from_slice(&c.not_before.to_le_bytes());
        entry.extend_from_slice(&c.not_after.to_le_bytes());
        let h = sha2::Sha256::digest(&entry);
        for (a, b) in acc.iter_mut().zip(&h[..8]) {
            *a ^= b;
        }
    }
    let d = hex::encode(acc);
    assert_eq!(d.len(), 16);
    d
}

/// A snapshot's parts as the cloud publishes them.
pub fn parts(version: u64, set: &[Credential], parts: usize) -> Vec<String> {
    let per = set.len().div_ceil(parts).max(1);
    (0..parts)
        .map(|p| {
            let chunk: Vec<_> = set
                .iter()
                .skip(p * per)
                .take(per)
                .map(|c| json!({"id": c.id, "bits": c.bits, "data": hex::encode(&c.data)}))
                .collect();
            json!({"version": version, "part": p, "parts": parts, "credentials": chunk}).to_string()
        })
        .collect()
}

/// Publishes a whole snapshot (retained, as the cloud does).
pub async fn publish_snapshot(
    sub: &mut Subscriber,
    door: &str,
    version: u64,
    set: &[Credential],
    n: usize,
) {
    for (p, payload) in parts(version, set, n).into_iter().enumerate() {
        sub.publish(&topic(&format!("doors/{door}/desired/{p}")), payload, true)
            .await;
    }
}

/// Waits for a reported message of `door` matching `pred`.
pub async fn reported(
    sub: &mut Subscriber,
    door: &str,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t = topic(&format!("doors/{door}/reported"));
    sub.wait_for(WAIT, |m: &Msg| m.topic == t && pred(&m.json()))
        .await
        .json()
}

/// Waits for a health message matching `pred`.
pub async fn health(
    sub: &mut Subscriber,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t = topic("health");
    sub.wait_for(WAIT, |m: &Msg| m.topic == t && pred(&m.json()))
        .await
        .json()
}

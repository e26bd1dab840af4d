//! The demo's MQTT broker: mosquitto when it is installed, else rumqttd embedded in this
//! process. `DOORHUB_DEMO_BROKER=embedded|mosquitto|auto` (default `auto`) forces the choice.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a broker may take to listen.
const LISTEN: Duration = Duration::from_secs(5);
/// Tries with a new free port when the one picked was taken in between.
const TRIES: usize = 3;

/// A running broker on 127.0.0.1. Dropping it stops mosquitto; the embedded broker has no
/// shutdown: it ends with the process.
pub struct Broker {
    port: u16,
    kind: Kind,
}

enum Kind {
    Mosquitto { child: Child, binary: PathBuf },
    Embedded,
}

impl Broker {
    /// Starts the broker the environment asks for, with its files in `dir`.
    pub fn start(dir: &Path) -> Result<Broker, String> {
        let choice = std::env::var("DOORHUB_DEMO_BROKER").unwrap_or_default();
        match choice.as_str() {
            "" | "auto" => match find_mosquitto() {
                Some(binary) => mosquitto(&binary, dir),
                None => embedded(),
            },
            "mosquitto" => {
                let binary = find_mosquitto().ok_or(
                    "DOORHUB_DEMO_BROKER=mosquitto, but there is no mosquitto on PATH \
                     or at /usr/sbin/mosquitto",
                )?;
                mosquitto(&binary, dir)
            }
            "embedded" => embedded(),
            other => Err(format!(
                "DOORHUB_DEMO_BROKER={other:?}: expected auto, mosquitto or embedded"
            )),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Which broker, in a word.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Mosquitto { .. } => "mosquitto",
            Kind::Embedded => "embedded rumqttd",
        }
    }

    /// Which broker, and why.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Mosquitto { binary, .. } => format!("mosquitto ({})", binary.display()),
            Kind::Embedded => {
                "embedded rumqttd (mosquitto not found or DOORHUB_DEMO_BROKER=embedded)".to_owned()
            }
        }
    }

    /// Stops it, saying so.
    pub fn stop(self) {
        match self.kind {
            Kind::Mosquitto { .. } => println!("[broker] mosquitto stopped"),
            Kind::Embedded => println!("[broker] the embedded broker ends with the demo"),
        }
        // Drop kills mosquitto.
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Kind::Mosquitto { child, .. } = &mut self.kind {
            // Already gone is fine: either way it no longer runs.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// mosquitto on PATH, else Debian's /usr/sbin/mosquitto (not on a normal user's PATH).
fn find_mosquitto() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("mosquitto"))
            .find(|p| is_executable(p))
    });
    on_path.or_else(|| {
        let debian = PathBuf::from("/usr/sbin/mosquitto");
        is_executable(&debian).then_some(debian)
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// Whether this process runs as root (mosquitto then needs `user root` to keep running as
/// root rather than switch to a `mosquitto` user that may not exist).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free loopback port: {e}"))
}

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn mosquitto(binary: &Path, dir: &Path) -> Result<Broker, String> {
    let mut last = String::new();
    for _ in 0..TRIES {
        let port = free_port()?;
        let conf = dir.join("mosquitto.conf");
        let log = dir.join("mosquitto.log");
        let mut text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest stderr\n"
        );
        if running_as_root() {
            text.push_str("user root\n");
        }
        std::fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let log_file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut broker = Broker {
            port,
            kind: Kind::Mosquitto {
                child,
                binary: binary.to_path_buf(),
            },
        };
        let end = Instant::now() + LISTEN;
        loop {
            if listening(port) {
                return Ok(broker);
            }
            let exited = match &mut broker.kind {
                Kind::Mosquitto { child, .. } => child.try_wait().ok().flatten(),
                Kind::Embedded => None,
            };
            if exited.is_some() || Instant::now() >= end {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                last = format!(
                    "mosquitto did not listen on 127.0.0.1:{port} ({}); its log:\n{}",
                    exited.map_or_else(|| format!("not within {LISTEN:?}"), |s| s.to_string()),
                    text.trim_end()
                );
                break; // Drop kills it; try another port.
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err(last)
}

fn embedded() -> Result<Broker, String> {
    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
    let mut last = String::new();
    for _ in 0..TRIES {
        let port = free_port()?;
        let server = ServerSettings {
            name: "v4-loopback".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: None,
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: 1 << 20,
                max_inflight_count: 100,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let config = Config {
            router: RouterConfig {
                max_connections: 64,
                max_outgoing_packet_count: 200,
                max_segment_size: 16 << 20,
                max_segment_count: 10,
                ..RouterConfig::default()
            },
            v4: Some(HashMap::from([("1".to_owned(), server)])),
            ..Config::default()
        };
        // `Broker::start` serves forever on threads of its own; it returns only on failure.
        let (failed_tx, failed) = mpsc::channel();
        std::thread::Builder::new()
            .name("rumqttd".to_owned())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    let _ = failed_tx.send(e.to_string());
                }
            })
            .map_err(|e| format!("cannot start the embedded broker's thread: {e}"))?;
        let end = Instant::now() + LISTEN;
        loop {
            if listening(port) {
                return Ok(Broker {
                    port,
                    kind: Kind::Embedded,
                });
            }
            if let Ok(e) = failed.try_recv() {
                last = format!("the embedded broker failed on 127.0.0.1:{port}: {e}");
                break;
            }
            if Instant::now() >= end {
                // It can't be stopped; a second one on another port would run beside it.
                return Err(format!(
                    "the embedded broker did not listen on 127.0.0.1:{port} within {LISTEN:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err(last)
}

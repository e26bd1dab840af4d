//! The configuration file (`../shared/spec/config.md`, restated in `docs/config.md`).
//!
//! Layers, later wins: the built-in defaults (`config/defaults.toml`, embedded), the TOML file,
//! then `DOORHUB__SECTION__KEY` environment variables. Every problem is collected and reported at
//! once, each naming its key and, where known, the file and line.
//!
//! Relative paths in the configuration (`data_dir`, `ca_file`, `cert_file`, `key_file`,
//! `password_file`, `scbk_file`, `status_socket`, also when set from the environment) are taken
//! from the directory of the configuration file, so a folder with its file and its keys can be
//! moved as a whole.
//! `bus.port` is a device name and is left as written.

#![warn(missing_docs)]

mod error;
mod load;
mod locate;
mod schema;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use error::{ConfigError, ConfigErrors};

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[hub]`
    pub hub: HubConfig,
    /// `[mqtt]`
    pub mqtt: MqttConfig,
    /// `[health]`
    pub health: HealthConfig,
    /// `[events]`
    pub events: EventsConfig,
    /// `[limits]`
    pub limits: LimitsConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[[bus]]`
    #[serde(default)]
    pub bus: Vec<BusConfig>,
    /// `[[door]]`
    #[serde(default)]
    pub door: Vec<DoorConfig>,
}

/// A configuration that passed every check, with the warnings found on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The configuration.
    pub config: Config,
    /// What `run` copes with, such as a serial port that is not plugged in yet; each names its
    /// key like an error does.
    pub warnings: Vec<ConfigError>,
}

/// `[hub]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The hub's id, used in every topic.
    pub id: String,
    /// Where the store lives; created 0700 if missing.
    pub data_dir: PathBuf,
    /// The UNIX socket `doorhub status` reads (an addition to the v1 contract).
    pub status_socket: PathBuf,
}

/// `[mqtt]`
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtts://host:port` or, with `allow_plaintext`, `mqtt://host:port`.
    pub url: String,
    /// Defaults to `hub.id` (filled in by validation).
    #[serde(default)]
    pub client_id: String,
    /// CA bundle; `None` means the system's root certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client key for mutual TLS.
    pub key_file: Option<PathBuf>,
    /// Optional user name.
    pub username: Option<String>,
    /// Optional file holding the password.
    pub password_file: Option<PathBuf>,
    /// Topic prefix, default `doorhub/v1`.
    pub topic_prefix: String,
    /// Keep-alive in seconds.
    pub keep_alive_s: u64,
    /// Largest accepted desired payload in bytes.
    pub max_payload: usize,
    /// Allows `mqtt://` (a lab broker).
    pub allow_plaintext: bool,
}

/// `[log]`: an addition to the v1 contract (see `docs/config.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`; `RUST_LOG` overrides it.
    pub level: String,
}

/// `[health]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Seconds between periodic health messages.
    pub interval_s: u64,
}

/// `[events]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Outbox bound; past it the oldest events are dropped and counted.
    pub max_queued: u64,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most credentials one door's desired set may hold.
    pub credentials_per_door: usize,
    /// Most records kept for doors the cloud sends snapshots for that are not configured here.
    pub unconfigured_doors: usize,
}

/// One `[[bus]]`: an RS-485 line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Unique name.
    pub name: String,
    /// Serial device path.
    pub port: PathBuf,
    /// Line speed.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Missed replies before a reader is offline.
    #[serde(default = "default_offline_after")]
    pub offline_after: u32,
    /// Vendor code of the manufacturer-specific commands, 6 hex digits (wire byte order).
    #[serde(default = "default_vendor_code")]
    pub vendor_code: String,
    /// Largest credential file sent to a stored door.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: usize,
    /// How often in-sync stored doors are re-checked.
    #[serde(default = "default_verify_interval_s")]
    pub verify_interval_s: u64,
}

/// How a door decides access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DoorMode {
    /// The door controller keeps its own table; the hub pushes it.
    Stored,
    /// A plain reader; the hub decides.
    Hub,
}

impl DoorMode {
    /// The name as the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DoorMode::Stored => "stored",
            DoorMode::Hub => "hub",
        }
    }
}

/// One `[[door]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorConfig {
    /// Unique id, used in topics.
    pub id: String,
    /// Name of the bus the reader is on.
    pub bus: String,
    /// OSDP address, 0..=126, unique on its bus.
    pub address: u8,
    /// `stored` or `hub`.
    pub mode: DoorMode,
    /// Secure Channel base key file (32 hex digits, mode 0600 or stricter).
    pub scbk_file: Option<PathBuf>,
    /// Whether `scbk_file` may be absent: the hub then pairs a new reader in install mode once
    /// and writes the file. Otherwise the file must exist.
    #[serde(default)]
    pub install_key: bool,
    /// Hub mode: osdp_OUT output number for the strike.
    #[serde(default)]
    pub strike_output: u8,
    /// Hub mode: how long the strike is released.
    #[serde(default = "default_strike_ms")]
    pub strike_ms: u32,
}

fn default_baud() -> u32 {
    9600
}
fn default_offline_after() -> u32 {
    3
}
fn default_vendor_code() -> String {
    "0A4448".to_owned()
}
fn default_max_file_bytes() -> usize {
    4096
}
fn default_verify_interval_s() -> u64 {
    300
}
fn default_strike_ms() -> u32 {
    3000
}

impl fmt::Debug for MqttConfig {
    // The password lives in a file; only its path is shown, never its contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("topic_prefix", &self.topic_prefix)
            .field("keep_alive_s", &self.keep_alive_s)
            .field("max_payload", &self.max_payload)
            .field("allow_plaintext", &self.allow_plaintext)
            .finish()
    }
}

impl Config {
    /// Loads and validates the configuration: built-in defaults, then the TOML file at `path`
    /// (which must exist), then the process's `DOORHUB__SECTION__KEY` environment variables.
    ///
    /// On failure every problem found is returned at once.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with_env(path, process_env()?)
    }

    /// As [`Config::load`], with the environment variables given instead of read from the
    /// process (tests, or a caller that has already captured them). Only variables starting
    /// with `DOORHUB__` (any case) are looked at.
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        load::load(path, env).map(|checked| checked.config)
    }

    /// As [`Config::load`], also returning the warnings: what `run` copes with but a technician
    /// should know (`doorhub check-config` prints them; `run` logs them).
    pub fn check(path: &Path) -> Result<Checked, ConfigErrors> {
        Self::check_with_env(path, process_env()?)
    }

    /// As [`Config::check`], with the environment variables given.
    pub fn check_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Checked, ConfigErrors> {
        load::load(path, env)
    }

    /// Only `hub.status_socket`, layered and resolved as [`Config::load`] does, without the
    /// other checks: `doorhub status` needs the path, not the files only the service may read.
    pub fn status_socket(path: &Path) -> Result<PathBuf, ConfigErrors> {
        Self::status_socket_with_env(path, process_env()?)
    }

    /// As [`Config::status_socket`], with the environment variables given.
    pub fn status_socket_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<PathBuf, ConfigErrors> {
        load::status_socket(path, env)
    }
}

/// The process's environment variables; ours must be text.
fn process_env() -> Result<Vec<(String, String)>, ConfigErrors> {
    let mut bad_env = Vec::new();
    let mut env = Vec::new();
    for (key, value) in std::env::vars_os() {
        // Variables that are not ours may hold anything; only ours must be text.
        let Some(key) = key.to_str() else { continue };
        match value.into_string() {
            Ok(value) => env.push((key.to_owned(), value)),
            Err(_) if key.to_lowercase().starts_with("doorhub__") => {
                bad_env.push(ConfigError {
                    key: String::new(),
                    file: None,
                    line: None,
                    message: format!("environment variable {key} is not valid UTF-8"),
                });
            }
            Err(_) => {}
        }
    }
    if bad_env.is_empty() {
        Ok(env)
    } else {
        Err(ConfigErrors { errors: bad_env })
    }
}

/// Where the broker is, parsed from [`MqttConfig::url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address; an IPv6 address is given without its brackets.
    pub host: String,
    /// Port; when the URL has none, 8883 for `mqtts://` and 1883 for `mqtt://`.
    pub port: u16,
    /// True for `mqtts://`.
    pub tls: bool,
}

/// Why [`MqttConfig::url`] is not a usable broker URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

impl MqttConfig {
    /// Parses [`MqttConfig::url`]. Does not apply `allow_plaintext`: `Config::load` refuses
    /// `mqtt://` without it, so a loaded configuration's endpoint is always allowed.
    pub fn endpoint(&self) -> Result<Endpoint, UrlError> {
        parse_url(&self.url).map_err(UrlError)
    }
}

fn parse_url(url: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err(format!(
            "{url:?} must start with mqtts:// (or mqtt:// with mqtt.allow_plaintext = true)"
        ));
    };
    if rest.contains('@') {
        // Not echoed: whatever stands before the @ may be a password.
        return Err("the URL must not hold a user name or password; \
                    use mqtt.username and mqtt.password_file"
            .to_owned());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "{url:?} must be just mqtts://HOST or mqtts://HOST:PORT, with no path"
        ));
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err(format!("{url:?} has a [ without its ]"));
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{url:?}: expected :PORT after ]")),
            },
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host name"));
    }
    let host_ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    if !host_ok || (host.contains(':') && !rest.starts_with('[')) {
        return Err(format!("{host:?} is not a valid host name or address"));
    }
    let port = match port {
        None if tls => 8883,
        None => 1883,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 => n,
            _ => return Err(format!("port {p:?} is not a number in 1..=65535")),
        },
    };
    Ok(Endpoint {
        host: host.to_owned(),
        port,
        tls,
    })
}

impl BusConfig {
    /// The vendor code's three bytes in wire order, or `None` when it is not 6 hex digits.
    pub fn try_vendor_code_bytes(&self) -> Option<[u8; 3]> {
        let mut out = [0u8; 3];
        // The length check keeps odd inputs like "+0A4448" or surrounding spaces out.
        (self.vendor_code.len() == 6 && hex::decode_to_slice(&self.vendor_code, &mut out).is_ok())
            .then_some(out)
    }

    /// The vendor code's three bytes in wire order. `Config::load` refuses a code that is not 6
    /// hex digits, so for a loaded configuration this is the configured code; for a hand-built
    /// invalid one it falls back to the default code rather than panic.
    pub fn vendor_code_bytes(&self) -> [u8; 3] {
        self.try_vendor_code_bytes()
            .unwrap_or(DEFAULT_VENDOR_CODE_BYTES)
    }
}

/// The bytes of [`default_vendor_code`].
const DEFAULT_VENDOR_CODE_BYTES: [u8; 3] = [0x0A, 0x44, 0x48];

/// Why a Secure Channel base key file cannot be used. Never holds the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum ScbkError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a regular file.
    #[error("{} is not a file", path.display())]
    NotAFile {
        /// The key file.
        path: PathBuf,
    },
    /// Group or others may access it.
    #[error(
        "{} has mode {mode:04o}, which lets other users read the key; \
         run `chmod 600 {}` (0600 or stricter is required)",
        path.display(),
        path.display()
    )]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Absent, and the door may not pair a new reader.
    #[error(
        "{} does not exist; put the reader's key there, or set install_key = true to pair a \
         new reader in install mode",
        path.display()
    )]
    Missing {
        /// The key file.
        path: PathBuf,
    },
    /// Absent, and the hub could not write it when pairing.
    #[error(
        "{} does not exist yet and its directory is missing, so the key of a new reader \
         could not be stored there",
        path.display()
    )]
    NoDirectory {
        /// The key file.
        path: PathBuf,
    },
    /// Not 32 hex digits.
    #[error(
        "{} must hold exactly 32 hex digits (the 16-byte Secure Channel base key); \
         its contents are not shown",
        path.display()
    )]
    Format {
        /// The key file.
        path: PathBuf,
    },
}

impl DoorConfig {
    /// Reads the Secure Channel base key: `None` when no `scbk_file` is set, or when it does
    /// not exist yet and `install_key` lets the hub pair a new reader (see
    /// [`DoorConfig::pairs`]). Checks the file's mode first, so a key that others could read is
    /// refused.
    pub fn read_scbk(&self) -> Result<Option<[u8; 16]>, ScbkError> {
        let Some(path) = &self.scbk_file else {
            return Ok(None);
        };
        if absent(path) {
            if !self.install_key {
                return Err(ScbkError::Missing { path: path.clone() });
            }
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            if dir.is_some_and(|d| !d.is_dir()) {
                return Err(ScbkError::NoDirectory { path: path.clone() });
            }
            return Ok(None);
        }
        read_scbk_file(path).map(Some)
    }

    /// Whether the hub will pair a new reader at this door in install mode: `install_key` is
    /// set and the key file does not exist yet.
    pub fn pairs(&self) -> bool {
        self.install_key && self.scbk_file.as_deref().is_some_and(absent)
    }

    /// One line for `check-config`: how the door's Secure Channel starts.
    pub fn secure_channel_plan(&self) -> String {
        let plan = if self.pairs() {
            "will pair a new reader in install mode (install_key = true, no key file yet)"
        } else if self.scbk_file.is_some() {
            "uses its key file"
        } else {
            "no Secure Channel"
        };
        format!("{}: {plan}", self.id)
    }
}

/// Whether nothing is at `path`, not even a dangling link: only then may a new key go there.
fn absent(path: &Path) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// The permission bits of a secret file (a key or a password) when group or others have any:
/// such a file must be 0600 or stricter.
pub(crate) fn loose_mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

fn read_scbk_file(path: &Path) -> Result<[u8; 16], ScbkError> {
    let read_err = |source| ScbkError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(ScbkError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if let Some(mode) = loose_mode(&meta) {
        return Err(ScbkError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let format_err = || ScbkError::Format {
        path: path.to_path_buf(),
    };
    // A key file is 32 digits and a newline; anything far bigger is the wrong file.
    if meta.len() > 1024 {
        return Err(format_err());
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format_err())?
        .trim();
    let mut key = [0u8; 16];
    if text.len() != 32 || hex::decode_to_slice(text, &mut key).is_err() {
        return Err(format_err());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Config, parse_url};

    fn ep(url: &str) -> (String, u16, bool) {
        let e = parse_url(url).unwrap_or_else(|m| panic!("{url}: {m}"));
        (e.host, e.port, e.tls)
    }

    #[test]
    fn urls() {
        assert_eq!(
            ep("mqtts://a.example.com"),
            ("a.example.com".into(), 8883, true)
        );
        assert_eq!(
            ep("mqtt://a.example.com"),
            ("a.example.com".into(), 1883, false)
        );
        assert_eq!(ep("mqtts://a:1234/"), ("a".into(), 1234, true));
        assert_eq!(ep("mqtts://10.0.0.1:8884"), ("10.0.0.1".into(), 8884, true));
        assert_eq!(ep("mqtts://[::1]:99"), ("::1".into(), 99, true));
        assert_eq!(ep("mqtts://[fe80::1]"), ("fe80::1".into(), 8883, true));
        for bad in [
            "",
            "iot.example.com",
            "https://a",
            "MQTTS://a",
            "mqtts://",
            "mqtts://:8883",
            "mqtts://a:0",
            "mqtts://a:65536",
            "mqtts://a:x",
            "mqtts://a/topic",
            "mqtts://a b",
            "mqtts://::1",
            "mqtts://[::1",
            "mqtts://[::1]x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn url_with_password_is_not_echoed() {
        let message = parse_url("mqtts://user:hunter2@a").expect_err("refused");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn status_socket_alone_needs_no_other_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("doorhub.toml");
        let socket = |toml: &str, env: &[(&str, &str)]| {
            std::fs::write(&file, toml).unwrap();
            let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            Config::status_socket_with_env(&file, env)
        };
        // No hub id, no broker, a key file nobody could read: only the socket matters here.
        let other = "[mqtt]\nkey_file = \"/nonexistent\"\n";
        assert_eq!(
            socket(other, &[]).unwrap(),
            Path::new("/run/doorhub/status.sock")
        );
        let relative = "[hub]\nstatus_socket = \"run/s.sock\"\n";
        let dir = std::path::absolute(dir.path()).unwrap();
        assert_eq!(socket(relative, &[]).unwrap(), dir.join("run/s.sock"));
        let env = [("DOORHUB__HUB__STATUS_SOCKET", "/tmp/x.sock")];
        assert_eq!(socket(relative, &env).unwrap(), Path::new("/tmp/x.sock"));
        let errors = socket("[hub]\nstatus_socket = 1\n", &[]).unwrap_err();
        assert!(
            errors
                .to_string()
                .contains(":2: hub.status_socket: expected a path"),
            "{errors}"
        );
        assert!(socket("not toml [", &[]).is_err());
    }
}

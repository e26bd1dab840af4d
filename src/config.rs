//! The configuration file (`../shared/spec/config.md`, restated in `docs/config.md`).
//!
//! Layers, later wins: the built-in defaults (`config/defaults.toml`, embedded), the TOML file,
//! then `DOORHUB__SECTION__KEY` environment variables. Every problem is collected and reported at
//! once, each naming its key and, where known, the file and line.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole configuration, validated.
#[derive(Debug, Clone, Deserialize)]
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
    /// `[[bus]]`
    #[serde(default)]
    pub bus: Vec<BusConfig>,
    /// `[[door]]`
    #[serde(default)]
    pub door: Vec<DoorConfig>,
}

/// `[hub]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The hub's id, used in every topic.
    pub id: String,
    /// Where the store lives; created 0700 if missing.
    pub data_dir: PathBuf,
}

/// `[mqtt]`
#[derive(Clone, Deserialize)]
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

/// `[health]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Seconds between periodic health messages.
    pub interval_s: u64,
}

/// `[events]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Outbox bound; past it the oldest events are dropped and counted.
    pub max_queued: u64,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most credentials one door's desired set may hold.
    pub credentials_per_door: usize,
}

/// One `[[bus]]`: an RS-485 line.
#[derive(Debug, Clone, Deserialize)]
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

/// One `[[door]]`.
#[derive(Debug, Clone, Deserialize)]
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

//! Merging the layers and turning them into a [`Config`], collecting every problem.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat, Map, Value, ValueKind};
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::error::{ConfigError, ConfigErrors};
use super::locate::{KeyPath, Locator, line_of};
use super::{BusConfig, Checked, Config, DoorConfig, schema, validate};

/// The built-in defaults, the lowest layer.
const DEFAULTS: &str = include_str!("../../config/defaults.toml");

/// Environment variables `DOORHUB__SECTION__KEY`, matched case-insensitively as the `config`
/// crate does.
const ENV_PREFIX: &str = "doorhub__";

/// Keys whose values are strings. `try_parsing` would turn `DOORHUB__HUB__ID=0123` into the
/// number 123 (and then the string "123"), so these are set again from the raw text.
const STRING_KEYS: &[&str] = &[
    "hub.id",
    "hub.data_dir",
    "hub.status_socket",
    "mqtt.url",
    "mqtt.client_id",
    "mqtt.ca_file",
    "mqtt.cert_file",
    "mqtt.key_file",
    "mqtt.username",
    "mqtt.password_file",
    "mqtt.topic_prefix",
];

/// An error not tied to a key, such as an unreadable file.
fn whole_file(file: Option<&Path>, line: Option<usize>, message: String) -> ConfigErrors {
    ConfigErrors::one(ConfigError {
        key: String::new(),
        file: file.map(Path::to_path_buf),
        line,
        message,
    })
}

/// The layers merged, before any check.
struct Layers {
    /// The configuration file's text.
    text: String,
    /// Its parsed form, with spans.
    doc: toml_edit::Document<String>,
    /// `section.key` → the environment variable that set it.
    env_vars: BTreeMap<String, String>,
    /// Variables refused outright.
    env_errors: Vec<ConfigError>,
    /// Defaults, file and environment, later wins.
    merged: Map<String, Value>,
}

impl Layers {
    fn locator<'a>(&'a self, path: &'a Path) -> Locator<'a> {
        Locator {
            file: path,
            text: &self.text,
            doc: &self.doc,
            env: &self.env_vars,
        }
    }
}

/// Reads the file and merges the layers.
fn layers(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Layers, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        whole_file(
            Some(path),
            None,
            format!("cannot read the configuration file: {e}"),
        )
    })?;
    // Parsed twice: toml_edit keeps the spans that give line numbers, `config` does the layering.
    let doc = toml_edit::Document::parse(text.clone()).map_err(|e| {
        let line = e.span().map(|s| line_of(&text, s.start));
        whole_file(
            Some(path),
            line,
            format!("not valid TOML: {}", e.message().trim()),
        )
    })?;

    let mut env_vars = BTreeMap::new(); // section.key → variable name
    let mut env_raw = BTreeMap::new(); // section.key → value as written
    let mut env_map = Map::new(); // what `Environment` reads instead of the process environment
    let mut env_errors = Vec::new();
    for (var, value) in env {
        let lower = var.to_lowercase();
        let Some(rest) = lower.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let dotted = rest.replace("__", ".");
        let section = dotted.split('.').next().unwrap_or_default();
        if section == "bus" || section == "door" {
            // A variable cannot name one entry of a list; `config` would replace the whole list
            // with a table. Refused with a clear message instead.
            env_errors.push(ConfigError {
                key: dotted.clone(),
                file: None,
                line: None,
                message: format!(
                    "[[{section}]] entries cannot be set from the environment; \
                     edit the configuration file (set by environment variable {var})"
                ),
            });
            continue;
        }
        env_vars.insert(dotted.clone(), var.clone());
        env_raw.insert(dotted, value.clone());
        env_map.insert(var, value);
    }

    let mut builder = config::Config::builder()
        .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
        .add_source(File::from_str(&text, FileFormat::Toml))
        .add_source(
            Environment::with_prefix("DOORHUB")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env_map)),
        );
    for (dotted, raw) in &env_raw {
        if STRING_KEYS.contains(&dotted.as_str()) {
            builder = builder
                .set_override(dotted.as_str(), raw.as_str())
                .map_err(|e| whole_file(None, None, format!("cannot apply {dotted}: {e}")))?;
        }
    }
    let merged: Map<String, Value> = builder
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| {
            whole_file(
                Some(path),
                None,
                format!("cannot merge the configuration layers: {e}"),
            )
        })?;
    Ok(Layers {
        text,
        doc,
        env_vars,
        env_errors,
        merged,
    })
}

/// See [`Config::check_with_env`].
pub(crate) fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Checked, ConfigErrors> {
    let mut layers = layers(path, env)?;
    let mut merged = std::mem::take(&mut layers.merged);
    let mut errors = std::mem::take(&mut layers.env_errors);
    let loc = layers.locator(path);
    let bad = schema::check(&mut merged, &loc, &mut errors);

    let mut de = Deser {
        loc: &loc,
        bad: &bad,
        errors: &mut errors,
    };
    let mut hub = de.section(&mut merged, "hub");
    let mut mqtt = de.section(&mut merged, "mqtt");
    let health = de.section(&mut merged, "health");
    let events = de.section(&mut merged, "events");
    let limits = de.section(&mut merged, "limits");
    let log = de.section(&mut merged, "log");
    let mut buses: Vec<Option<BusConfig>> = de.list(&mut merged, "bus");
    let mut doors: Vec<Option<DoorConfig>> = de.list(&mut merged, "door");

    let dir = config_dir(path);
    let mut warnings = Vec::new();
    validate::check(
        &mut validate::Parts {
            hub: hub.as_mut(),
            mqtt: mqtt.as_mut(),
            buses: &mut buses,
            doors: &mut doors,
        },
        &dir,
        &loc,
        &mut errors,
        &mut warnings,
    );

    let buses: Option<Vec<BusConfig>> = buses.into_iter().collect();
    let doors: Option<Vec<DoorConfig>> = doors.into_iter().collect();
    match (hub, mqtt, health, events, limits, log, buses, doors) {
        (
            Some(hub),
            Some(mqtt),
            Some(health),
            Some(events),
            Some(limits),
            Some(log),
            Some(bus),
            Some(door),
        ) if errors.is_empty() => {
            warnings.sort_by_key(|e| (e.file.is_none(), e.line.unwrap_or(usize::MAX)));
            Ok(Checked {
                config: Config {
                    hub,
                    mqtt,
                    health,
                    events,
                    limits,
                    log,
                    bus,
                    door,
                },
                warnings,
            })
        }
        _ => {
            // Every part that failed reported why; this guards against a silent failure.
            if errors.is_empty() {
                errors.push(ConfigError {
                    key: String::new(),
                    file: Some(path.to_path_buf()),
                    line: None,
                    message: "the configuration is incomplete".to_owned(),
                });
            }
            // File order reads best for whoever fixes the file; environment problems come last.
            errors.sort_by_key(|e| (e.file.is_none(), e.line.unwrap_or(usize::MAX)));
            Err(ConfigErrors { errors })
        }
    }
}

/// See [`Config::status_socket_with_env`]: the layers only, none of the other checks, so that
/// files only the service may read (keys, certificates) do not stand in the way.
pub(crate) fn status_socket(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<PathBuf, ConfigErrors> {
    let layers = layers(path, env)?;
    let value = match layers.merged.get("hub").map(|v| &v.kind) {
        Some(ValueKind::Table(hub)) => hub.get("status_socket").map(|v| &v.kind),
        _ => None,
    };
    match value {
        Some(ValueKind::String(s)) if !s.is_empty() => Ok(config_dir(path).join(s)),
        _ => {
            let key = KeyPath::top("hub").key("status_socket");
            Err(ConfigErrors::one(layers.locator(path).error(
                &key,
                "expected a path in double quotes, such as \"/run/doorhub/status.sock\"",
            )))
        }
    }
}

/// Relative paths in the configuration are taken from the configuration file's directory, made
/// absolute so that they stay right whatever the daemon's working directory later is.
fn config_dir(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Deserialises the entries the schema check passed, one at a time, so a problem in one does not
/// hide the problems in the others.
struct Deser<'a> {
    loc: &'a Locator<'a>,
    bad: &'a BTreeSet<String>,
    errors: &'a mut Vec<ConfigError>,
}

impl Deser<'_> {
    fn section<T: DeserializeOwned>(
        &mut self,
        merged: &mut Map<String, Value>,
        name: &str,
    ) -> Option<T> {
        let path = KeyPath::top(name);
        match merged.remove(name) {
            Some(value) => self.one(value, &path),
            None => {
                // Unreachable with the built-in defaults in place, which give every section.
                self.errors.push(self.loc.error(&path, "missing section"));
                None
            }
        }
    }

    fn list<T: DeserializeOwned>(
        &mut self,
        merged: &mut Map<String, Value>,
        name: &str,
    ) -> Vec<Option<T>> {
        let path = KeyPath::top(name);
        match merged.remove(name).map(|v| v.kind) {
            None => Vec::new(),
            Some(ValueKind::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| self.one(item, &path.index(i)))
                .collect(),
            // The schema check reported it; one `None` makes the load fail.
            Some(_) => vec![None],
        }
    }

    fn one<T: DeserializeOwned>(&mut self, value: Value, path: &KeyPath) -> Option<T> {
        if self.bad.contains(&path.to_string()) {
            return None;
        }
        match serde_path_to_error::deserialize(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut key = path.clone();
                for seg in e.path().iter() {
                    match seg {
                        Segment::Seq { index } => key = key.index(*index),
                        Segment::Map { key: k } => key = key.key(k),
                        Segment::Enum { variant } => key = key.key(variant),
                        Segment::Unknown => {}
                    }
                }
                // The schema check catches nearly everything first; this is the backstop.
                let message = match e.into_inner() {
                    config::ConfigError::NotFound(field) => {
                        key = key.key(&field);
                        "this key is required but missing".to_owned()
                    }
                    config::ConfigError::Type {
                        unexpected,
                        expected,
                        ..
                    } => format!("expected {expected}, found {unexpected}"),
                    other => other.to_string(),
                };
                self.errors.push(self.loc.error(&key, message));
                None
            }
        }
    }
}

//! Checks that need the typed values: ids, the broker URL, files, names that refer to each
//! other. Types and number ranges were checked before, in `schema`. Also fills in what the file
//! may leave out (`client_id`) and resolves relative paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::locate::{KeyPath, Locator};
use super::{BusConfig, DoorConfig, HubConfig, MqttConfig};

/// The parts that need checks beyond types and ranges; `None` for one that failed to
/// deserialise (already reported).
pub(crate) struct Parts<'a> {
    pub(crate) hub: Option<&'a mut HubConfig>,
    pub(crate) mqtt: Option<&'a mut MqttConfig>,
    pub(crate) buses: &'a mut [Option<BusConfig>],
    pub(crate) doors: &'a mut [Option<DoorConfig>],
}

/// Runs every check, normalising as it goes.
pub(crate) fn check(
    parts: &mut Parts<'_>,
    dir: &Path,
    loc: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    let mut c = Checker { loc, errors, dir };
    let hub_id = parts.hub.as_deref_mut().map(|hub| {
        c.hub(hub);
        hub.id.clone()
    });
    if let Some(mqtt) = parts.mqtt.as_deref_mut() {
        c.mqtt(mqtt, hub_id.as_deref());
    }
    c.buses(parts.buses);
    c.doors(parts.doors, parts.buses);
}

struct Checker<'a, 'l> {
    loc: &'a Locator<'l>,
    errors: &'a mut Vec<ConfigError>,
    dir: &'a Path,
}

impl Checker<'_, '_> {
    fn err(&mut self, key: &KeyPath, message: impl Into<String>) {
        self.errors.push(self.loc.error(key, message));
    }

    fn hub(&mut self, hub: &mut HubConfig) {
        let base = KeyPath::top("hub");
        if let Err(m) = check_id(&hub.id) {
            self.err(&base.key("id"), m);
        }
        if hub.data_dir.as_os_str().is_empty() {
            self.err(&base.key("data_dir"), "must not be empty");
        } else {
            self.resolve(&mut hub.data_dir);
        }
        if hub.status_socket.as_os_str().is_empty() {
            self.err(&base.key("status_socket"), "must not be empty");
        } else {
            self.resolve(&mut hub.status_socket);
            if let Err(m) = check_socket_path(&hub.status_socket) {
                self.err(&base.key("status_socket"), m);
            }
        }
    }

    fn mqtt(&mut self, m: &mut MqttConfig, hub_id: Option<&str>) {
        let base = KeyPath::top("mqtt");
        // The spec's example writes `username = ""` for "none"; the same goes for every path.
        for file in [
            &mut m.ca_file,
            &mut m.cert_file,
            &mut m.key_file,
            &mut m.password_file,
        ] {
            none_if_empty(file);
        }
        if m.username.as_deref() == Some("") {
            m.username = None;
        }
        if m.client_id.is_empty()
            && let Some(id) = hub_id
        {
            m.client_id = id.to_owned();
        }

        match m.endpoint() {
            Err(e) => self.err(&base.key("url"), e.to_string()),
            Ok(ep) if !ep.tls && !m.allow_plaintext => self.err(
                &base.key("url"),
                "mqtt:// sends everything unencrypted and is refused; use mqtts:// \
                 or set mqtt.allow_plaintext = true (lab brokers only)",
            ),
            Ok(_) => {}
        }

        match (&m.cert_file, &m.key_file) {
            (Some(_), None) => self.err(
                &base.key("key_file"),
                "cert_file is set, so key_file must be too (mutual TLS needs both)",
            ),
            (None, Some(_)) => self.err(
                &base.key("cert_file"),
                "key_file is set, so cert_file must be too (mutual TLS needs both)",
            ),
            _ => {}
        }
        if m.password_file.is_some() && m.username.is_none() {
            self.err(
                &base.key("password_file"),
                "a password needs a user name; set mqtt.username too",
            );
        }

        for (name, file) in [
            ("ca_file", &mut m.ca_file),
            ("cert_file", &mut m.cert_file),
            ("key_file", &mut m.key_file),
            ("password_file", &mut m.password_file),
        ] {
            if let Some(path) = file {
                self.resolve(path);
                if let Err(msg) = check_readable(path) {
                    self.err(&base.key(name), msg);
                }
            }
        }

        if let Err(msg) = check_topic_prefix(&m.topic_prefix) {
            self.err(&base.key("topic_prefix"), msg);
        }
    }

    fn buses(&mut self, buses: &mut [Option<BusConfig>]) {
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for (i, bus) in buses.iter_mut().enumerate() {
            let Some(bus) = bus else { continue };
            let base = KeyPath::top("bus").index(i);
            if bus.name.is_empty() {
                self.err(&base.key("name"), "must not be empty");
            } else if let Some(first) = names.get(&bus.name) {
                self.err(
                    &base.key("name"),
                    format!("bus name {:?} is already used by bus[{first}]", bus.name),
                );
            } else {
                names.insert(bus.name.clone(), i);
            }
            if bus.port.as_os_str().is_empty() {
                self.err(&base.key("port"), "must not be empty");
            }
            if bus.try_vendor_code_bytes().is_none() {
                self.err(
                    &base.key("vendor_code"),
                    format!(
                        "{:?} is not a vendor code; write exactly 6 hex digits, such as \"0A4448\"",
                        bus.vendor_code
                    ),
                );
            }
        }
    }

    fn doors(&mut self, doors: &mut [Option<DoorConfig>], buses: &[Option<BusConfig>]) {
        // A bus that failed to load may be the one a door names; saying "no such bus" then
        // would be wrong, so the reference check needs every bus.
        let all_buses = buses.iter().all(Option::is_some);
        let bus_names: Vec<&str> = buses.iter().flatten().map(|b| b.name.as_str()).collect();
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        let mut addresses: BTreeMap<(String, u8), usize> = BTreeMap::new();
        for (i, door) in doors.iter_mut().enumerate() {
            let Some(door) = door else { continue };
            let base = KeyPath::top("door").index(i);
            if let Err(m) = check_id(&door.id) {
                self.err(&base.key("id"), m);
            } else if let Some(first) = ids.get(&door.id) {
                self.err(
                    &base.key("id"),
                    format!("door id {:?} is already used by door[{first}]", door.id),
                );
            } else {
                ids.insert(door.id.clone(), i);
            }

            if all_buses && !bus_names.contains(&door.bus.as_str()) {
                let known = if bus_names.is_empty() {
                    "no [[bus]] is configured".to_owned()
                } else {
                    format!("configured buses: {}", bus_names.join(", "))
                };
                self.err(
                    &base.key("bus"),
                    format!("no [[bus]] is named {:?}; {known}", door.bus),
                );
            }

            let slot = (door.bus.clone(), door.address);
            if let Some(first) = addresses.get(&slot) {
                self.err(
                    &base.key("address"),
                    format!(
                        "address {} is already used on bus {:?} by door[{first}]; \
                         each reader on a bus needs its own address",
                        door.address, door.bus
                    ),
                );
            } else {
                addresses.insert(slot, i);
            }

            none_if_empty(&mut door.scbk_file);
            if let Some(path) = &mut door.scbk_file {
                self.resolve(path);
            }
            if door.install_key && door.scbk_file.is_none() {
                self.err(
                    &base.key("install_key"),
                    "install_key = true needs scbk_file: the key of the new reader is stored there",
                );
            }
            if let Err(e) = door.read_scbk() {
                self.err(&base.key("scbk_file"), e.to_string());
            }
        }
    }

    fn resolve(&self, path: &mut PathBuf) {
        if path.is_relative() {
            *path = self.dir.join(&*path);
        }
    }
}

fn none_if_empty(path: &mut Option<PathBuf>) {
    if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        *path = None;
    }
}

/// `[a-z0-9][a-z0-9_-]{0,63}`: ids go into MQTT topics and file names, so nothing else.
pub(crate) fn check_id(id: &str) -> Result<(), String> {
    let bytes = id.as_bytes();
    let ok = match bytes.split_first() {
        None => false,
        Some((first, rest)) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.len() <= 63
                && rest.iter().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_'
                })
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a valid id; use 1 to 64 characters out of a-z, 0-9, - and _, \
             starting with a letter or digit"
        ))
    }
}

/// The file must be a readable regular file. Only opened, never read: the message cannot leak
/// what it holds.
fn check_readable(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot use {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a file"));
    }
    std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    Ok(())
}

/// The longest path a UNIX socket can be bound to: `sun_path` is 108 bytes with its final NUL.
const SOCKET_PATH_MAX: usize = 107;

/// The kernel refuses longer socket paths; saying so here beats a bind failure at run time.
fn check_socket_path(path: &Path) -> Result<(), String> {
    let len = path.as_os_str().len();
    if len > SOCKET_PATH_MAX {
        Err(format!(
            "{} is {len} bytes long; a UNIX socket path may be at most {SOCKET_PATH_MAX}",
            path.display()
        ))
    } else {
        Ok(())
    }
}

/// The prefix is put before every topic the hub uses, so it must be a plain topic name.
fn check_topic_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        Err("must not be empty; the default is \"doorhub/v1\"".to_owned())
    } else if prefix.contains(['+', '#']) {
        Err(format!(
            "{prefix:?} holds an MQTT wildcard (+ or #), which a topic name cannot"
        ))
    } else if prefix.starts_with('/') || prefix.ends_with('/') {
        Err(format!("{prefix:?} must not start or end with /"))
    } else if prefix.split('/').any(str::is_empty) {
        Err(format!("{prefix:?} has an empty level (//)"))
    } else if prefix.contains('\0') {
        Err("must not contain a NUL character".to_owned())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{check_id, check_socket_path, check_topic_prefix};

    #[test]
    fn ids() {
        for ok in ["a", "0", "bldg-12-hub-1", "a_b", &"a".repeat(64)] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a b", "a.b", "é", &"a".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn socket_paths() {
        assert!(check_socket_path(std::path::Path::new("/run/doorhub/status.sock")).is_ok());
        let longest = format!("/{}", "a".repeat(106));
        assert!(check_socket_path(std::path::Path::new(&longest)).is_ok());
        let message = check_socket_path(std::path::Path::new(&format!("{longest}a")))
            .expect_err("108 bytes is too long");
        assert!(message.contains("108 bytes"), "{message}");
    }

    #[test]
    fn topic_prefixes() {
        for ok in ["doorhub/v1", "a", "a/b/c"] {
            assert!(check_topic_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/+/b", "a/#", "a\0b"] {
            assert!(check_topic_prefix(bad).is_err(), "{bad:?}");
        }
    }
}

//! Checks that need the typed values: ids, the broker URL, files, names that refer to each
//! other, and what the daemon needs of the machine when it starts (the store's folder, the TLS
//! setup, the serial ports), so that a file that passes does not stop the daemon. Types and number
//! ranges were checked before, in `schema`. Also fills in what the file may leave out
//! (`client_id`) and resolves relative paths.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ConfigError;
use super::locate::{KeyPath, Locator};
use super::{BusConfig, DoorConfig, HubConfig, MqttConfig};
use crate::tls::TlsError;

/// The parts that need checks beyond types and ranges; `None` for one that failed to
/// deserialise (already reported).
pub(crate) struct Parts<'a> {
    pub(crate) hub: Option<&'a mut HubConfig>,
    pub(crate) mqtt: Option<&'a mut MqttConfig>,
    pub(crate) buses: &'a mut [Option<BusConfig>],
    pub(crate) doors: &'a mut [Option<DoorConfig>],
}

/// Runs every check, normalising as it goes. What `run` copes with goes to `warnings`.
pub(crate) fn check(
    parts: &mut Parts<'_>,
    dir: &Path,
    loc: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    let mut c = Checker {
        loc,
        errors,
        warnings,
        dir,
    };
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
    warnings: &'a mut Vec<ConfigError>,
    dir: &'a Path,
}

impl Checker<'_, '_> {
    fn err(&mut self, key: &KeyPath, message: impl Into<String>) {
        self.errors.push(self.loc.error(key, message));
    }

    fn warn(&mut self, key: &KeyPath, message: impl Into<String>) {
        self.warnings.push(self.loc.error(key, message));
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
            if let Err(m) = check_data_dir(&hub.data_dir) {
                self.err(&base.key("data_dir"), m);
            }
        }
        if hub.status_socket.as_os_str().is_empty() {
            self.err(&base.key("status_socket"), "must not be empty");
        } else {
            self.resolve(&mut hub.status_socket);
            if let Err(m) = check_socket_path(&hub.status_socket) {
                self.err(&base.key("status_socket"), m);
            } else if let Err(m) = check_socket_dir(&hub.status_socket) {
                // The daemon runs without its status socket (it says so); only `doorhub status`
                // goes unanswered.
                self.warn(&base.key("status_socket"), m);
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

        let errors_before = self.errors.len();
        for (name, file, secret) in [
            ("ca_file", &mut m.ca_file, false),
            ("cert_file", &mut m.cert_file, false),
            ("key_file", &mut m.key_file, true),
            ("password_file", &mut m.password_file, true),
        ] {
            if let Some(path) = file {
                self.resolve(path);
                let checked = check_readable(path).and_then(|meta| {
                    if secret {
                        check_secret_mode(path, &meta)
                    } else {
                        Ok(())
                    }
                });
                if let Err(msg) = checked {
                    self.err(&base.key(name), msg);
                }
            }
        }
        if let Some(path) = &m.password_file
            && self.errors.len() == errors_before
            && let Err(msg) = check_text(path)
        {
            self.err(&base.key("password_file"), msg);
        }
        // The link builds its TLS setup at start and the daemon stops if it can't; so the same
        // is built here, once every file is known to be readable.
        if self.errors.len() == errors_before
            && m.endpoint().is_ok_and(|ep| ep.tls)
            && let Err(e) = crate::tls::client_config(m)
        {
            let (name, message) = tls_problem(&e);
            self.err(&base.key(name), message);
        }

        if let Err(msg) = check_topic_prefix(&m.topic_prefix) {
            self.err(&base.key("topic_prefix"), msg);
        }
    }

    fn buses(&mut self, buses: &mut [Option<BusConfig>]) {
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        // Each port by the device it names, so a symlink and its target are one port.
        let mut ports: Vec<(PathBuf, usize)> = Vec::new();
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
            } else {
                let (device, problem) = match check_port(&bus.port) {
                    Port::Device(device) => (device, None),
                    Port::Missing(m) => (bus.port.clone(), Some((false, m))),
                    Port::Wrong(m) => (bus.port.clone(), Some((true, m))),
                };
                match problem {
                    Some((true, m)) => self.err(&base.key("port"), m),
                    Some((false, m)) => self.warn(&base.key("port"), m),
                    None => {}
                }
                match ports.iter().find(|(d, _)| *d == device) {
                    Some((_, first)) => {
                        let via = if device == bus.port {
                            String::new()
                        } else {
                            format!(" (both are {})", device.display())
                        };
                        self.err(
                            &base.key("port"),
                            format!(
                                "{} is the port of bus[{first}] already{via}; a port is opened \
                                 by one bus only (the second could never open it)",
                                bus.port.display()
                            ),
                        );
                    }
                    None => ports.push((device, i)),
                }
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
fn check_readable(path: &Path) -> Result<std::fs::Metadata, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot use {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a file"));
    }
    std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    Ok(meta)
}

/// A TLS key or a password file gets the rule of the Secure Channel key files: 0600 or stricter.
fn check_secret_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    match super::loose_mode(meta) {
        None => Ok(()),
        Some(mode) => Err(format!(
            "{shown} has mode {mode:04o}, which lets other users read it; run `chmod 600 {shown}` \
             (0600 or stricter is required, and the user running doorhub must own it)",
            shown = path.display()
        )),
    }
}

/// The largest password file read; a password is a line, anything far bigger is the wrong file.
const PASSWORD_FILE_MAX: u64 = 4096;

/// The link reads the password file as text. Its contents are never shown.
fn check_text(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let too_big = || {
        format!("{shown} is larger than {PASSWORD_FILE_MAX} bytes; it must hold only the password")
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(PASSWORD_FILE_MAX + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > PASSWORD_FILE_MAX {
        return Err(too_big());
    }
    if std::str::from_utf8(&bytes).is_err() {
        return Err(format!(
            "{shown} is not text (UTF-8); its contents are not shown"
        ));
    }
    Ok(())
}

/// The key a TLS problem belongs to, and its message without the key's name (the error line
/// names the key already).
fn tls_problem(e: &TlsError) -> (&'static str, String) {
    let name = match e {
        TlsError::CertificateFile { what, .. } | TlsError::NoCertificates { what, .. } => {
            what.strip_prefix("mqtt.").unwrap_or(what)
        }
        TlsError::BadCaCertificate { .. } | TlsError::NoSystemRoots { .. } => "ca_file",
        TlsError::UnreadableKey { .. } | TlsError::KeyMismatch { .. } => "key_file",
        _ => "url",
    };
    let message = e.to_string();
    let message = message
        .strip_prefix(&format!("mqtt.{name} "))
        .map_or(message.clone(), str::to_owned);
    (name, message)
}

/// The store's directory: `run` creates it (0700) if it is missing, sets its mode to 0700, and
/// writes in it, all as the user running doorhub. So the check does the same as the user running
/// it (`sudo -u doorhub doorhub check-config`): a probe file is made and removed, or the missing
/// directory is made and removed.
fn check_data_dir(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return check_creatable(path),
        Err(e) => return Err(format!("cannot use {shown}: {e}")),
    };
    if !meta.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    let user = probe(path).map_err(|e| {
        format!(
            "cannot write in {shown}: {e}; the user doorhub runs as must own it and be able to \
             write in it (check as that user: sudo -u doorhub doorhub check-config)"
        )
    })?;
    // Setting the mode takes the owner (or root).
    if user != 0 && meta.uid() != user {
        return Err(format!(
            "{shown} belongs to user id {}, not to this user (id {user}); doorhub sets its \
             mode to 0700 and must own it: run the check as the user running doorhub, or \
             chown the directory to that user",
            meta.uid()
        ));
    }
    Ok(())
}

/// A missing store directory: its first missing component is made (0700) and removed again.
fn check_creatable(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let mut missing = path;
    let parent = loop {
        let Some(parent) = missing.parent() else {
            return Err(format!("{shown} does not exist and cannot be created"));
        };
        match std::fs::metadata(parent) {
            Ok(meta) if meta.is_dir() => break parent,
            Ok(_) => {
                return Err(format!(
                    "{shown} cannot be created: {} is not a directory",
                    parent.display()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing = parent,
            Err(e) => {
                return Err(format!(
                    "{shown} cannot be created: {}: {e}",
                    parent.display()
                ));
            }
        }
    };
    match std::fs::DirBuilder::new().mode(0o700).create(missing) {
        // Made, so the check passed; if another process put something in it meanwhile, it stays.
        Ok(()) => {
            let _ = std::fs::remove_dir(missing);
            Ok(())
        }
        // Made meanwhile by someone else (a daemon starting): it is there, and theirs to keep.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|e| {
        format!(
            "{shown} does not exist and cannot be created in {}: {e}",
            parent.display()
        )
    })
}

/// Makes and removes a file in `dir`; returns the user id it got, which is the user running
/// this (files are made with the effective user id).
fn probe(dir: &Path) -> std::io::Result<u32> {
    // Unique per call too: one process may check several configurations at once (tests).
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".doorhub-check-{}-{n}", std::process::id()));
    let made = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
    };
    let file = match made() {
        // Left by a check that was killed, with this process id then.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&path)?;
            made()?
        }
        other => other?,
    };
    let user = file.metadata().map(|m| m.uid());
    drop(file);
    std::fs::remove_file(&path)?;
    user
}

/// The status socket's directory. `run` does without the socket if it cannot make it, so these
/// are warnings; under systemd the directory (`RuntimeDirectory=`) appears only at start.
fn check_socket_dir(socket: &Path) -> Result<(), String> {
    let Some(dir) = socket.parent() else {
        return Ok(());
    };
    let shown = dir.display();
    let consequence = "doorhub runs, but `doorhub status` will not answer";
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(format!("{shown} is not a directory; {consequence}")),
        Ok(_) => probe(dir)
            .map(|_| ())
            .map_err(|e| format!("cannot make the socket in {shown}: {e}; {consequence}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "{shown} does not exist (systemd makes /run/doorhub when the service starts); \
             without it {consequence}"
        )),
        Err(e) => Err(format!("cannot use {shown}: {e}; {consequence}")),
    }
}

/// What a bus's port names.
enum Port {
    /// A device, by its canonical path (symlinks followed).
    Device(PathBuf),
    /// Nothing yet: `run` starts and keeps trying to open it (a USB adapter plugged in later).
    Missing(String),
    /// Something that is not a serial device, which no retry fixes.
    Wrong(String),
}

fn check_port(port: &Path) -> Port {
    let shown = port.display();
    match std::fs::metadata(port) {
        Ok(meta) if meta.file_type().is_char_device() => {
            Port::Device(std::fs::canonicalize(port).unwrap_or_else(|_| port.to_path_buf()))
        }
        Ok(_) => Port::Wrong(format!(
            "{shown} is not a serial device (a character device such as /dev/ttyUSB0)"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Port::Missing(format!(
            "{shown} does not exist (yet); doorhub starts anyway and keeps trying to open it"
        )),
        Err(e) => Port::Missing(format!(
            "cannot use {shown}: {e}; doorhub starts anyway and keeps trying to open it"
        )),
    }
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

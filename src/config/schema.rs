//! The set of known keys with their types and ranges, checked against the merged raw values
//! before deserialising, so that every unknown key, wrong type and out-of-range number is
//! reported at once (serde would stop at the first) and with a message a technician can act on.

use std::collections::BTreeSet;

use config::{Map, Value, ValueKind};

use super::error::ConfigError;
use super::locate::{KeyPath, Locator};

/// What a key's value must be.
enum Kind {
    /// A string (paths included).
    Str,
    /// `true` or `false`.
    Bool,
    /// A whole number in `min..=max`; `unit` is appended to the range in messages.
    Int {
        min: i64,
        max: i64,
        unit: &'static str,
    },
    /// A whole number out of a short list.
    OneOf(&'static [i64]),
    /// A string out of a short list.
    Enum(&'static [&'static str]),
}

/// One known key.
struct Spec {
    name: &'static str,
    kind: Kind,
    /// Keys without a built-in default must be written in the file (or the environment).
    required: bool,
}

const fn key(name: &'static str, kind: Kind) -> Spec {
    Spec {
        name,
        kind,
        required: false,
    }
}

const fn required(name: &'static str, kind: Kind) -> Spec {
    Spec {
        name,
        kind,
        required: true,
    }
}

const fn int(min: i64, max: i64, unit: &'static str) -> Kind {
    Kind::Int { min, max, unit }
}

/// The allowed serial line speeds.
pub(crate) const BAUDS: &[i64] = &[9600, 19200, 38400, 57600, 115200, 230400];

/// The allowed top-level keys.
const TOP: &[&str] = &[
    "hub", "mqtt", "health", "events", "limits", "log", "bus", "door",
];

const HUB: &[Spec] = &[
    required("id", Kind::Str),
    key("data_dir", Kind::Str),
    key("status_socket", Kind::Str),
];

const MQTT: &[Spec] = &[
    required("url", Kind::Str),
    key("client_id", Kind::Str),
    key("ca_file", Kind::Str),
    key("cert_file", Kind::Str),
    key("key_file", Kind::Str),
    key("username", Kind::Str),
    key("password_file", Kind::Str),
    key("topic_prefix", Kind::Str),
    key("keep_alive_s", int(5, 3600, " seconds")),
    // 16 MiB: far above any real credential set, low enough to bound the hub's memory.
    key("max_payload", int(1024, 16 * 1024 * 1024, " bytes")),
    key("allow_plaintext", Kind::Bool),
];

const HEALTH: &[Spec] = &[key("interval_s", int(1, 86_400, " seconds"))];

const EVENTS: &[Spec] = &[key("max_queued", int(1, 10_000_000, " events"))];

const LIMITS: &[Spec] = &[
    key("credentials_per_door", int(1, 1_000_000, "")),
    key("unconfigured_doors", int(0, 10_000, " doors")),
];

const LOG: &[Spec] = &[key(
    "level",
    Kind::Enum(&["error", "warn", "info", "debug", "trace"]),
)];

const BUS: &[Spec] = &[
    required("name", Kind::Str),
    required("port", Kind::Str),
    key("baud", Kind::OneOf(BAUDS)),
    key("offline_after", int(1, 100, " missed replies")),
    key("vendor_code", Kind::Str),
    key("max_file_bytes", int(128, 65_536, " bytes")),
    key("verify_interval_s", int(10, 86_400, " seconds")),
];

const DOOR: &[Spec] = &[
    required("id", Kind::Str),
    required("bus", Kind::Str),
    // 127 (0x7F) is OSDP's broadcast address, so no reader may have it.
    required("address", int(0, 126, "")),
    required("mode", Kind::Enum(&["stored", "hub"])),
    key("scbk_file", Kind::Str),
    key("install_key", Kind::Bool),
    key("strike_output", int(0, 255, "")),
    // osdp_OUT's timer counts 100 ms units in a u16, but a strike held past 25.5 s is a mistake.
    key("strike_ms", int(100, 25_500, " ms")),
];

/// The single-table sections, in file order.
pub(crate) const SECTIONS: &[&str] = &["hub", "mqtt", "health", "events", "limits", "log"];

fn section_specs(name: &str) -> &'static [Spec] {
    match name {
        "hub" => HUB,
        "mqtt" => MQTT,
        "health" => HEALTH,
        "events" => EVENTS,
        "log" => LOG,
        _ => LIMITS,
    }
}

/// Checks the merged values against the known keys, reporting every problem. Unknown keys are
/// removed (so the rest still deserialises); entries (`hub`, `door[1]`, `bus`...) with any other
/// problem are returned so the caller skips them rather than report them twice.
pub(crate) fn check(
    map: &mut Map<String, Value>,
    loc: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> BTreeSet<String> {
    let mut bad = BTreeSet::new();
    remove_unknown(map, TOP, &KeyPath::default(), loc, errors);

    for &name in SECTIONS {
        let path = KeyPath::top(name);
        let ok = match map.get_mut(name).map(|v| &mut v.kind) {
            Some(ValueKind::Table(table)) => {
                check_table(table, section_specs(name), &path, loc, errors)
            }
            // The built-in defaults always give each section, so this is a value in its place.
            Some(other) => {
                let found = describe(other);
                errors.push(loc.error(
                    &path,
                    format!("expected a table, written [{name}], found {found}"),
                ));
                false
            }
            None => true,
        };
        if !ok {
            bad.insert(path.to_string());
        }
    }

    for (name, specs) in [("bus", BUS), ("door", DOOR)] {
        let path = KeyPath::top(name);
        match map.get_mut(name).map(|v| &mut v.kind) {
            Some(ValueKind::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let path = path.index(i);
                    let ok = match &mut item.kind {
                        ValueKind::Table(table) => check_table(table, specs, &path, loc, errors),
                        other => {
                            let found = describe(other);
                            errors
                                .push(loc.error(&path, format!("expected a table, found {found}")));
                            false
                        }
                    };
                    if !ok {
                        bad.insert(path.to_string());
                    }
                }
            }
            Some(other) => {
                let found = describe(other);
                errors.push(loc.error(
                    &path,
                    format!(
                        "expected a list of tables, each starting with a [[{name}]] line, found {found}"
                    ),
                ));
                bad.insert(path.to_string());
            }
            None => {}
        }
    }
    bad
}

/// Reports and removes keys not in `allowed`, in name order so the report is stable.
fn remove_unknown(
    table: &mut Map<String, Value>,
    allowed: &[&str],
    path: &KeyPath,
    loc: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    let mut unknown: Vec<String> = table
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .cloned()
        .collect();
    unknown.sort();
    for k in unknown {
        table.remove(&k);
        let key = if *path == KeyPath::default() {
            KeyPath::top(&k)
        } else {
            path.key(&k)
        };
        let hint = allowed
            .iter()
            // Close enough to be a typo, but not so loose that short keys match anything.
            .find(|a| {
                let d = edit_distance(a, &k);
                d <= 2 && d * 3 <= a.len()
            })
            .map(|a| format!("did you mean `{a}`? "))
            .unwrap_or_default();
        errors.push(loc.error(
            &key,
            format!(
                "unknown key; {hint}allowed keys are: {}",
                allowed.join(", ")
            ),
        ));
    }
}

/// Levenshtein distance, to suggest the key a typo was meant to be.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            // Both rows are b.len() + 1 long and j < b.len(), so every index is in bounds.
            let replace = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = replace.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Checks one table; true when nothing but unknown keys was wrong.
fn check_table(
    table: &mut Map<String, Value>,
    specs: &[Spec],
    path: &KeyPath,
    loc: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> bool {
    let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
    remove_unknown(table, &names, path, loc, errors);
    let mut clean = true;
    for spec in specs {
        let key = path.key(spec.name);
        match table.get(spec.name) {
            None if spec.required => {
                errors.push(loc.error(&key, "this key is required but missing"));
                clean = false;
            }
            None => {}
            Some(value) => {
                if let Err(message) = check_kind(&spec.kind, &value.kind) {
                    errors.push(loc.error(&key, message));
                    clean = false;
                }
            }
        }
    }
    clean
}

fn check_kind(kind: &Kind, value: &ValueKind) -> Result<(), String> {
    match kind {
        Kind::Str => match value {
            ValueKind::String(_) => Ok(()),
            other => Err(format!(
                "expected a string (in double quotes), found {}",
                describe(other)
            )),
        },
        Kind::Bool => match value {
            ValueKind::Boolean(_) => Ok(()),
            other => Err(format!("expected true or false, found {}", describe(other))),
        },
        Kind::Int { min, max, unit } => {
            let n = integer(value)?;
            if (i128::from(*min)..=i128::from(*max)).contains(&n) {
                Ok(())
            } else {
                Err(format!("{n} is out of range; allowed {min}..={max}{unit}"))
            }
        }
        Kind::OneOf(allowed) => {
            let n = integer(value)?;
            if allowed.iter().any(|&a| i128::from(a) == n) {
                Ok(())
            } else {
                let list: Vec<String> = allowed.iter().map(i64::to_string).collect();
                Err(format!(
                    "{n} is not allowed; allowed values are {}",
                    list.join(", ")
                ))
            }
        }
        Kind::Enum(allowed) => match value {
            ValueKind::String(s) if allowed.contains(&s.as_str()) => Ok(()),
            ValueKind::String(s) => {
                let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
                Err(format!(
                    "unknown value {s:?}; allowed values are {}",
                    list.join(" or ")
                ))
            }
            other => Err(format!(
                "expected a string (in double quotes), found {}",
                describe(other)
            )),
        },
    }
}

fn integer(value: &ValueKind) -> Result<i128, String> {
    match value {
        ValueKind::I64(n) => Ok(i128::from(*n)),
        ValueKind::U64(n) => Ok(i128::from(*n)),
        ValueKind::I128(n) => Ok(*n),
        // Only values past i128 land here; saturate, they are out of every range anyway.
        ValueKind::U128(n) => Ok(i128::try_from(*n).unwrap_or(i128::MAX)),
        other => Err(format!(
            "expected a whole number (no quotes), found {}",
            describe(other)
        )),
    }
}

/// Names a value for a message. Values in the configuration are never secrets (those live in
/// files whose contents are never shown), so strings are quoted as written.
fn describe(value: &ValueKind) -> String {
    match value {
        ValueKind::Nil => "nothing".to_owned(),
        ValueKind::Boolean(b) => b.to_string(),
        ValueKind::I64(n) => format!("the number {n}"),
        ValueKind::U64(n) => format!("the number {n}"),
        ValueKind::I128(n) => format!("the number {n}"),
        ValueKind::U128(n) => format!("the number {n}"),
        ValueKind::Float(f) => format!("the number {f}"),
        ValueKind::String(s) => format!("the string {s:?}"),
        ValueKind::Table(_) => "a table".to_owned(),
        ValueKind::Array(_) => "a list".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("adress", "address"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("baud", "baud"), 0);
        assert_eq!(edit_distance("port", "bus"), 4);
    }
}

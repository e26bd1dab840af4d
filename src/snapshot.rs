//! Desired snapshots: parsing and validating one part as the cloud publishes it, the checks that
//! span a whole version, and the set digest both sides compute.
//!
//! Everything here is pure: no I/O, no clock. The rules are `cloud.md` ("Cloud to hub") and
//! `reader-link.md` ("Set digest").

use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Largest version the contract allows: 2^53 - 1, safe in JavaScript.
pub const MAX_VERSION: u64 = (1 << 53) - 1;
/// Most parts one version may be split into.
pub const MAX_PARTS: u64 = 1024;
/// Longest card in bits.
pub const MAX_BITS: u64 = 128;
/// Longest credential id in characters.
pub const MAX_ID_CHARS: usize = 64;

/// One credential of a door's desired set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The cloud's name for it; events report it.
    pub id: String,
    /// Number of bits on the card, 1..=128.
    pub bits: u8,
    /// The bits, most significant first, left-justified, padding bits zero.
    pub data: Vec<u8>,
    /// Unix seconds before which it is not valid; 0 means no limit.
    pub not_before: u32,
    /// Unix seconds after which it is not valid; 0 means no limit.
    pub not_after: u32,
}

impl Credential {
    /// The entry's encoding on the reader link: bits, data, not_before, not_after (little-endian).
    pub fn encode_entry(&self, out: &mut Vec<u8>) {
        out.push(self.bits);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.not_before.to_le_bytes());
        out.extend_from_slice(&self.not_after.to_le_bytes());
    }

    /// This entry's contribution to the set digest.
    pub fn digest(&self) -> SetDigest {
        let mut entry = Vec::with_capacity(9 + self.data.len());
        self.encode_entry(&mut entry);
        let hash = Sha256::digest(&entry);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        SetDigest(first)
    }
}

/// The order-independent digest of a credential set (`reader-link.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetDigest(pub [u8; 8]);

impl SetDigest {
    /// The digest of a whole set: XOR of its entries' digests; the empty set's is zero.
    pub fn of<'a>(set: impl IntoIterator<Item = &'a Credential>) -> SetDigest {
        set.into_iter()
            .fold(SetDigest::default(), |acc, c| acc.xor(c.digest()))
    }

    /// Adds or removes one entry (XOR is its own inverse).
    pub fn xor(self, other: SetDigest) -> SetDigest {
        let mut out = self.0;
        for (o, b) in out.iter_mut().zip(other.0) {
            *o ^= b;
        }
        SetDigest(out)
    }
}

impl fmt::Display for SetDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One validated part of a desired snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The snapshot's version.
    pub version: u64,
    /// This part's index.
    pub part: u16,
    /// How many parts the version has.
    pub parts: u16,
    /// This part's credentials.
    pub credentials: Vec<Credential>,
}

impl Part {
    /// A hash of the part's content, to tell a redelivery from a changed republish.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.version.to_le_bytes());
        h.update(self.part.to_le_bytes());
        h.update(self.parts.to_le_bytes());
        let mut entry = Vec::new();
        for c in &self.credentials {
            entry.clear();
            // The id's length first, so that ids and entries cannot run into each other.
            entry.extend_from_slice(&(c.id.len() as u32).to_le_bytes());
            entry.extend_from_slice(c.id.as_bytes());
            c.encode_entry(&mut entry);
            h.update(&entry);
        }
        h.finalize().into()
    }
}

/// Why a snapshot (or one part of it) was rejected. The text is what `reported.error.reason` says:
/// the field, by its path in the payload, and the contract's rule for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Over `mqtt.max_payload`.
    #[error("payload is {size} bytes, over mqtt.max_payload ({max})")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Not JSON.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// A field missing, of the wrong type, or outside its rule.
    #[error("{field}: {rule}")]
    Field {
        /// Where, e.g. `version` or `credentials[3].bits (id "kc-8f3a91")`.
        field: String,
        /// The contract's rule, and what the payload has instead.
        rule: String,
    },
    /// The topic's part level is not a plain decimal number.
    #[error("part level {0:?} in the topic is not a decimal number without leading zeros")]
    PartLevel(String),
    /// Two credentials of one version share an id.
    #[error("duplicate credential id {0:?}")]
    DuplicateId(String),
    /// Two credentials of one version are the same card.
    #[error("duplicate card ({bits} bits, data {data}) in credentials {first:?} and {second:?}")]
    DuplicateCard {
        /// Card length.
        bits: u8,
        /// Card bits in hex.
        data: String,
        /// The first credential's id.
        first: String,
        /// The second credential's id.
        second: String,
    },
    /// More credentials than `limits.credentials_per_door`.
    #[error("{count} credentials exceed limits.credentials_per_door ({max})")]
    TooMany {
        /// How many the version has (so far).
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// The same version arrived again with different content.
    #[error("version {0} arrived again with different content")]
    ContentChanged(u64),
}

impl SnapshotError {
    fn field(field: impl Into<String>, rule: impl Into<String>) -> SnapshotError {
        SnapshotError::Field {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// A rejection, with the version when the payload's version could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The payload's version, if it could be read.
    pub version: Option<u64>,
    /// Why.
    pub error: SnapshotError,
}

/// Limits that come from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `mqtt.max_payload`.
    pub max_payload: usize,
    /// `limits.credentials_per_door`.
    pub credentials_per_door: usize,
}

/// Where a value sits in the payload, which decides how an object or an array there is read.
/// Arrays and objects where the contract wants a single value are skipped unread, and credentials
/// are checked as they are read, stopping at the first invalid one or at the limit: a hostile
/// payload costs no more memory than the credentials it may carry.
#[derive(Clone, Copy)]
enum At {
    /// A field that holds one value.
    Field,
    /// The payload itself; `limit` is `limits.credentials_per_door`.
    Payload { limit: usize },
    /// The `credentials` array.
    Credentials { limit: usize },
    /// `credentials[index]`.
    Credential { index: usize },
}

/// A value of the payload, as read at its place.
enum Json {
    Null,
    Bool(bool),
    UInt(u64),
    Int(i64),
    Float(f64),
    String(String),
    /// An array, skipped.
    Array,
    /// An object, skipped.
    Object,
    /// The payload's object.
    Part(Box<RawPart>),
    /// The `credentials` array.
    Credentials(CredentialList),
    /// One credential, checked.
    Credential(Result<Credential, SnapshotError>),
}

impl fmt::Display for Json {
    /// What a value is, for "must be ..., not {this}": numbers and literals as they are, other
    /// values by their kind (a string's content may be long or hostile).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::UInt(n) => write!(f, "{n}"),
            Json::Int(n) => write!(f, "{n}"),
            Json::Float(x) => write!(f, "{x:?}"),
            Json::String(_) => f.write_str("a string"),
            Json::Array | Json::Credentials(_) => f.write_str("an array"),
            Json::Object | Json::Part(_) | Json::Credential(_) => f.write_str("an object"),
        }
    }
}

/// A field of an object as given.
#[derive(Default)]
enum Given {
    #[default]
    Absent,
    Once(Json),
    Twice,
}

impl Given {
    fn set(&mut self, value: Json) {
        *self = match self {
            Given::Absent => Given::Once(value),
            _ => Given::Twice,
        };
    }

    /// The value, `None` when absent; a field given twice breaks the rule, at `field`.
    fn value(self, field: impl FnOnce() -> String) -> Result<Option<Json>, SnapshotError> {
        match self {
            Given::Absent => Ok(None),
            Given::Once(v) => Ok(Some(v)),
            Given::Twice => Err(SnapshotError::field(field(), "must be given only once")),
        }
    }
}

/// The payload's fields that the contract names; others are skipped unread.
#[derive(Default)]
struct RawPart {
    version: Given,
    part: Given,
    parts: Given,
    credentials: Given,
}

/// A credential's fields that the contract names.
#[derive(Default)]
struct RawCredential {
    id: Given,
    bits: Given,
    data: Given,
    not_before: Given,
    not_after: Given,
}

/// What was read of the `credentials` array.
struct CredentialList {
    /// The valid credentials, in order, up to the first invalid one or the limit.
    valid: Vec<Credential>,
    /// Why the first invalid credential is invalid.
    invalid: Option<SnapshotError>,
    /// How many elements the array has.
    total: usize,
}

impl<'de> DeserializeSeed<'de> for At {
    type Value = Json;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for At {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::UInt(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Int(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let At::Credentials { limit } = self else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Json::Array);
        };
        let mut list = CredentialList {
            valid: Vec::new(),
            invalid: None,
            total: 0,
        };
        loop {
            if list.total < limit && list.invalid.is_none() {
                let index = list.total;
                let Some(item) = seq.next_element_seed(At::Credential { index })? else {
                    break;
                };
                match item {
                    Json::Credential(Ok(c)) => list.valid.push(c),
                    Json::Credential(Err(e)) => list.invalid = Some(e),
                    other => {
                        let rule = must_be("an object", Some(&other));
                        list.invalid =
                            Some(SnapshotError::field(format!("credentials[{index}]"), rule));
                    }
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            list.total += 1;
        }
        Ok(Json::Credentials(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        match self {
            At::Payload { limit } => {
                let mut p = RawPart::default();
                let names = &["version", "part", "parts", "credentials"];
                while let Some(key) = map.next_key_seed(Key(names))? {
                    let (field, at) = match key {
                        Some(0) => (&mut p.version, At::Field),
                        Some(1) => (&mut p.part, At::Field),
                        Some(2) => (&mut p.parts, At::Field),
                        Some(3) => (&mut p.credentials, At::Credentials { limit }),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    field.set(map.next_value_seed(at)?);
                }
                Ok(Json::Part(Box::new(p)))
            }
            At::Credential { index } => {
                let mut c = RawCredential::default();
                let names = &["id", "bits", "data", "not_before", "not_after"];
                while let Some(key) = map.next_key_seed(Key(names))? {
                    let field = match key {
                        Some(0) => &mut c.id,
                        Some(1) => &mut c.bits,
                        Some(2) => &mut c.data,
                        Some(3) => &mut c.not_before,
                        Some(4) => &mut c.not_after,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    field.set(map.next_value_seed(At::Field)?);
                }
                Ok(Json::Credential(parse_credential(index, c)))
            }
            At::Field | At::Credentials { .. } => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Json::Object)
            }
        }
    }
}

/// An object's key, as its index in the names the contract gives the object's fields (`None` for
/// a field it does not name), read without allocating.
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|name| *name == key))
    }
}

/// Reads a payload as the value at `at`, to its end.
fn read(payload: &[u8], at: At) -> Result<Json, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let json = at.deserialize(&mut de)?;
    de.end()?;
    Ok(json)
}

/// `must be {expected}, not {what it is}`.
fn must_be(expected: &str, got: Option<&Json>) -> String {
    match got {
        Some(v) => format!("must be {expected}, not {v}"),
        None => format!("must be {expected}, and is missing"),
    }
}

/// An integer in `range`, or the rule it breaks.
fn integer(got: Option<Json>, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    match got {
        Some(Json::UInt(n)) if range.contains(&n) => Ok(n),
        _ => {
            let expected = format!("an integer in {}..={}", range.start(), range.end());
            Err(must_be(&expected, got.as_ref()))
        }
    }
}

/// The payload's version, if it was given once and is valid.
fn version_of(p: &RawPart) -> Option<u64> {
    match p.version {
        Given::Once(Json::UInt(v)) if (1..=MAX_VERSION).contains(&v) => Some(v),
        _ => None,
    }
}

/// Parses a topic's part level: a decimal number without leading zeros.
pub fn parse_part_level(level: &str) -> Result<u64, SnapshotError> {
    let bad = || SnapshotError::PartLevel(level.chars().take(32).collect());
    if level.is_empty()
        || level.len() > 19
        || !level.bytes().all(|b| b.is_ascii_digit())
        || (level.len() > 1 && level.starts_with('0'))
    {
        return Err(bad());
    }
    level.parse().map_err(|_| bad())
}

/// Reads just the version from a payload that failed validation, for the error report.
pub fn read_version(payload: &[u8]) -> Option<u64> {
    match read(payload, At::Payload { limit: 0 }).ok()? {
        Json::Part(p) => version_of(&p),
        _ => None,
    }
}

/// Parses and validates one part received on the part level `topic_part`. Fields are checked in
/// the order `version`, `part` (against the topic), `parts`, `part` against `parts`,
/// `credentials`, its length against the limit, each credential in list order, then duplicates
/// within the part.
pub fn parse_part(payload: &[u8], topic_part: u64, limits: Limits) -> Result<Part, Rejection> {
    if payload.len() > limits.max_payload {
        return Err(Rejection {
            version: None,
            error: SnapshotError::TooLarge {
                size: payload.len(),
                max: limits.max_payload,
            },
        });
    }
    let limit = limits.credentials_per_door;
    let json = read(payload, At::Payload { limit }).map_err(|e| Rejection {
        version: None,
        error: SnapshotError::Json(e.to_string()),
    })?;
    let Json::Part(p) = json else {
        return Err(Rejection {
            version: None,
            error: SnapshotError::field("payload", must_be("a JSON object", Some(&json))),
        });
    };
    let version = version_of(&p);
    check_part(*p, topic_part, limit).map_err(|error| Rejection { version, error })
}

fn check_part(p: RawPart, topic_part: u64, limit: usize) -> Result<Part, SnapshotError> {
    let field = |name: &'static str, r| SnapshotError::field(name, r);
    let version = p.version.value(|| "version".into())?;
    let version = integer(version, 1..=MAX_VERSION).map_err(|r| field("version", r))?;
    let part = p.part.value(|| "part".into())?;
    let part = integer(part, 0..=MAX_PARTS - 1).map_err(|r| field("part", r))?;
    if part != topic_part {
        let rule = format!("must match part {topic_part} in the topic, not {part}");
        return Err(field("part", rule));
    }
    let parts = p.parts.value(|| "parts".into())?;
    let parts = integer(parts, 1..=MAX_PARTS).map_err(|r| field("parts", r))?;
    if part >= parts {
        return Err(field(
            "part",
            format!("must be below parts ({parts}), not {part}"),
        ));
    }
    let list = match p.credentials.value(|| "credentials".into())? {
        Some(Json::Credentials(list)) => list,
        other => {
            let rule = must_be("an array of credentials", other.as_ref());
            return Err(field("credentials", rule));
        }
    };
    if list.total > limit {
        return Err(SnapshotError::TooMany {
            count: list.total,
            max: limit,
        });
    }
    if let Some(e) = list.invalid {
        return Err(e);
    }
    check_unique(list.valid.iter())?;
    // Both bounds were checked above against MAX_PARTS, which fits in u16.
    Ok(Part {
        version,
        part: part as u16,
        parts: parts as u16,
        credentials: list.valid,
    })
}

fn parse_credential(index: usize, c: RawCredential) -> Result<Credential, SnapshotError> {
    let path = |name: &str| format!("credentials[{index}].{name}");
    let id = match c.id.value(|| path("id"))? {
        Some(Json::String(id)) => id,
        other => {
            let id_rule = format!("a string of 1..={MAX_ID_CHARS} characters");
            let rule = must_be(&id_rule, other.as_ref());
            return Err(SnapshotError::field(path("id"), rule));
        }
    };
    let chars = id.chars().count();
    if !(1..=MAX_ID_CHARS).contains(&chars) {
        return Err(SnapshotError::field(
            path("id"),
            format!("must be 1..={MAX_ID_CHARS} characters, not {chars}"),
        ));
    }
    // The other fields' errors also name the credential.
    let at = |name: &str| format!("{} (id {id:?})", path(name));
    let bad = |name: &str, rule: String| SnapshotError::field(at(name), rule);
    let bits = c.bits.value(|| at("bits"))?;
    let bits = integer(bits, 1..=MAX_BITS).map_err(|r| bad("bits", r))?;
    let want = bits.div_ceil(8) as usize;
    let data = match c.data.value(|| at("data"))? {
        Some(Json::String(hex)) => hex,
        other => {
            let rule = must_be("a string of hex digits", other.as_ref());
            return Err(bad("data", rule));
        }
    };
    let data = hex::decode(data).map_err(|_| {
        let rule = "must be hex digits (0-9, a-f or A-F), two per byte";
        bad("data", rule.to_owned())
    })?;
    if data.len() != want {
        let rule = format!(
            "must be exactly {want} bytes ({} hex digits) for {bits} bits, not {} bytes",
            want * 2,
            data.len()
        );
        return Err(bad("data", rule));
    }
    let pad = (want * 8) as u64 - bits;
    if pad > 0 && data[want - 1] & ((1u8 << pad) - 1) != 0 {
        let rule = "must have its padding bits after the last card bit zero";
        return Err(bad("data", rule.to_owned()));
    }
    let not_before = c.not_before.value(|| at("not_before"))?;
    let not_before = parse_time(not_before).map_err(|r| bad("not_before", r))?;
    let not_after = c.not_after.value(|| at("not_after"))?;
    let not_after = parse_time(not_after).map_err(|r| bad("not_after", r))?;
    if not_before != 0 && not_after != 0 && not_after < not_before {
        return Err(bad("not_after", "must not be before not_before".to_owned()));
    }
    Ok(Credential {
        id,
        // At most MAX_BITS (128), checked above.
        bits: bits as u8,
        data,
        not_before,
        not_after,
    })
}

/// The times a reader can hold (u32 unix seconds, reader-link.md), in RFC 3339 UTC.
const TIME_RULE: &str =
    "an RFC 3339 UTC timestamp from 1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z";

/// An optional time: absent or null is 0 (no limit).
fn parse_time(json: Option<Json>) -> Result<u32, String> {
    let text = match json {
        None | Some(Json::Null) => return Ok(0),
        Some(Json::String(text)) => text,
        other => return Err(must_be(&format!("{TIME_RULE}, or null"), other.as_ref())),
    };
    humantime::parse_rfc3339(&text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| u32::try_from(d.as_secs()).ok())
        .ok_or_else(|| format!("must be {TIME_RULE}"))
}

/// Checks that no two credentials share an id or a card.
pub fn check_unique<'a>(
    credentials: impl Iterator<Item = &'a Credential>,
) -> Result<(), SnapshotError> {
    let (lower, _) = credentials.size_hint();
    let mut ids: HashMap<&str, ()> = HashMap::with_capacity(lower);
    let mut cards: HashMap<(u8, &[u8]), &str> = HashMap::with_capacity(lower);
    for c in credentials {
        if ids.insert(c.id.as_str(), ()).is_some() {
            return Err(SnapshotError::DuplicateId(c.id.clone()));
        }
        if let Some(first) = cards.insert((c.bits, c.data.as_slice()), c.id.as_str()) {
            return Err(SnapshotError::DuplicateCard {
                bits: c.bits,
                data: hex::encode(&c.data),
                first: first.to_owned(),
                second: c.id.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_payload: 262_144,
        credentials_per_door: 100_000,
    };

    fn parse(json: &str, part: u64) -> Result<Part, Rejection> {
        parse_part(json.as_bytes(), part, LIMITS)
    }

    fn reason(json: &str, part: u64) -> SnapshotError {
        parse(json, part).expect_err("should be rejected").error
    }

    #[test]
    fn parses_the_spec_example() {
        let p = parse(
            r#"{"version": 1042, "part": 0, "parts": 1, "extra": true,
             "credentials": [
               {"id": "kc-8f3a91", "bits": 26, "data": "bd88eb80",
                "not_before": "2026-11-01T00:00:00Z", "not_after": "2027-11-01T00:00:00Z"},
               {"id": "kc-2b1077", "bits": 37, "data": "0A1B2C3D40"}]}"#,
            0,
        )
        .expect("valid");
        assert_eq!(p.version, 1042);
        assert_eq!(p.credentials.len(), 2);
        assert_eq!(p.credentials[0].data, vec![0xbd, 0x88, 0xeb, 0x80]);
        assert_eq!(p.credentials[0].not_before, 1_793_491_200);
        assert_eq!(p.credentials[1].data, vec![0x0a, 0x1b, 0x2c, 0x3d, 0x40]);
        assert_eq!(p.credentials[1].not_after, 0);
    }

    #[test]
    fn rejects_each_bad_field() {
        let cases: &[(&str, u64, &str)] = &[
            ("{not json", 0, "malformed JSON"),
            ("[1,2]", 0, "payload: must be a JSON object, not an array"),
            (
                r#"{"part":0,"parts":1,"credentials":[]}"#,
                0,
                "version: must be an integer in 1..=9007199254740991, and is missing",
            ),
            (
                r#"{"version":"7","part":0,"parts":1,"credentials":[]}"#,
                0,
                "version: must be an integer in 1..=9007199254740991, not a string",
            ),
            (
                r#"{"version":0,"part":0,"parts":1,"credentials":[]}"#,
                0,
                "version: must be an integer in 1..=9007199254740991, not 0",
            ),
            (
                r#"{"version":9007199254740992,"part":0,"parts":1,"credentials":[]}"#,
                0,
                "not 9007199254740992",
            ),
            (
                r#"{"version":1,"part":1,"parts":2,"credentials":[]}"#,
                0,
                "part: must match part 0 in the topic, not 1",
            ),
            (
                r#"{"version":1,"part":2,"parts":2,"credentials":[]}"#,
                2,
                "part: must be below parts (2), not 2",
            ),
            (
                r#"{"version":1,"part":0,"parts":1025,"credentials":[]}"#,
                0,
                "parts: must be an integer in 1..=1024, not 1025",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":26,"data":"zz88eb80"}]}"#,
                0,
                "credentials[0].data (id \"a\"): must be hex digits",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":26,"data":"bd88eb"}]}"#,
                0,
                "must be exactly 4 bytes (8 hex digits) for 26 bits, not 3 bytes",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":26,"data":"bd88eb81"}]}"#,
                0,
                "padding bits after the last card bit zero",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":0,"data":""}]}"#,
                0,
                "credentials[0].bits (id \"a\"): must be an integer in 1..=128, not 0",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":129,"data":""}]}"#,
                0,
                "must be an integer in 1..=128, not 129",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"","bits":8,"data":"01"}]}"#,
                0,
                "credentials[0].id: must be 1..=64 characters, not 0",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":8,"data":"01","not_after":"tomorrow"}]}"#,
                0,
                "credentials[0].not_after (id \"a\"): must be an RFC 3339 UTC timestamp",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":8,"data":"01"},{"id":"a","bits":8,"data":"02"}]}"#,
                0,
                "duplicate credential id",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":8,"data":"01"},{"id":"b","bits":8,"data":"01"}]}"#,
                0,
                "duplicate card",
            ),
        ];
        for (json, part, want) in cases {
            let got = reason(json, *part).to_string();
            assert!(got.contains(want), "{json}: {got:?} lacks {want:?}");
        }
    }

    #[test]
    fn rejection_carries_the_version_when_readable() {
        let r = parse(r#"{"version":7,"part":3,"parts":2,"credentials":[]}"#, 3).unwrap_err();
        assert_eq!(r.version, Some(7));
        let r = parse(r#"{"version":7,"part":0,"parts":1}"#, 0).unwrap_err();
        assert_eq!(r.version, Some(7));
        let r = parse("garbage", 0).unwrap_err();
        assert_eq!(r.version, None);
    }

    #[test]
    fn limits_apply() {
        let small = Limits {
            max_payload: 10,
            credentials_per_door: 1,
        };
        let json = br#"{"version":1,"part":0,"parts":1,"credentials":[]}"#;
        assert!(matches!(
            parse_part(json, 0, small).unwrap_err().error,
            SnapshotError::TooLarge { .. }
        ));
        let small = Limits {
            max_payload: 1000,
            credentials_per_door: 1,
        };
        let json = br#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":8,"data":"01"},{"id":"b","bits":8,"data":"02"}]}"#;
        assert!(matches!(
            parse_part(json, 0, small).unwrap_err().error,
            SnapshotError::TooMany { count: 2, max: 1 }
        ));
    }

    #[test]
    fn part_levels() {
        assert_eq!(parse_part_level("0"), Ok(0));
        assert_eq!(parse_part_level("17"), Ok(17));
        for bad in ["", "01", "+1", "-1", "1a", " 1", "99999999999999999999"] {
            assert!(parse_part_level(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digest_is_order_independent_and_incremental() {
        let a = Credential {
            id: "a".into(),
            bits: 26,
            data: vec![0xbd, 0x88, 0xeb, 0x80],
            not_before: 0,
            not_after: 0,
        };
        let b = Credential {
            id: "b".into(),
            bits: 8,
            data: vec![1],
            not_before: 5,
            not_after: 0,
        };
        assert_eq!(SetDigest::of([]).to_string(), "0000000000000000");
        let ab = SetDigest::of([&a, &b]);
        assert_eq!(ab, SetDigest::of([&b, &a]));
        assert_eq!(ab.xor(b.digest()), SetDigest::of([&a]));
        // The first 8 bytes of SHA-256(1a bd 88 eb 80 00000000 00000000), independently computed.
        let mut entry = Vec::new();
        a.encode_entry(&mut entry);
        assert_eq!(hex::encode(&entry), "1abd88eb800000000000000000");
        assert_eq!(
            a.digest().to_string(),
            hex::encode(&Sha256::digest(&entry)[..8])
        );
        // The id does not count: the reader never sees it.
        let renamed = Credential {
            id: "z".into(),
            ..a.clone()
        };
        assert_eq!(renamed.digest(), a.digest());
    }

    #[test]
    fn content_hash_tells_changes() {
        let p = parse(
            r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":8,"data":"01"}]}"#,
            0,
        )
        .unwrap();
        let same = parse(
            r#"{"parts":1,"version":1,"part":0, "credentials":[{"data":"01","bits":8,"id":"a"}]}"#,
            0,
        )
        .unwrap();
        let renamed = parse(
            r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"b","bits":8,"data":"01"}]}"#,
            0,
        )
        .unwrap();
        assert_eq!(p.content_hash(), same.content_hash());
        assert_ne!(p.content_hash(), renamed.content_hash());
    }
}

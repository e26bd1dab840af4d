//! Desired snapshots: parsing and validating one part as the cloud publishes it, the checks that
//! span a whole version, and the set digest both sides compute.
//!
//! Everything here is pure: no I/O, no clock. The rules are `cloud.md` ("Cloud to hub") and
//! `reader-link.md` ("Set digest").

use std::collections::HashMap;
use std::fmt;

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

/// Why a snapshot (or one part of it) was rejected. The text is what `reported.error.reason` says.
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
    /// Not JSON, or not an object.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// Valid JSON with a field missing or of the wrong type.
    #[error("bad field: {0}")]
    Field(String),
    /// `version` outside 1..=2^53-1.
    #[error("version {0} is out of range 1..=9007199254740991")]
    VersionRange(u64),
    /// `parts` outside 1..=1024.
    #[error("parts {0} is out of range 1..=1024")]
    PartsRange(u64),
    /// `part >= parts`.
    #[error("part {part} is not below parts {parts}")]
    PartRange {
        /// The part index.
        part: u64,
        /// The part count.
        parts: u64,
    },
    /// The payload's `part` is not the topic's.
    #[error("part {payload} in the payload does not match part {topic} in the topic")]
    PartMismatch {
        /// The payload's `part`.
        payload: u64,
        /// The topic's part level.
        topic: u64,
    },
    /// The topic's part level is not a plain decimal number.
    #[error("part level {0:?} in the topic is not a decimal number without leading zeros")]
    PartLevel(String),
    /// One credential is invalid.
    #[error("credential {index} ({id:?}): {reason}")]
    Credential {
        /// Position in the part's list.
        index: usize,
        /// Its id as given (possibly empty).
        id: String,
        /// What is wrong.
        reason: String,
    },
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

#[derive(Deserialize)]
struct RawPart {
    version: u64,
    part: u64,
    parts: u64,
    credentials: Vec<RawCredential>,
}

#[derive(Deserialize)]
struct RawCredential {
    id: String,
    bits: u64,
    data: String,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default)]
    not_after: Option<String>,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
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
    serde_json::from_slice::<VersionOnly>(payload)
        .ok()
        .map(|v| v.version)
        .filter(|v| (1..=MAX_VERSION).contains(v))
}

/// Parses and validates one part received on the part level `topic_part`.
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
    let raw: RawPart = serde_json::from_slice(payload).map_err(|e| {
        let error = match e.classify() {
            serde_json::error::Category::Data => SnapshotError::Field(e.to_string()),
            _ => SnapshotError::Json(e.to_string()),
        };
        Rejection {
            version: read_version(payload),
            error,
        }
    })?;
    let version = raw.version;
    let reject = |error| Rejection {
        version: (1..=MAX_VERSION).contains(&version).then_some(version),
        error,
    };
    if !(1..=MAX_VERSION).contains(&version) {
        return Err(reject(SnapshotError::VersionRange(version)));
    }
    if raw.part != topic_part {
        return Err(reject(SnapshotError::PartMismatch {
            payload: raw.part,
            topic: topic_part,
        }));
    }
    if !(1..=MAX_PARTS).contains(&raw.parts) {
        return Err(reject(SnapshotError::PartsRange(raw.parts)));
    }
    if raw.part >= raw.parts {
        return Err(reject(SnapshotError::PartRange {
            part: raw.part,
            parts: raw.parts,
        }));
    }
    if raw.credentials.len() > limits.credentials_per_door {
        return Err(reject(SnapshotError::TooMany {
            count: raw.credentials.len(),
            max: limits.credentials_per_door,
        }));
    }
    let mut credentials = Vec::with_capacity(raw.credentials.len());
    for (index, rc) in raw.credentials.into_iter().enumerate() {
        let c = parse_credential(&rc).map_err(|reason| {
            reject(SnapshotError::Credential {
                index,
                id: rc.id.chars().take(MAX_ID_CHARS).collect(),
                reason,
            })
        })?;
        credentials.push(c);
    }
    check_unique(credentials.iter()).map_err(reject)?;
    // Both bounds were checked above against MAX_PARTS, which fits in u16.
    Ok(Part {
        version,
        part: raw.part as u16,
        parts: raw.parts as u16,
        credentials,
    })
}

fn parse_credential(rc: &RawCredential) -> Result<Credential, String> {
    let id_chars = rc.id.chars().count();
    if !(1..=MAX_ID_CHARS).contains(&id_chars) {
        return Err(format!("id must be 1..={MAX_ID_CHARS} characters"));
    }
    if !(1..=MAX_BITS).contains(&rc.bits) {
        return Err(format!("bits {} is out of range 1..={MAX_BITS}", rc.bits));
    }
    let bits = rc.bits as u8;
    let want = rc.bits.div_ceil(8) as usize;
    let data = hex::decode(&rc.data).map_err(|_| "data is not hex".to_owned())?;
    if data.len() != want {
        return Err(format!(
            "data has {} bytes, {} bits need exactly {want}",
            data.len(),
            rc.bits
        ));
    }
    let pad = (want * 8) as u64 - rc.bits;
    if pad > 0 {
        let mask = (1u8 << pad) - 1;
        if data[want - 1] & mask != 0 {
            return Err("padding bits after the last card bit are not zero".to_owned());
        }
    }
    let not_before = parse_time(rc.not_before.as_deref(), "not_before")?;
    let not_after = parse_time(rc.not_after.as_deref(), "not_after")?;
    if not_before != 0 && not_after != 0 && not_after < not_before {
        return Err("not_after is before not_before".to_owned());
    }
    Ok(Credential {
        id: rc.id.clone(),
        bits,
        data,
        not_before,
        not_after,
    })
}

fn parse_time(text: Option<&str>, field: &str) -> Result<u32, String> {
    let Some(text) = text else { return Ok(0) };
    let t = humantime::parse_rfc3339(text)
        .map_err(|_| format!("{field} is not an RFC 3339 UTC timestamp"))?;
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{field} is before 1970"))?
        .as_secs();
    u32::try_from(secs).map_err(|_| format!("{field} is after 2106-02-07"))
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
            ("[1,2]", 0, "bad field"),
            (
                r#"{"part":0,"parts":1,"credentials":[]}"#,
                0,
                "missing field `version`",
            ),
            (
                r#"{"version":"7","part":0,"parts":1,"credentials":[]}"#,
                0,
                "bad field",
            ),
            (
                r#"{"version":0,"part":0,"parts":1,"credentials":[]}"#,
                0,
                "out of range",
            ),
            (
                r#"{"version":9007199254740992,"part":0,"parts":1,"credentials":[]}"#,
                0,
                "out of range",
            ),
            (
                r#"{"version":1,"part":1,"parts":2,"credentials":[]}"#,
                0,
                "does not match",
            ),
            (
                r#"{"version":1,"part":2,"parts":2,"credentials":[]}"#,
                2,
                "not below",
            ),
            (
                r#"{"version":1,"part":0,"parts":1025,"credentials":[]}"#,
                0,
                "parts 1025",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":26,"data":"zz88eb80"}]}"#,
                0,
                "not hex",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":26,"data":"bd88eb"}]}"#,
                0,
                "exactly 4",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":26,"data":"bd88eb81"}]}"#,
                0,
                "padding",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":0,"data":""}]}"#,
                0,
                "bits 0",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":129,"data":""}]}"#,
                0,
                "bits 129",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"","bits":8,"data":"01"}]}"#,
                0,
                "id must be",
            ),
            (
                r#"{"version":1,"part":0,"parts":1,"credentials":[{"id":"a","bits":8,"data":"01","not_after":"tomorrow"}]}"#,
                0,
                "RFC 3339",
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

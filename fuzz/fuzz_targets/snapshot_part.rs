//! The desired-part parser (`snapshot::parse_part`, with `read_version` and `parse_part_level`)
//! on any payload. Input: the topic's part level as one byte, then the payload.
//!
//! - A part that parses keeps the contract's bounds (version, part, parts, credentials).
//! - Written back as JSON (hex data, RFC 3339 times) it parses to the same part, with the same
//!   content hash.
//! - Stored (`credset::encode`, as the store keeps a door's set), it reads back to the same
//!   credentials in card order.
//! - A rejection carries the payload's version exactly when that version is in range.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use doorhub::credset::{self, SetView};
use doorhub::snapshot::{
    Limits, MAX_BITS, MAX_PARTS, MAX_VERSION, Part, parse_part, parse_part_level, read_version,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// The contract's defaults; the credentials limit is lowered so the fuzzer can reach it.
const LIMITS: Limits = Limits {
    max_payload: 262_144,
    credentials_per_door: 16,
};

fn time(secs: u32) -> Option<String> {
    (secs != 0).then(|| {
        humantime::format_rfc3339(UNIX_EPOCH + Duration::from_secs(secs.into())).to_string()
    })
}

/// The part as the cloud would publish it.
fn to_json(part: &Part) -> Vec<u8> {
    let credentials: Vec<Value> = part
        .credentials
        .iter()
        .map(|c| {
            let mut v = json!({"id": c.id, "bits": c.bits, "data": hex_lower(&c.data)});
            if let Some(t) = time(c.not_before) {
                v["not_before"] = t.into();
            }
            if let Some(t) = time(c.not_after) {
                v["not_after"] = t.into();
            }
            v
        })
        .collect();
    json!({"version": part.version, "part": part.part, "parts": part.parts,
           "credentials": credentials})
    .to_string()
    .into_bytes()
}

fn hex_lower(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|input: &[u8]| {
    let Some((&topic_part, payload)) = input.split_first() else {
        return;
    };
    let topic_part = u64::from(topic_part);
    if let Ok(level) = std::str::from_utf8(payload)
        && let Ok(n) = parse_part_level(level)
    {
        assert_eq!(n.to_string(), level);
    }
    match parse_part(payload, topic_part, LIMITS) {
        Ok(part) => {
            assert!((1..=MAX_VERSION).contains(&part.version));
            assert_eq!(u64::from(part.part), topic_part);
            assert!(part.part < part.parts && u64::from(part.parts) <= MAX_PARTS);
            assert!(part.credentials.len() <= LIMITS.credentials_per_door);
            for c in &part.credentials {
                assert!(c.bits >= 1 && u64::from(c.bits) <= MAX_BITS);
                assert_eq!(c.data.len(), usize::from(c.bits).div_ceil(8));
                assert!((1..=64).contains(&c.id.chars().count()));
            }
            assert_eq!(read_version(payload), Some(part.version));
            let again = parse_part(&to_json(&part), topic_part, LIMITS).expect("re-encoded part");
            assert_eq!(again.content_hash(), part.content_hash());
            assert_eq!(again, part);

            let stored =
                credset::encode(part.version, &part.credentials).expect("a valid part encodes");
            let view = SetView::new(&stored).expect("a stored set reads");
            let mut sorted = part.credentials.clone();
            sorted.sort_by(|a, b| (a.bits, &a.data).cmp(&(b.bits, &b.data)));
            assert_eq!(
                view.to_vec(),
                Ok(sorted),
                "the stored set does not read back"
            );
        }
        Err(rejection) => {
            if let Some(v) = rejection.version {
                assert!((1..=MAX_VERSION).contains(&v));
            }
            assert!(!rejection.error.to_string().is_empty());
        }
    }
});

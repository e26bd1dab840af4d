//! Properties over the whole domain the contract allows for a credential: ids of 1..=64 Unicode
//! scalar values (up to 256 bytes of UTF-8), bits 1..=128 with zero padding, optional validity
//! windows. Each set goes through parsing, the store's encoding, lookups, the set digest, the
//! table files a `stored` reader receives, and a `hub` door's decisions, and each result is
//! compared with what the contract says, computed here.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, UNIX_EPOCH};

use doorhub::credset::{self, SetView};
use doorhub::events::AccessReason;
use doorhub::push::file::{
    DEFAULT_MAX_FILE_BYTES, DELTA, FULL_TABLE, Staging, Table, TableFile, delta_file,
    full_table_files, parse_file,
};
use doorhub::snapshot::{Credential, Limits, SetDigest, parse_part};
use proptest::prelude::*;
use serde_json::json;

const LIMITS: Limits = Limits {
    max_payload: 1 << 20,
    credentials_per_door: 100_000,
};

/// Any id the contract allows, with the longest (64 four-byte characters) drawn often.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 1..=64),
        proptest::collection::vec(proptest::char::range('\u{10000}', '\u{10FFFF}'), 64),
        proptest::collection::vec(proptest::char::range('\u{0}', '\u{7f}'), 1..=64),
    ]
    .prop_map(|chars| chars.into_iter().collect())
}

/// A card: bits 1..=128 and ceil(bits/8) bytes whose padding bits are zero.
fn card() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (1u8..=128).prop_flat_map(|bits| {
        let n = usize::from(bits).div_ceil(8);
        proptest::collection::vec(any::<u8>(), n).prop_map(move |mut data| {
            let pad = n * 8 - usize::from(bits);
            data[n - 1] &= !((1u16 << pad) - 1) as u8;
            (bits, data)
        })
    })
}

/// An optional validity window, `not_before <= not_after` when both are given.
fn window() -> impl Strategy<Value = (Option<u32>, Option<u32>)> {
    (any::<Option<u32>>(), any::<Option<u32>>()).prop_map(|w| match w {
        (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
        w => w,
    })
}

/// A credential, with its window as the payload gives it.
#[derive(Debug, Clone)]
struct Given {
    id: String,
    bits: u8,
    data: Vec<u8>,
    not_before: Option<u32>,
    not_after: Option<u32>,
}

impl Given {
    /// The credential the contract says this is: an absent time is 0, "no limit".
    fn credential(&self) -> Credential {
        Credential {
            id: self.id.clone(),
            bits: self.bits,
            data: self.data.clone(),
            not_before: self.not_before.unwrap_or(0),
            not_after: self.not_after.unwrap_or(0),
        }
    }

    fn json(&self) -> serde_json::Value {
        let time = |t: Option<u32>| {
            t.map(|s| humantime::format_rfc3339(UNIX_EPOCH + Duration::from_secs(s.into())))
                .map(|t| t.to_string())
        };
        let mut c = json!({"id": self.id, "bits": self.bits, "data": hex::encode(&self.data)});
        if let Some(t) = time(self.not_before) {
            c["not_before"] = json!(t);
        }
        if let Some(t) = time(self.not_after) {
            c["not_after"] = json!(t);
        }
        c
    }
}

/// A set as one version may carry it: no id and no card twice.
fn set(max: usize) -> impl Strategy<Value = Vec<Given>> {
    proptest::collection::vec((id(), card(), window()), 0..max).prop_map(|items| {
        let (mut ids, mut cards) = (HashSet::new(), HashSet::new());
        items
            .into_iter()
            .filter(|(id, card, _)| ids.insert(id.clone()) & cards.insert(card.clone()))
            .map(|(id, (bits, data), (not_before, not_after))| Given {
                id,
                bits,
                data,
                not_before,
                not_after,
            })
            .collect()
    })
}

fn credentials(set: &[Given]) -> Vec<Credential> {
    set.iter().map(Given::credential).collect()
}

/// The set sorted by card, as the store and the full table keep it.
fn by_card(set: &[Credential]) -> Vec<Credential> {
    let mut sorted = set.to_vec();
    sorted.sort_by(|a, b| (a.bits, &a.data).cmp(&(b.bits, &b.data)));
    sorted
}

fn without_ids(set: &[Credential]) -> Vec<Credential> {
    set.iter()
        .map(|c| Credential {
            id: String::new(),
            ..c.clone()
        })
        .collect()
}

/// A PD's table after applying `files` (full-table parts) from empty.
fn table_from(files: &[Vec<u8>]) -> Table {
    let mut table = Table::new(None);
    let mut staged = Staging::default();
    for f in files {
        table.apply_file(&mut staged, FULL_TABLE, f).unwrap();
    }
    table
}

/// The contract's digest, from the tests' own implementation of its definition
/// (reader-link.md, "Set digest"), not the daemon's.
fn reference_digest(set: &[Credential]) -> SetDigest {
    let hex = common::hub::digest(set);
    SetDigest(hex::decode(hex).unwrap().try_into().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_payload_parses_to_the_credentials_it_carries(
        set in set(24),
        version in 1u64..=(1 << 53) - 1,
    ) {
        let payload = json!({
            "version": version, "part": 0, "parts": 1,
            "credentials": set.iter().map(Given::json).collect::<Vec<_>>(),
        });
        let part = parse_part(payload.to_string().as_bytes(), 0, LIMITS)
            .map_err(|r| TestCaseError::fail(r.error.to_string()))?;
        prop_assert_eq!(part.version, version);
        prop_assert_eq!(part.credentials, credentials(&set));
    }

    #[test]
    fn the_store_encoding_reads_back_the_same_set_and_finds_every_card(
        set in set(40),
        version in any::<u64>(),
        absent in card(),
    ) {
        let set = credentials(&set);
        let blob = credset::encode(version, &set).unwrap();
        let view = SetView::new(&blob).unwrap();
        prop_assert_eq!(view.version(), version);
        prop_assert_eq!(view.len(), set.len());
        prop_assert_eq!(view.to_vec().unwrap(), by_card(&set));
        prop_assert_eq!(view.digest().unwrap(), reference_digest(&set));
        for c in &set {
            let found = view.lookup(c.bits, &c.data).unwrap().map(|f| f.to_credential());
            prop_assert_eq!(found.as_ref(), Some(c));
        }
        if !set.iter().any(|c| (c.bits, &c.data) == (absent.0, &absent.1)) {
            prop_assert_eq!(view.lookup(absent.0, &absent.1).unwrap(), None);
        }
    }

    #[test]
    fn the_digest_is_order_independent_and_incremental(set in set(40), cut in any::<usize>()) {
        let set = credentials(&set);
        let whole = SetDigest::of(&set);
        prop_assert_eq!(whole, reference_digest(&set));
        let reversed: Vec<_> = set.iter().rev().cloned().collect();
        prop_assert_eq!(SetDigest::of(&reversed), whole);
        let added = set.iter().fold(SetDigest::default(), |d, c| d.xor(c.digest()));
        prop_assert_eq!(added, whole);
        let keep = cut % (set.len() + 1);
        let removed = set[keep..].iter().fold(whole, |d, c| d.xor(c.digest()));
        prop_assert_eq!(removed, SetDigest::of(&set[..keep]));
    }

    #[test]
    fn full_tables_and_deltas_reach_the_reader_as_the_same_entries(
        from in set(60),
        to in set(60),
        versions in (1u64..1 << 40, 1u64..1 << 12),
        max_file_bytes in 64usize..=DEFAULT_MAX_FILE_BYTES,
    ) {
        let (v1, v2) = (versions.0, versions.0 + versions.1);
        let (from, to) = (credentials(&from), credentials(&to));
        let files = full_table_files(v1, &from, max_file_bytes).unwrap();
        let mut entries = Vec::new();
        for f in &files {
            prop_assert!(f.len() <= max_file_bytes);
            let TableFile::Full(part) = parse_file(FULL_TABLE, f).unwrap() else {
                return Err(TestCaseError::fail("not a full-table part"));
            };
            prop_assert_eq!((part.total_count as usize, part.total_digest), (from.len(), reference_digest(&from)));
            entries.extend(part.entries);
        }
        prop_assert_eq!(&entries, &without_ids(&by_card(&from)));
        let mut table = table_from(&files);
        prop_assert_eq!(table.state(), (v1, from.len() as u32, reference_digest(&from)));
        if let Some(delta) = delta_file(v1, v2, &from, &to, max_file_bytes) {
            prop_assert!(delta.len() <= max_file_bytes);
            prop_assert!(matches!(parse_file(DELTA, &delta), Ok(TableFile::Delta(_))));
            table.apply_file(&mut Staging::default(), DELTA, &delta).unwrap();
        } else {
            table = table_from(&full_table_files(v2, &to, max_file_bytes).unwrap());
        }
        prop_assert_eq!(table.state(), (v2, to.len() as u32, reference_digest(&to)));
        let held: Vec<_> = table.entries().cloned().collect();
        prop_assert_eq!(held, without_ids(&by_card(&to)));
    }

    #[test]
    fn a_hub_door_decides_as_the_contract_says(
        set in set(24),
        nows in proptest::collection::vec(any::<u32>(), 4),
        absent in card(),
    ) {
        let set = credentials(&set);
        let blob = credset::encode(1, &set).unwrap();
        let view = SetView::new(&blob).unwrap();
        let by_card: BTreeMap<_, _> = set.iter().map(|c| ((c.bits, c.data.clone()), c)).collect();
        // Each card at random times and at the edges of its window.
        let mut reads: Vec<(u8, Vec<u8>, u64)> = Vec::new();
        for c in &set {
            let edges = [c.not_before, c.not_after].into_iter().flat_map(|t| {
                let t = u64::from(t);
                [t.saturating_sub(1), t, t + 1]
            });
            for now in nows.iter().map(|&n| u64::from(n)).chain(edges) {
                reads.push((c.bits, c.data.clone(), now));
            }
        }
        reads.push((absent.0, absent.1.clone(), u64::from(nows[0])));
        for (bits, data, now) in reads {
            let want = match by_card.get(&(bits, data.clone())) {
                None => (AccessReason::UnknownCard, None),
                Some(c) => {
                    let started = c.not_before == 0 || u64::from(c.not_before) <= now;
                    let ended = c.not_after != 0 && u64::from(c.not_after) < now;
                    let reason = match (started, ended) {
                        (false, _) => AccessReason::NotYetValid,
                        (true, true) => AccessReason::Expired,
                        (true, false) => AccessReason::Ok,
                    };
                    (reason, Some(c.id.as_str()))
                }
            };
            let (reason, found) = credset::decide(&view, bits, &data, now).unwrap();
            prop_assert_eq!((reason, found.map(|c| c.id)), want);
        }
    }
}

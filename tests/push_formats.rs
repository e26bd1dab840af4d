//! The credential-push formats (`reader-link.md`, "Credential push for `stored` doors"): full
//! tables in parts and deltas as the hub builds them and a PD applies them, and the
//! manufacturer-specific messages.

use doorhub::push::file::{
    Applied, DELTA, Delta, FULL_TABLE, FullPart, Key, PushError, Staging, Table, TableFile,
    delta_file, diff, full_table_files, parse_file, removes_any,
};
use doorhub::push::mfg::{self, MfgCommand, MfgReply};
use doorhub::snapshot::{Credential, SetDigest};
use proptest::prelude::*;

/// A valid card of `bits` bits numbered `n` (left-justified, padding zero).
fn card(n: u128, bits: u8, not_before: u32, not_after: u32) -> Credential {
    let len = usize::from(bits).div_ceil(8);
    let pad = len * 8 - usize::from(bits);
    let n = if bits == 128 {
        n
    } else {
        n & ((1u128 << bits) - 1)
    };
    let v = (n << pad).to_be_bytes();
    Credential {
        id: format!("c{n}-{bits}"),
        bits,
        data: v[16 - len..].to_vec(),
        not_before,
        not_after,
    }
}

/// 10,000 credentials of mixed lengths, some with validity, in no particular order.
fn big_set() -> Vec<Credential> {
    (0..10_000u32)
        .rev()
        .map(|i| {
            let bits = [26u8, 37, 48, 128, 34][(i % 5) as usize];
            let nb = if i % 3 == 0 { 1_700_000_000 + i } else { 0 };
            card(u128::from(i) * 2_654_435_761, bits, nb, 0)
        })
        .collect()
}

fn parse_full(bytes: &[u8]) -> FullPart {
    match parse_file(FULL_TABLE, bytes) {
        Ok(TableFile::Full(p)) => p,
        other => panic!("not a full part: {other:?}"),
    }
}

fn parse_delta(bytes: &[u8]) -> Delta {
    match parse_file(DELTA, bytes) {
        Ok(TableFile::Delta(d)) => d,
        other => panic!("not a delta: {other:?}"),
    }
}

/// A PD table loaded with `set` at `version` through full-table files.
fn loaded(version: u64, set: &[Credential]) -> Table {
    let mut t = Table::new(None);
    let mut s = Staging::default();
    for f in full_table_files(version, set, 4096).unwrap() {
        t.apply_full_part(&mut s, parse_full(&f)).unwrap();
    }
    assert_eq!(t.state().0, version);
    t
}

#[test]
fn full_table_of_10000_reassembles_at_both_sizes() {
    let set = big_set();
    let want = SetDigest::of(&set);
    for max in [4096usize, 256, 60] {
        let files = full_table_files(42, &set, max).unwrap();
        assert!(files.iter().all(|f| f.len() <= max), "max {max}");
        let parts = files.len();
        assert!(parts > 1);
        let mut t = Table::new(Some(10_000));
        let mut s = Staging::default();
        let mut prev: Option<(u8, Vec<u8>)> = None;
        for (i, f) in files.iter().enumerate() {
            let p = parse_full(f);
            assert_eq!(
                (p.version, usize::from(p.part), usize::from(p.parts)),
                (42, i, parts)
            );
            assert_eq!((p.total_count, p.total_digest), (10_000, want));
            // Sorted across the whole table: this part starts after the last one ended.
            if let (Some(prev), Some(first)) = (&prev, p.entries.first()) {
                assert!(*prev < (first.bits, first.data.clone()));
            }
            prev = p.entries.last().map(|e| (e.bits, e.data.clone()));
            let r = t.apply_full_part(&mut s, p).unwrap();
            if i + 1 < parts {
                assert_eq!(
                    r,
                    Applied::Staged {
                        held: (i + 1) as u16,
                        parts: parts as u16
                    }
                );
                assert_eq!(t.state().0, 0, "table unchanged until complete");
            } else {
                assert_eq!(r, Applied::Replaced { version: 42 });
            }
        }
        assert_eq!(t.state(), (42, 10_000, want));
        // Every part but the last is full: the next part's first entry would not have fit.
        for w in files.windows(2) {
            let next = &parse_full(&w[1]).entries[0];
            assert!(w[0].len() + 1 + next.data.len() + 8 > max);
        }
    }
}

#[test]
fn parts_in_any_order_and_repeated() {
    let set = big_set();
    let files = full_table_files(9, &set, 1024).unwrap();
    let n = files.len();
    let mut t = Table::new(None);
    let mut s = Staging::default();
    // Odd parts backwards, each twice, then even parts; the last one completes the table.
    let mut order: Vec<usize> = (0..n).filter(|i| i % 2 == 1).rev().collect();
    order.extend(order.clone());
    order.extend((0..n).filter(|i| i % 2 == 0));
    for (k, &i) in order.iter().enumerate() {
        let r = t.apply_full_part(&mut s, parse_full(&files[i])).unwrap();
        if k + 1 == order.len() {
            assert_eq!(r, Applied::Replaced { version: 9 });
        } else {
            assert!(matches!(r, Applied::Staged { .. }));
        }
    }
    assert_eq!(t.state(), (9, 10_000, SetDigest::of(&set)));
    // A repeat of a part after completion stages again but changes nothing.
    let before = t.clone();
    t.apply_full_part(&mut s, parse_full(&files[0])).unwrap();
    assert_eq!(t, before);
}

#[test]
fn a_part_of_another_version_discards_the_staging() {
    let set = big_set();
    let v1 = full_table_files(1, &set, 4096).unwrap();
    let v2 = full_table_files(2, &set[..9_000], 4096).unwrap();
    let mut t = Table::new(None);
    let mut s = Staging::default();
    for f in &v1[..v1.len() - 1] {
        t.apply_full_part(&mut s, parse_full(f)).unwrap();
    }
    assert_eq!(s.held(), v1.len() - 1);
    t.apply_full_part(&mut s, parse_full(&v2[0])).unwrap();
    assert_eq!((s.version(), s.held()), (Some(2), 1));
    // v1's last part now only restarts v1's staging: no table from a mix of versions.
    let r = t
        .apply_full_part(&mut s, parse_full(&v1[v1.len() - 1]))
        .unwrap();
    assert!(matches!(r, Applied::Staged { held: 1, .. }));
    assert_eq!(t.state().0, 0);
    for f in &v2 {
        t.apply_full_part(&mut s, parse_full(f)).unwrap();
    }
    assert_eq!(t.state(), (2, 9_000, SetDigest::of(&set[..9_000])));
}

#[test]
fn full_table_checks_leave_the_table_unchanged() {
    let set = big_set();
    let good = loaded(1, &set[..10]);
    // Wrong digest in the header.
    let mut p = parse_full(&full_table_files(2, &set[..20], 4096).unwrap()[0]);
    p.total_digest = SetDigest([9; 8]);
    let mut t = good.clone();
    let mut s = Staging::default();
    let e = t.apply_full_part(&mut s, p.clone()).unwrap_err();
    assert!(matches!(e, PushError::FullDigestMismatch { .. }));
    assert_eq!(e.error_code(), mfg::ERROR_MALFORMED);
    assert_eq!((t.clone(), s.held()), (good.clone(), 0));
    // Wrong count.
    p.total_digest = SetDigest::of(&set[..20]);
    p.total_count = 21;
    assert!(matches!(
        t.apply_full_part(&mut s, p.clone()),
        Err(PushError::CountMismatch { want: 21, got: 20 })
    ));
    assert_eq!(t, good);
    // Over capacity: refused at the first part, ERROR 1.
    let mut small = Table::new(Some(5));
    let e = small
        .apply_full_part(
            &mut s,
            parse_full(&full_table_files(2, &set[..6], 4096).unwrap()[0]),
        )
        .unwrap_err();
    assert_eq!(e.error_code(), mfg::ERROR_CAPACITY);
    assert_eq!(small.state(), (0, 0, SetDigest::default()));
    assert_eq!(small.capacity(), 5);
    assert_eq!(Table::new(None).capacity(), mfg::CAPACITY_UNKNOWN);
}

#[test]
fn delta_applies_and_each_failure_changes_nothing() {
    let set = big_set();
    let from = &set[..100];
    let mut to: Vec<Credential> = set[1..101].to_vec();
    to[5].not_after = 2_000_000_000; // a changed validity: a remove plus an add
    let bytes = delta_file(7, 8, from, &to, 4096).unwrap();
    let d = parse_delta(&bytes);
    assert_eq!(d.removes.len(), 2);
    assert_eq!(d.adds.len(), 2);
    assert_eq!(d.digest_after, SetDigest::of(&to));
    assert_eq!(d.encode(), bytes);
    assert!(removes_any(from, &to));

    let good = loaded(7, from);
    let mut t = good.clone();
    t.apply_delta(d.clone()).unwrap();
    assert_eq!(t.state(), (8, 100, SetDigest::of(&to)));
    assert_eq!(t, loaded(8, &to));

    let refused = |d: Delta, want: fn(&PushError) -> bool| {
        let mut t = good.clone();
        let e = t.apply_delta(d).unwrap_err();
        assert!(want(&e), "{e:?}");
        assert_eq!(e.error_code(), mfg::ERROR_DELTA);
        assert_eq!(t, good, "a refused delta changes nothing");
    };
    refused(
        Delta {
            from_version: 6,
            ..d.clone()
        },
        |e| matches!(e, PushError::DeltaVersion { from: 6, have: 7 }),
    );
    let mut missing = d.clone();
    missing.removes.push(Key::of(&set[500]));
    refused(missing, |e| matches!(e, PushError::RemovedAbsent { .. }));
    let mut twice = d.clone();
    twice.removes.push(twice.removes[0].clone());
    refused(twice, |e| matches!(e, PushError::RemovedAbsent { .. }));
    let mut present = d.clone();
    present.adds.push(from[50].clone());
    refused(present, |e| matches!(e, PushError::AddedPresent { .. }));
    refused(
        Delta {
            digest_after: SetDigest([1; 8]),
            ..d.clone()
        },
        |e| matches!(e, PushError::DeltaDigestMismatch { .. }),
    );
    // Over capacity: ERROR 1, nothing changes.
    let mut full = Table::new(Some(100));
    let mut s = Staging::default();
    for f in full_table_files(7, from, 4096).unwrap() {
        full.apply_file(&mut s, FULL_TABLE, &f).unwrap();
    }
    let grow = delta_file(7, 8, from, &set[..101], 4096).unwrap();
    let before = full.clone();
    let e = full.apply_file(&mut s, DELTA, &grow).unwrap_err();
    assert_eq!(e.error_code(), mfg::ERROR_CAPACITY);
    assert_eq!(full, before);
}

#[test]
fn a_change_too_big_for_one_file_is_no_delta() {
    let set = big_set();
    assert!(delta_file(1, 2, &set[..5_000], &set[5_000..], 4096).is_none());
    let d = diff(&set[..5_000], &set[5_000..]).unwrap();
    assert!(d.delta_bytes() > 4096);
    assert!(d.removes_any());
    let only_adds = diff(&set[..10], &set[..20]).unwrap();
    assert!(!only_adds.removes_any());
    assert!(!removes_any(&set[..10], &set[..20]));
    assert!(diff(&set, &set).unwrap().is_empty());
}

#[test]
fn mfg_state_reports_the_table() {
    let set = big_set();
    let t = loaded(3, &set[..10]);
    let (version, count, digest) = t.state();
    let reply = MfgReply::State {
        version,
        count,
        digest,
        capacity: t.capacity(),
    };
    let wire = reply.encode_with_vendor(mfg::DEFAULT_VENDOR_CODE);
    assert_eq!(wire.len(), 3 + 25);
    assert!(wire.len() <= mfg::MFGREP_MAX_DATA);
    assert_eq!(
        MfgReply::decode_with_vendor(mfg::DEFAULT_VENDOR_CODE, &wire),
        Ok(reply)
    );
    assert_eq!(
        MfgCommand::decode(&MfgCommand::Query.encode()),
        Ok(MfgCommand::Query)
    );
}

fn arb_credential() -> impl Strategy<Value = Credential> {
    (
        prop_oneof![Just(26u8), Just(8), 1u8..=128],
        any::<u128>(),
        prop_oneof![Just(0u32), any::<u32>()],
        prop_oneof![Just(0u32), any::<u32>()],
    )
        .prop_map(|(bits, n, nb, na)| card(n % 64, bits, nb, na))
}

/// A set without repeated cards (small card numbers, so changes collide with existing cards).
fn arb_set() -> impl Strategy<Value = Vec<Credential>> {
    proptest::collection::vec(arb_credential(), 0..60).prop_map(|mut v| {
        v.sort_by(|a, b| (a.bits, &a.data).cmp(&(b.bits, &b.data)));
        v.dedup_by(|a, b| (a.bits, &a.data) == (b.bits, &b.data));
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn delta_takes_the_old_table_to_the_new(
        old in arb_set(),
        new in arb_set(),
        max in prop_oneof![Just(4096usize), 53usize..400],
    ) {
        let mut t = loaded(1, &old);
        let mut s = Staging::default();
        match delta_file(1, 2, &old, &new, 4096) {
            Some(bytes) => t.apply_file(&mut s, DELTA, &bytes).map(|_| ()).unwrap(),
            None => prop_assert!(diff(&old, &new).unwrap().delta_bytes() > 4096),
        }
        if t.state().0 == 2 {
            prop_assert_eq!(t.state(), (2, new.len() as u32, SetDigest::of(&new)));
        }
        prop_assert_eq!(
            removes_any(&old, &new),
            diff(&old, &new).unwrap().removes_any()
        );
        // The same new set as a full table of small parts, in reverse, gives the same digest.
        let mut t2 = loaded(1, &old);
        let files = full_table_files(3, &new, max).unwrap();
        for f in files.iter().rev() {
            t2.apply_file(&mut s, FULL_TABLE, f).unwrap();
        }
        prop_assert_eq!(t2.state(), (3, new.len() as u32, SetDigest::of(&new)));
        let entries: Vec<Credential> = t2.entries().cloned().collect();
        prop_assert_eq!(SetDigest::of(&entries), SetDigest::of(&new));
    }

    #[test]
    fn parsing_random_bytes_never_panics(
        file_type in prop_oneof![Just(FULL_TABLE), Just(DELTA), any::<u8>()],
        magic in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = Vec::new();
        if magic {
            bytes.extend_from_slice(if file_type == DELTA { b"DHD1" } else { b"DHT1" });
        }
        bytes.extend_from_slice(&body);
        if let Ok(f) = parse_file(file_type, &bytes) {
            // Whatever parses re-encodes to the same bytes.
            let again = match &f {
                TableFile::Full(p) => p.encode(),
                TableFile::Delta(d) => d.encode(),
            };
            prop_assert_eq!(again, bytes.clone());
            let mut t = Table::new(Some(3));
            let mut s = Staging::default();
            let _ = t.apply_file(&mut s, file_type, &bytes);
        }
        let _ = MfgCommand::decode(&bytes);
        let _ = MfgReply::decode(&bytes);
        let _ = MfgReply::decode_with_vendor(mfg::DEFAULT_VENDOR_CODE, &bytes);
    }

    #[test]
    fn mutated_files_never_panic(
        old in arb_set(),
        new in arb_set(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let mut files = full_table_files(1, &new, 4096).unwrap();
        files.push(delta_file(1, 2, &old, &new, 4096).unwrap_or_default());
        for (k, mut f) in files.into_iter().enumerate() {
            if f.is_empty() {
                continue;
            }
            for &(at, x) in &flips {
                let i = at % f.len();
                f[i] ^= x;
            }
            f.truncate(f.len() - cut % f.len().min(5));
            let ft = if k == 0 { FULL_TABLE } else { DELTA };
            let mut t = loaded(1, &old);
            let before = t.clone();
            let mut s = Staging::default();
            if t.apply_file(&mut s, ft, &f).is_err() {
                prop_assert_eq!(t, before);
            }
        }
    }
}

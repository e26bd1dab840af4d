//! The table-file parsers (`push::file::parse_file`: full-table parts `DHT1` and deltas `DHD1`)
//! and a PD's table applying a sequence of them. Input: files one after another, each a type
//! byte, a u16 length (little-endian) and that many bytes (the last one takes what is left).
//!
//! - A file that parses encodes back to exactly its bytes.
//! - Whatever is applied, the table's count and digest are those of its entries, in order, and
//!   within capacity; a refused file leaves the table as it was.
#![no_main]

use doorhub::push::file::{Key, Staging, Table, TableFile, parse_file};
use doorhub::snapshot::SetDigest;
use libfuzzer_sys::fuzz_target;

/// A capacity small enough for the fuzzer to reach.
const CAPACITY: u32 = 64;

fuzz_target!(|data: &[u8]| {
    let mut table = Table::new(Some(CAPACITY));
    let mut staging = Staging::default();
    let mut rest = data;
    while let [file_type, rest_after_type @ ..] = rest {
        let (len, body) = match rest_after_type {
            [lo, hi, body @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), body),
            _ => (rest_after_type.len(), &[][..]),
        };
        let (file, tail) = body.split_at(len.min(body.len()));
        rest = tail;

        let parsed = parse_file(*file_type, file);
        if let Ok(parsed) = &parsed {
            let encoded = match parsed {
                TableFile::Full(part) => part.encode(),
                TableFile::Delta(delta) => delta.encode(),
            };
            assert_eq!(encoded, file);
        }
        let before = table.clone();
        let applied = table.apply_file(&mut staging, *file_type, file);
        assert!(parsed.is_ok() || applied.is_err());
        if applied.is_err() {
            assert_eq!(table, before, "a refused file changed the table");
        }

        let (_, count, digest) = table.state();
        let entries: Vec<_> = table.entries().collect();
        assert_eq!(count as usize, entries.len());
        assert!(count <= CAPACITY);
        assert_eq!(digest, SetDigest::of(entries.iter().copied()));
        assert!(entries.windows(2).all(|w| Key::of(w[0]) < Key::of(w[1])));
        for e in &entries {
            assert_eq!(table.get(&Key::of(e)), Some(*e));
        }
    }
});

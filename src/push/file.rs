//! Table files sent over osdp_FILETRANSFER (`reader-link.md`, "Credential push for `stored`
//! doors"): the full table (`DHT1`, file type 0x80, in parts) and the delta (`DHD1`, file type
//! 0x81), how the hub builds them, how a PD parses them, and [`Table`], the PD-side rules for
//! applying them, shared by the simulator and the tests.
//!
//! Entries on the wire are [`Credential::encode_entry`]; a parsed entry is a [`Credential`] with an
//! empty `id`, because the reader link never carries ids (and the digest does not cover them).
//! Integers are little-endian.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::push::mfg;
use crate::snapshot::{Credential, MAX_BITS, SetDigest};

/// File type of a full-table part (`DHT1`).
pub const FULL_TABLE: u8 = 0x80;
/// File type of a delta (`DHD1`).
pub const DELTA: u8 = 0x81;
/// The contract's default for `max_file_bytes`.
pub const DEFAULT_MAX_FILE_BYTES: usize = 4096;

/// Magic of a full-table part.
pub const FULL_MAGIC: [u8; 4] = *b"DHT1";
/// Magic of a delta.
pub const DELTA_MAGIC: [u8; 4] = *b"DHD1";
/// Bytes of a full-table part before its entries: magic, version, part, parts, count, digest.
pub const FULL_HEADER_BYTES: usize = 4 + 8 + 2 + 2 + 4 + 8;
/// Bytes of a delta that do not depend on its content: magic, two versions, digest, two counts.
pub const DELTA_FIXED_BYTES: usize = 4 + 8 + 8 + 8 + 4 + 4;

/// Everything that can go wrong building, parsing or applying a table file.
///
/// [`PushError::error_code`] gives the MFGREP ERROR code a PD reports for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// A file type other than [`FULL_TABLE`] and [`DELTA`].
    #[error("unknown file type 0x{0:02x}")]
    UnknownFileType(u8),
    /// The file does not start with the magic of its type.
    #[error("bad magic {0:02x?}")]
    BadMagic(Vec<u8>),
    /// The file ends inside a field or an entry.
    #[error("file is truncated")]
    Truncated,
    /// Bytes after a delta's last entry.
    #[error("{0} trailing bytes after the last entry")]
    TrailingBytes(usize),
    /// An entry's bits, length or padding is wrong.
    #[error("invalid entry ({bits} bits): {reason}")]
    InvalidEntry {
        /// The entry's bit count.
        bits: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// A part index not below the part count, or a part count of 0.
    #[error("part {part} of {parts} is out of range")]
    PartRange {
        /// The part index.
        part: u16,
        /// The part count.
        parts: u16,
    },
    /// Full-table entries not strictly increasing by (bits, data), within or across parts. This
    /// also catches a card listed twice.
    #[error("entries are not strictly sorted by (bits, data)")]
    Unsorted,
    /// The same card twice in a set handed to the builder.
    #[error("card ({bits} bits, data {data}) appears twice")]
    DuplicateKey {
        /// The card's bit count.
        bits: u8,
        /// The card's data in hex.
        data: String,
    },
    /// `max_file_bytes` cannot hold a header and one entry.
    #[error("an entry needs a {need}-byte file, over max_file_bytes ({max})")]
    EntryTooLarge {
        /// File size that one entry needs.
        need: usize,
        /// The limit.
        max: usize,
    },
    /// The table needs more parts than a u16 counts.
    #[error("the table needs {0} parts, over 65535")]
    TooManyParts(usize),
    /// More entries than a u32 counts.
    #[error("{0} entries do not fit a u32 count")]
    TooManyEntries(usize),
    /// All parts arrived but hold another number of entries than the header says.
    #[error("the parts hold {got} entries, the header says {want}")]
    CountMismatch {
        /// The header's total count.
        want: u32,
        /// What the parts hold.
        got: usize,
    },
    /// All parts arrived but their digest is not the header's.
    #[error("the parts' digest is {got}, the header says {want}")]
    FullDigestMismatch {
        /// The header's total digest.
        want: SetDigest,
        /// The parts' digest.
        got: SetDigest,
    },
    /// The table would hold more entries than the PD's capacity.
    #[error("{count} entries exceed the capacity of {capacity}")]
    Capacity {
        /// Entries after the change.
        count: usize,
        /// The PD's capacity.
        capacity: u32,
    },
    /// A delta's from_version is not the table's version.
    #[error("delta is from version {from}, the table is at {have}")]
    DeltaVersion {
        /// The delta's from_version.
        from: u64,
        /// The table's version.
        have: u64,
    },
    /// A delta removes a card the table does not hold.
    #[error("delta removes absent card ({bits} bits, data {data})")]
    RemovedAbsent {
        /// The card's bit count.
        bits: u8,
        /// The card's data in hex.
        data: String,
    },
    /// A delta adds a card the table already holds (after the removals).
    #[error("delta adds present card ({bits} bits, data {data})")]
    AddedPresent {
        /// The card's bit count.
        bits: u8,
        /// The card's data in hex.
        data: String,
    },
    /// The delta's result does not have its digest-after.
    #[error("delta result has digest {got}, digest-after is {want}")]
    DeltaDigestMismatch {
        /// The delta's digest-after.
        want: SetDigest,
        /// The result's digest.
        got: SetDigest,
    },
}

impl PushError {
    /// The MFGREP ERROR code (`reader-link.md`) a PD reports for this failure: 1 capacity
    /// exceeded, 2 delta does not apply, 3 malformed file. Errors only the hub meets while
    /// building (an entry too large, too many parts) are 3 too: such a file could not be right.
    pub fn error_code(&self) -> u8 {
        match self {
            PushError::Capacity { .. } => mfg::ERROR_CAPACITY,
            PushError::DeltaVersion { .. }
            | PushError::RemovedAbsent { .. }
            | PushError::AddedPresent { .. }
            | PushError::DeltaDigestMismatch { .. } => mfg::ERROR_DELTA,
            _ => mfg::ERROR_MALFORMED,
        }
    }
}

/// A card: the key of a table entry, ordered by (bits, data) as the full table is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Number of bits on the card.
    pub bits: u8,
    /// The bits, left-justified, padding zero.
    pub data: Vec<u8>,
}

impl Key {
    /// The key of a credential.
    pub fn of(c: &Credential) -> Key {
        Key {
            bits: c.bits,
            data: c.data.clone(),
        }
    }

    fn hex(&self) -> String {
        hex::encode(&self.data)
    }
}

/// Orders credentials by their key without allocating one.
fn key_cmp(a: &Credential, b: &Credential) -> Ordering {
    (a.bits, &a.data).cmp(&(b.bits, &b.data))
}

/// Checks what the parser also enforces: bits 1..=128, ceil(bits/8) bytes, padding bits zero.
fn check_card(bits: u8, data: &[u8]) -> Result<(), PushError> {
    let bad = |reason| Err(PushError::InvalidEntry { bits, reason });
    if bits == 0 || u64::from(bits) > MAX_BITS {
        return bad("bits must be 1..=128");
    }
    let want = usize::from(bits).div_ceil(8);
    if data.len() != want {
        return bad("data is not ceil(bits/8) bytes");
    }
    let pad = want * 8 - usize::from(bits);
    // `want >= 1` because bits >= 1, so `data` has a last byte.
    if pad > 0 && data[want - 1] & ((1u8 << pad) - 1) != 0 {
        return bad("padding bits are not zero");
    }
    Ok(())
}

fn entry_len(c: &Credential) -> usize {
    1 + c.data.len() + 8
}

/// Validates a set and returns it sorted by key; rejects a card listed twice.
fn sorted_checked(set: &[Credential]) -> Result<Vec<&Credential>, PushError> {
    for c in set {
        check_card(c.bits, &c.data)?;
    }
    let mut sorted: Vec<&Credential> = set.iter().collect();
    sorted.sort_unstable_by(|a, b| key_cmp(a, b));
    if let Some(w) = sorted.windows(2).find(|w| key_cmp(w[0], w[1]).is_eq()) {
        return Err(PushError::DuplicateKey {
            bits: w[0].bits,
            data: hex::encode(&w[0].data),
        });
    }
    Ok(sorted)
}

fn count_u32(n: usize) -> Result<u32, PushError> {
    u32::try_from(n).map_err(|_| PushError::TooManyEntries(n))
}

/// One part of a full table, as a PD parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullPart {
    /// The table's version.
    pub version: u64,
    /// This part's index.
    pub part: u16,
    /// How many parts the table has.
    pub parts: u16,
    /// Entries in the whole table.
    pub total_count: u32,
    /// Digest of the whole table.
    pub total_digest: SetDigest,
    /// This part's entries, sorted (ids empty).
    pub entries: Vec<Credential>,
}

impl FullPart {
    /// The file's bytes (what [`parse_file`] with [`FULL_TABLE`] reads back).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            FULL_HEADER_BYTES + self.entries.iter().map(entry_len).sum::<usize>(),
        );
        full_header(
            &mut out,
            self.version,
            self.part,
            self.parts,
            self.total_count,
            self.total_digest,
        );
        for e in &self.entries {
            e.encode_entry(&mut out);
        }
        out
    }
}

/// A delta, as a PD parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The version the delta applies to.
    pub from_version: u64,
    /// The version the table has after it.
    pub to_version: u64,
    /// The digest the table has after it.
    pub digest_after: SetDigest,
    /// Cards removed, applied first.
    pub removes: Vec<Key>,
    /// Entries added after the removals (ids empty).
    pub adds: Vec<Credential>,
}

impl Delta {
    /// The file's bytes (what [`parse_file`] with [`DELTA`] reads back).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let removes: Vec<(u8, &[u8])> = self
            .removes
            .iter()
            .map(|k| (k.bits, k.data.as_slice()))
            .collect();
        let adds: Vec<&Credential> = self.adds.iter().collect();
        encode_delta(
            &mut out,
            self.from_version,
            self.to_version,
            self.digest_after,
            &removes,
            &adds,
        );
        out
    }
}

/// A parsed table file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableFile {
    /// A full-table part (file type 0x80).
    Full(FullPart),
    /// A delta (file type 0x81).
    Delta(Delta),
}

impl TableFile {
    /// The version the file leads to: what an MFGREP ERROR about it reports.
    pub fn target_version(&self) -> u64 {
        match self {
            TableFile::Full(p) => p.version,
            TableFile::Delta(d) => d.to_version,
        }
    }
}

fn full_header(
    out: &mut Vec<u8>,
    version: u64,
    part: u16,
    parts: u16,
    count: u32,
    digest: SetDigest,
) {
    out.extend_from_slice(&FULL_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&part.to_le_bytes());
    out.extend_from_slice(&parts.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&digest.0);
}

/// Writes a delta. Counts are u32 by the caller's check or by construction from a `Vec` whose
/// length came from a u32.
fn encode_delta(
    out: &mut Vec<u8>,
    from_version: u64,
    to_version: u64,
    digest_after: SetDigest,
    removes: &[(u8, &[u8])],
    adds: &[&Credential],
) {
    out.extend_from_slice(&DELTA_MAGIC);
    out.extend_from_slice(&from_version.to_le_bytes());
    out.extend_from_slice(&to_version.to_le_bytes());
    out.extend_from_slice(&digest_after.0);
    out.extend_from_slice(&(removes.len() as u32).to_le_bytes());
    for (bits, data) in removes {
        out.push(*bits);
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&(adds.len() as u32).to_le_bytes());
    for c in adds {
        c.encode_entry(out);
    }
}

/// Builds the parts of a full table of `version`: entries sorted by (bits, data) across the
/// table, each part packed with as many as fit in `max_file_bytes`. An empty set is one part.
///
/// Fails on an invalid entry, a card listed twice, an entry that cannot fit one file, or more
/// than 65535 parts.
pub fn full_table_files(
    version: u64,
    set: &[Credential],
    max_file_bytes: usize,
) -> Result<Vec<Vec<u8>>, PushError> {
    let sorted = sorted_checked(set)?;
    let count = count_u32(sorted.len())?;
    let digest = SetDigest::of(sorted.iter().copied());
    if max_file_bytes < FULL_HEADER_BYTES {
        return Err(PushError::EntryTooLarge {
            need: FULL_HEADER_BYTES,
            max: max_file_bytes,
        });
    }
    // First cut the runs, so that every header can carry the final part count.
    let mut runs: Vec<&[&Credential]> = Vec::new();
    let mut start = 0;
    let mut size = FULL_HEADER_BYTES;
    for (i, c) in sorted.iter().enumerate() {
        let len = entry_len(c);
        if FULL_HEADER_BYTES + len > max_file_bytes {
            return Err(PushError::EntryTooLarge {
                need: FULL_HEADER_BYTES + len,
                max: max_file_bytes,
            });
        }
        if size + len > max_file_bytes {
            runs.push(&sorted[start..i]);
            start = i;
            size = FULL_HEADER_BYTES;
        }
        size += len;
    }
    // The last run; for an empty set the only (empty) one.
    runs.push(&sorted[start..]);
    let parts = u16::try_from(runs.len()).map_err(|_| PushError::TooManyParts(runs.len()))?;
    let files = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let mut out = Vec::with_capacity(
                FULL_HEADER_BYTES + run.iter().map(|c| entry_len(c)).sum::<usize>(),
            );
            // i < runs.len() == parts, which fits in u16.
            full_header(&mut out, version, i as u16, parts, count, digest);
            for c in *run {
                c.encode_entry(&mut out);
            }
            out
        })
        .collect();
    Ok(files)
}

/// The change from one set to another: cards to remove and entries to add, each sorted by key.
/// A changed validity is a remove plus an add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff<'a> {
    /// Cards in `from` that are gone or whose validity changed.
    pub removed: Vec<&'a Credential>,
    /// Entries of `to` that are new or whose validity changed.
    pub added: Vec<&'a Credential>,
}

impl Diff<'_> {
    /// Whether the change takes anything away (a card, or a validity), so it should go first.
    pub fn removes_any(&self) -> bool {
        !self.removed.is_empty()
    }

    /// Whether the sets are equal.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }

    /// The size of the delta file that carries this change.
    pub fn delta_bytes(&self) -> usize {
        DELTA_FIXED_BYTES
            + self.removed.iter().map(|c| 1 + c.data.len()).sum::<usize>()
            + self.added.iter().map(|c| entry_len(c)).sum::<usize>()
    }
}

/// Computes the change from `from` to `to` by sorting both and merging: O(n log n), fine for
/// 10,000-entry sets. Fails like [`full_table_files`] on an invalid entry or a repeated card.
pub fn diff<'a>(from: &'a [Credential], to: &'a [Credential]) -> Result<Diff<'a>, PushError> {
    let from = sorted_checked(from)?;
    let to = sorted_checked(to)?;
    let mut removed = Vec::new();
    let mut added = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < from.len() && j < to.len() {
        let (a, b) = (from[i], to[j]);
        match key_cmp(a, b) {
            Ordering::Less => {
                removed.push(a);
                i += 1;
            }
            Ordering::Greater => {
                added.push(b);
                j += 1;
            }
            Ordering::Equal => {
                if (a.not_before, a.not_after) != (b.not_before, b.not_after) {
                    removed.push(a);
                    added.push(b);
                }
                i += 1;
                j += 1;
            }
        }
    }
    removed.extend_from_slice(&from[i..]);
    added.extend_from_slice(&to[j..]);
    Ok(Diff { removed, added })
}

/// Whether going from `from` to `to` takes anything away: a card, or a card's validity (which may
/// shorten it). Such a change is a revocation and is scheduled first. Unlike [`diff`] it does not
/// validate: an invalid or repeated entry only makes the answer conservative.
pub fn removes_any(from: &[Credential], to: &[Credential]) -> bool {
    let entry = |c: &Credential| (c.bits, c.data.clone(), c.not_before, c.not_after);
    let kept: BTreeSet<_> = to.iter().map(entry).collect();
    from.iter().any(|c| !kept.contains(&entry(c)))
}

/// The delta file from `from` (at `from_version`) to `to` (at `to_version`): removals first
/// (sorted keys), then additions (sorted entries), digest-after the digest of `to`.
///
/// `None` when it does not fit in `max_file_bytes`, or when a set is invalid (an invalid entry or
/// a repeated card): either way the change goes as a full table, and [`full_table_files`] reports
/// an invalid set.
pub fn delta_file(
    from_version: u64,
    to_version: u64,
    from: &[Credential],
    to: &[Credential],
    max_file_bytes: usize,
) -> Option<Vec<u8>> {
    let d = diff(from, to).ok()?;
    let size = d.delta_bytes();
    // A u32 count bounds a delta long before any realistic max_file_bytes does, but check it.
    if size > max_file_bytes
        || u32::try_from(d.removed.len()).is_err()
        || u32::try_from(d.added.len()).is_err()
    {
        return None;
    }
    let removes: Vec<(u8, &[u8])> = d
        .removed
        .iter()
        .map(|c| (c.bits, c.data.as_slice()))
        .collect();
    let mut out = Vec::with_capacity(size);
    encode_delta(
        &mut out,
        from_version,
        to_version,
        SetDigest::of(to),
        &removes,
        &d.added,
    );
    Some(out)
}

/// A cursor over untrusted bytes: every read checks the length, so no input panics.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PushError> {
        if self.bytes.len() < n {
            return Err(PushError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PushError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, PushError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, PushError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, PushError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, PushError> {
        self.array().map(u64::from_le_bytes)
    }

    fn key(&mut self) -> Result<(u8, Vec<u8>), PushError> {
        let bits = self.u8()?;
        // Check bits before using it as a length, so a bad one is named, not "truncated".
        if bits == 0 || u64::from(bits) > MAX_BITS {
            return Err(PushError::InvalidEntry {
                bits,
                reason: "bits must be 1..=128",
            });
        }
        let data = self.take(usize::from(bits).div_ceil(8))?.to_vec();
        check_card(bits, &data)?;
        Ok((bits, data))
    }

    fn entry(&mut self) -> Result<Credential, PushError> {
        let (bits, data) = self.key()?;
        Ok(Credential {
            id: String::new(),
            bits,
            data,
            not_before: self.u32()?,
            not_after: self.u32()?,
        })
    }

    fn magic(&mut self, want: [u8; 4]) -> Result<(), PushError> {
        // A file shorter than the magic is not one of ours: report it as bad magic.
        let got = &self.bytes[..self.bytes.len().min(4)];
        if got != want {
            return Err(PushError::BadMagic(got.to_vec()));
        }
        self.take(4).map(|_| ())
    }
}

/// Parses a table file as a PD does, strictly: bad magic, truncation, trailing bytes, an entry
/// with bits 0 or over 128 or non-zero padding, a part out of range, or full-table entries out of
/// order are errors (all "malformed", ERROR 3). Never panics.
pub fn parse_file(file_type: u8, bytes: &[u8]) -> Result<TableFile, PushError> {
    let mut r = Reader { bytes };
    match file_type {
        FULL_TABLE => {
            r.magic(FULL_MAGIC)?;
            let version = r.u64()?;
            let part = r.u16()?;
            let parts = r.u16()?;
            let total_count = r.u32()?;
            let total_digest = SetDigest(r.array()?);
            if part >= parts {
                return Err(PushError::PartRange { part, parts });
            }
            // A part has no entry count: entries run to the end, so a partial one is truncation.
            let mut entries: Vec<Credential> = Vec::new();
            while !r.bytes.is_empty() {
                let e = r.entry()?;
                if entries.last().is_some_and(|p| key_cmp(p, &e).is_ge()) {
                    return Err(PushError::Unsorted);
                }
                entries.push(e);
            }
            Ok(TableFile::Full(FullPart {
                version,
                part,
                parts,
                total_count,
                total_digest,
                entries,
            }))
        }
        DELTA => {
            r.magic(DELTA_MAGIC)?;
            let from_version = r.u64()?;
            let to_version = r.u64()?;
            let digest_after = SetDigest(r.array()?);
            let n = r.u32()?;
            // Counts are untrusted: grow as entries are read instead of reserving `n`.
            let mut removes = Vec::new();
            for _ in 0..n {
                let (bits, data) = r.key()?;
                removes.push(Key { bits, data });
            }
            let n = r.u32()?;
            let mut adds = Vec::new();
            for _ in 0..n {
                adds.push(r.entry()?);
            }
            if !r.bytes.is_empty() {
                return Err(PushError::TrailingBytes(r.bytes.len()));
            }
            Ok(TableFile::Delta(Delta {
                from_version,
                to_version,
                digest_after,
                removes,
                adds,
            }))
        }
        other => Err(PushError::UnknownFileType(other)),
    }
}

/// What a PD has staged of a full table not yet complete. Kept apart from [`Table`] because it is
/// volatile: a PD may lose it (and the hub then resends) but must never lose its table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Staging {
    /// The header the staged parts share: version, parts, total count, total digest.
    header: Option<(u64, u16, u32, SetDigest)>,
    /// Entries by part index.
    held: BTreeMap<u16, Vec<Credential>>,
}

impl Staging {
    /// The version being staged, if any.
    pub fn version(&self) -> Option<u64> {
        self.header.map(|h| h.0)
    }

    /// How many distinct parts are held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Drops everything staged.
    pub fn clear(&mut self) {
        *self = Staging::default();
    }
}

/// What a full-table part did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Staged; the table is unchanged until all parts are held.
    Staged {
        /// Distinct parts held.
        held: u16,
        /// Parts the table has.
        parts: u16,
    },
    /// The last part arrived and the table was replaced.
    Replaced {
        /// The table's new version.
        version: u64,
    },
}

/// A PD's credential table and the contract's rules for changing it: full tables replace it
/// atomically once complete and checked, deltas apply entirely or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    version: u64,
    entries: BTreeMap<Key, Credential>,
    digest: SetDigest,
    capacity: Option<u32>,
}

impl Table {
    /// An empty table at version 0 (what a new or wiped PD reports), holding at most `capacity`
    /// entries if given.
    pub fn new(capacity: Option<u32>) -> Table {
        Table {
            capacity,
            ..Table::default()
        }
    }

    /// Version, entry count and digest: what MFGREP STATE reports. A count over u32 cannot arise
    /// from files (counts are u32) and saturates.
    pub fn state(&self) -> (u64, u32, SetDigest) {
        let count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        (self.version, count, self.digest)
    }

    /// The capacity as MFGREP STATE reports it: 0xFFFFFFFF when unlimited or unknown.
    pub fn capacity(&self) -> u32 {
        self.capacity.unwrap_or(u32::MAX)
    }

    /// The entries, sorted by key.
    pub fn entries(&self) -> impl Iterator<Item = &Credential> {
        self.entries.values()
    }

    /// The entry for a card, for an access decision.
    pub fn get(&self, key: &Key) -> Option<&Credential> {
        self.entries.get(key)
    }

    fn check_capacity(&self, count: usize) -> Result<(), PushError> {
        match self.capacity {
            Some(capacity) if count > capacity as usize => {
                Err(PushError::Capacity { count, capacity })
            }
            _ => Ok(()),
        }
    }

    /// Stages one full-table part. A part of another table (another version, or the same version
    /// with another header) discards what is staged; a repeated part replaces its earlier copy,
    /// which is harmless. Once all parts are held, the total count, order and digest are checked
    /// and the table is replaced; on a failed check the table is unchanged and the staging is
    /// dropped so that a resend starts clean. A total count over the capacity fails at once.
    pub fn apply_full_part(
        &mut self,
        staged: &mut Staging,
        part: FullPart,
    ) -> Result<Applied, PushError> {
        if part.part >= part.parts {
            return Err(PushError::PartRange {
                part: part.part,
                parts: part.parts,
            });
        }
        if let Err(e) = self.check_capacity(part.total_count as usize) {
            staged.clear();
            return Err(e);
        }
        let header = (
            part.version,
            part.parts,
            part.total_count,
            part.total_digest,
        );
        if staged.header != Some(header) {
            staged.clear();
            staged.header = Some(header);
        }
        staged.held.insert(part.part, part.entries);
        if staged.held.len() < usize::from(part.parts) {
            return Ok(Applied::Staged {
                // held < parts, a u16.
                held: staged.held.len() as u16,
                parts: part.parts,
            });
        }
        // All parts held: take them out, so that staging is empty whatever the checks say.
        let held = std::mem::take(&mut staged.held);
        staged.clear();
        let got: usize = held.values().map(Vec::len).sum();
        if got != part.total_count as usize {
            return Err(PushError::CountMismatch {
                want: part.total_count,
                got,
            });
        }
        let mut entries = BTreeMap::new();
        let mut digest = SetDigest::default();
        let mut last: Option<Key> = None;
        // BTreeMap iterates parts in index order, so this checks the order across parts too.
        for e in held.into_values().flatten() {
            let key = Key::of(&e);
            if last.as_ref().is_some_and(|l| *l >= key) {
                return Err(PushError::Unsorted);
            }
            digest = digest.xor(e.digest());
            last = Some(key.clone());
            entries.insert(key, e);
        }
        if digest != part.total_digest {
            return Err(PushError::FullDigestMismatch {
                want: part.total_digest,
                got: digest,
            });
        }
        self.version = part.version;
        self.entries = entries;
        self.digest = digest;
        Ok(Applied::Replaced {
            version: part.version,
        })
    }

    /// Applies a delta entirely or not at all: only if the table is at `from_version`, every
    /// removed card is present, every added card is absent once the removals are done, the result
    /// has `digest_after` and fits the capacity. Everything is checked before anything changes.
    pub fn apply_delta(&mut self, delta: Delta) -> Result<(), PushError> {
        if delta.from_version != self.version {
            return Err(PushError::DeltaVersion {
                from: delta.from_version,
                have: self.version,
            });
        }
        let mut digest = self.digest;
        // Checked in order, as if applied: a card removed twice is absent the second time.
        let mut removed: BTreeSet<&Key> = BTreeSet::new();
        for k in &delta.removes {
            let entry = self.entries.get(k).filter(|_| !removed.contains(k));
            let Some(entry) = entry else {
                return Err(PushError::RemovedAbsent {
                    bits: k.bits,
                    data: k.hex(),
                });
            };
            digest = digest.xor(entry.digest());
            removed.insert(k);
        }
        let mut added: BTreeSet<Key> = BTreeSet::new();
        for e in &delta.adds {
            let k = Key::of(e);
            let present =
                (self.entries.contains_key(&k) && !removed.contains(&k)) || added.contains(&k);
            if present {
                return Err(PushError::AddedPresent {
                    bits: k.bits,
                    data: k.hex(),
                });
            }
            digest = digest.xor(e.digest());
            added.insert(k);
        }
        if digest != delta.digest_after {
            return Err(PushError::DeltaDigestMismatch {
                want: delta.digest_after,
                got: digest,
            });
        }
        self.check_capacity(self.entries.len() - removed.len() + added.len())?;
        for k in &delta.removes {
            self.entries.remove(k);
        }
        for e in delta.adds {
            self.entries.insert(Key::of(&e), e);
        }
        self.version = delta.to_version;
        self.digest = digest;
        Ok(())
    }

    /// Parses and applies one received file, as a PD does on closing it.
    pub fn apply_file(
        &mut self,
        staged: &mut Staging,
        file_type: u8,
        bytes: &[u8],
    ) -> Result<Option<Applied>, PushError> {
        match parse_file(file_type, bytes)? {
            TableFile::Full(p) => self.apply_full_part(staged, p).map(Some),
            TableFile::Delta(d) => self.apply_delta(d).map(|()| None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(n: u32, bits: u8) -> Credential {
        let len = usize::from(bits).div_ceil(8);
        let pad = len * 8 - usize::from(bits);
        // Shift left so the padding bits are zero.
        let v = (u128::from(n) << pad).to_be_bytes();
        Credential {
            id: format!("c{n}"),
            bits,
            data: v[16 - len..].to_vec(),
            not_before: 0,
            not_after: 0,
        }
    }

    fn set(n: u32) -> Vec<Credential> {
        (0..n).map(|i| card(i * 7 + 1, 26)).collect()
    }

    #[test]
    fn entries_are_little_endian() {
        let mut c = card(1, 8);
        c.not_before = 0x0102_0304;
        c.not_after = 0x0a0b_0c0d;
        let mut out = Vec::new();
        c.encode_entry(&mut out);
        assert_eq!(out, [8, 1, 4, 3, 2, 1, 0x0d, 0x0c, 0x0b, 0x0a]);
    }

    #[test]
    fn revoking_one_of_10000_is_a_41_byte_delta() {
        let from = set(10_000);
        let to = from[1..].to_vec();
        let d = delta_file(5, 6, &from, &to, DEFAULT_MAX_FILE_BYTES).expect("fits");
        assert_eq!(d.len(), 4 + 8 + 8 + 8 + 4 + (1 + 4) + 4);
        assert_eq!(d.len(), 41);
        assert!(removes_any(&from, &to));
        assert!(!removes_any(&to, &from));
        let mut t = Table::new(None);
        let mut s = Staging::default();
        for f in full_table_files(5, &from, 4096).unwrap() {
            t.apply_file(&mut s, FULL_TABLE, &f).unwrap();
        }
        t.apply_file(&mut s, DELTA, &d).unwrap();
        assert_eq!(t.state(), (6, 9_999, SetDigest::of(&to)));
    }

    #[test]
    fn empty_set_is_one_part() {
        let files = full_table_files(3, &[], 64).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].len(), FULL_HEADER_BYTES);
        let mut t = Table::new(Some(0));
        let mut s = Staging::default();
        let r = t.apply_file(&mut s, FULL_TABLE, &files[0]).unwrap();
        assert_eq!(r, Some(Applied::Replaced { version: 3 }));
        assert_eq!(t.state(), (3, 0, SetDigest::default()));
    }

    #[test]
    fn builder_rejects_bad_input() {
        let big = card(1, 128);
        assert!(matches!(
            full_table_files(1, &[big], FULL_HEADER_BYTES + 10),
            Err(PushError::EntryTooLarge { need: 53, .. })
        ));
        let mut bad = card(1, 26);
        bad.data[3] |= 1;
        assert!(matches!(
            full_table_files(1, &[bad], 4096),
            Err(PushError::InvalidEntry { .. })
        ));
        let dup = vec![card(1, 26), card(1, 26)];
        assert!(matches!(
            full_table_files(1, &dup, 4096),
            Err(PushError::DuplicateKey { .. })
        ));
        assert_eq!(delta_file(1, 2, &[], &dup, 4096), None);
        // 70,000 entries of 13 bytes, one per part: over 65535 parts.
        let many = set(70_000);
        assert!(matches!(
            full_table_files(1, &many, FULL_HEADER_BYTES + 13),
            Err(PushError::TooManyParts(70_000))
        ));
    }

    #[test]
    fn parser_is_strict() {
        let files = full_table_files(1, &set(3), 4096).unwrap();
        let f = &files[0];
        assert!(matches!(
            parse_file(FULL_TABLE, &f[..f.len() - 1]),
            Err(PushError::Truncated)
        ));
        assert!(matches!(parse_file(DELTA, f), Err(PushError::BadMagic(_))));
        assert!(matches!(
            parse_file(0x82, f),
            Err(PushError::UnknownFileType(0x82))
        ));
        let mut pad = f.clone();
        pad[FULL_HEADER_BYTES + 4] |= 1;
        assert!(matches!(
            parse_file(FULL_TABLE, &pad),
            Err(PushError::InvalidEntry { .. })
        ));
        let mut zero = f.clone();
        zero[FULL_HEADER_BYTES] = 0;
        assert!(matches!(
            parse_file(FULL_TABLE, &zero),
            Err(PushError::InvalidEntry { bits: 0, .. })
        ));
        let d = delta_file(1, 2, &set(3), &set(2), 4096).unwrap();
        let mut long = d.clone();
        long.push(0);
        assert_eq!(parse_file(DELTA, &long), Err(PushError::TrailingBytes(1)));
        assert!(parse_file(DELTA, &d).is_ok());
        assert_eq!(PushError::Truncated.error_code(), mfg::ERROR_MALFORMED);
    }
}

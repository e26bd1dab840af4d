//! A credential set as the store keeps it: one blob, sorted by card (bits, then data), with an
//! offset table, so a card can be looked up by binary search on the stored bytes without decoding
//! the set. A `hub` door decides each card read this way, with no copy of its set in memory, and
//! a full table for a `stored` door comes out already in the order the reader link wants.
//!
//! Layout (integers little-endian): magic `DHS2`, the snapshot version u64, count u32, `count`
//! record offsets u32 (from the start of the blob), then the records: bits u8, data ceil(bits/8)
//! bytes, not_before u32, not_after u32, id length u16, id (UTF-8). The version travels with the set
//! so a reader of the store can tell which snapshot it holds.
//!
//! Stores written before ids could take 256 bytes of UTF-8 hold `DHS1`: the same, but the id's
//! length is one byte. Both are read, so an upgrade loses nothing; only `DHS2` is written. The old
//! encoder cut an id at byte 255, which only an id of 64 four-byte characters reaches, and cut it
//! inside its last character: such a record reads back as an id that is not UTF-8, a damaged set.

use std::cmp::Ordering;

use crate::events::AccessReason;
use crate::snapshot::{Credential, MAX_BITS, SetDigest};

const MAGIC: &[u8; 4] = b"DHS2";
const MAGIC_V1: &[u8; 4] = b"DHS1";
const HEADER: usize = 16;

/// Why a set cannot be stored, or read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// A stored set that cannot be read (a damaged store).
    #[error("stored credential set is damaged: {0}")]
    Damaged(&'static str),
    /// A set the layout cannot hold (never one that passed the snapshot's checks).
    #[error("credential set cannot be stored: {0}")]
    Unencodable(&'static str),
}

/// Encodes version `version`'s set, sorted by card. Fails, rather than writing a blob that would
/// read back differently, on a card whose data is not ceil(bits/8) bytes for bits 1..=128, an id
/// over 65535 bytes, or a set over the 4 GiB the offsets can address.
pub fn encode(version: u64, set: &[Credential]) -> Result<Vec<u8>, SetError> {
    let bad = |why| Err(SetError::Unencodable(why));
    for c in set {
        if c.bits == 0 || u64::from(c.bits) > MAX_BITS {
            return bad("a card's bits are not in 1..=128");
        }
        if c.data.len() != usize::from(c.bits).div_ceil(8) {
            return bad("a card's data is not ceil(bits/8) bytes");
        }
        if u16::try_from(c.id.len()).is_err() {
            return bad("an id is over 65535 bytes");
        }
    }
    let Ok(count) = u32::try_from(set.len()) else {
        return bad("more than 2^32-1 credentials");
    };
    let mut order: Vec<&Credential> = set.iter().collect();
    order.sort_by(|a, b| card_cmp((a.bits, &a.data), (b.bits, &b.data)));
    let records: usize = set.iter().map(record_len).sum();
    let size = HEADER + 4 * set.len() + records;
    if u32::try_from(size).is_err() {
        return bad("the set is over 4 GiB");
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    let mut offset = HEADER + 4 * set.len();
    for c in &order {
        // Below `size`, checked above to fit in u32.
        out.extend_from_slice(&(offset as u32).to_le_bytes());
        offset += record_len(c);
    }
    for c in order {
        c.encode_entry(&mut out);
        // Checked above to fit in u16.
        out.extend_from_slice(&(c.id.len() as u16).to_le_bytes());
        out.extend_from_slice(c.id.as_bytes());
    }
    Ok(out)
}

fn record_len(c: &Credential) -> usize {
    11 + c.data.len() + c.id.len()
}

/// A `hub` door's decision on a card read at `now` (unix seconds), and the credential it matched:
/// unknown if the card is not in the set, else not yet valid before `not_before`, expired after
/// `not_after` (0: no limit), ok otherwise.
pub fn decide<'a>(
    set: &SetView<'a>,
    bits: u8,
    data: &[u8],
    now: u64,
) -> Result<(AccessReason, Option<CredRef<'a>>), SetError> {
    let Some(c) = set.lookup(bits, data)? else {
        return Ok((AccessReason::UnknownCard, None));
    };
    let reason = if c.not_before != 0 && now < u64::from(c.not_before) {
        AccessReason::NotYetValid
    } else if c.not_after != 0 && now > u64::from(c.not_after) {
        AccessReason::Expired
    } else {
        AccessReason::Ok
    };
    Ok((reason, Some(c)))
}

fn card_cmp(a: (u8, &[u8]), b: (u8, &[u8])) -> Ordering {
    a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1))
}

/// A read-only view of an encoded set.
#[derive(Debug, Clone, Copy)]
pub struct SetView<'a> {
    blob: &'a [u8],
    version: u64,
    count: usize,
    /// Bytes of an id's length: 1 in `DHS1`, 2 in `DHS2`.
    id_len_bytes: usize,
}

/// One credential inside a [`SetView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredRef<'a> {
    /// Card length in bits.
    pub bits: u8,
    /// Card bits.
    pub data: &'a [u8],
    /// Unix seconds, 0 for none.
    pub not_before: u32,
    /// Unix seconds, 0 for none.
    pub not_after: u32,
    /// The cloud's id.
    pub id: &'a str,
}

impl CredRef<'_> {
    /// An owned copy.
    pub fn to_credential(&self) -> Credential {
        Credential {
            id: self.id.to_owned(),
            bits: self.bits,
            data: self.data.to_vec(),
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

impl<'a> SetView<'a> {
    /// Checks the header; records are checked as they are read.
    pub fn new(blob: &'a [u8]) -> Result<SetView<'a>, SetError> {
        let id_len_bytes = match blob.get(..4) {
            Some(m) if m == MAGIC => 2,
            Some(m) if m == MAGIC_V1 => 1,
            _ => return Err(SetError::Damaged("bad header")),
        };
        let version = u32_at(blob, 4)
            .zip(u32_at(blob, 8))
            .map(|(lo, hi)| u64::from(lo) | u64::from(hi) << 32)
            .ok_or(SetError::Damaged("bad header"))?;
        let count = u32_at(blob, 12).ok_or(SetError::Damaged("bad header"))? as usize;
        let table_end = count.checked_mul(4).and_then(|t| t.checked_add(HEADER));
        if table_end.is_none_or(|end| end > blob.len()) {
            return Err(SetError::Damaged("offset table overruns the blob"));
        }
        Ok(SetView {
            blob,
            version,
            count,
            id_len_bytes,
        })
    }

    /// The snapshot version the set belongs to.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many credentials.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `i`-th credential in card order.
    pub fn get(&self, i: usize) -> Result<CredRef<'a>, SetError> {
        if i >= self.count {
            return Err(SetError::Damaged("index out of range"));
        }
        let at = u32_at(self.blob, HEADER + 4 * i).ok_or(SetError::Damaged("bad offset"))?;
        let mut r = Cursor {
            rest: self.blob.get(at as usize..).unwrap_or_default(),
        };
        let bits = r.take(1)?[0];
        // What encode refuses is damage, never a card: a set that reads is one the door can use.
        if bits == 0 || u64::from(bits) > MAX_BITS {
            return Err(SetError::Damaged("a card's bits are not in 1..=128"));
        }
        let data = r.take(usize::from(bits).div_ceil(8))?;
        let not_before = r.u32()?;
        let not_after = r.u32()?;
        let id_len = match self.id_len_bytes {
            1 => usize::from(r.take(1)?[0]),
            _ => {
                let l = r.take(2)?;
                usize::from(u16::from_le_bytes([l[0], l[1]]))
            }
        };
        let id = std::str::from_utf8(r.take(id_len)?)
            .map_err(|_| SetError::Damaged("id is not UTF-8"))?;
        Ok(CredRef {
            bits,
            data,
            not_before,
            not_after,
            id,
        })
    }

    /// Finds a card by binary search.
    pub fn lookup(&self, bits: u8, data: &[u8]) -> Result<Option<CredRef<'a>>, SetError> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let c = self.get(mid)?;
            match card_cmp((c.bits, c.data), (bits, data)) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(Some(c)),
            }
        }
        Ok(None)
    }

    /// Every credential, in card order.
    pub fn iter(&self) -> impl Iterator<Item = Result<CredRef<'a>, SetError>> + '_ {
        (0..self.count).map(|i| self.get(i))
    }

    /// The set digest, reading every record: a check that the whole set can be read.
    pub fn digest(&self) -> Result<SetDigest, SetError> {
        self.iter().try_fold(SetDigest::default(), |acc, c| {
            Ok(acc.xor(c?.to_credential().digest()))
        })
    }

    /// Every credential, owned, in card order.
    pub fn to_vec(&self) -> Result<Vec<Credential>, SetError> {
        self.iter().map(|c| c.map(|c| c.to_credential())).collect()
    }
}

/// Reads a record, every read checked against the blob's end.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SetError> {
        if self.rest.len() < n {
            return Err(SetError::Damaged("record overruns the blob"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, SetError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(id: &str, bits: u8, data: &[u8], nb: u32, na: u32) -> Credential {
        Credential {
            id: id.into(),
            bits,
            data: data.to_vec(),
            not_before: nb,
            not_after: na,
        }
    }

    #[test]
    fn round_trip_in_card_order_and_lookup() {
        let set = vec![
            cred("c", 26, &[0xbd, 0x88, 0xeb, 0x80], 0, 0),
            cred("a", 8, &[2], 5, 6),
            cred("b", 8, &[1], 0, 9),
            cred("d", 37, &[0x0a, 0x1b, 0x2c, 0x3d, 0x40], 1, 0),
        ];
        let blob = encode(1042, &set).unwrap();
        let view = SetView::new(&blob).unwrap();
        assert_eq!(view.len(), 4);
        assert_eq!(view.version(), 1042);
        let ids: Vec<&str> = view.iter().map(|c| c.unwrap().id).collect();
        assert_eq!(ids, vec!["b", "a", "c", "d"]);
        let found = view.lookup(8, &[2]).unwrap().unwrap();
        assert_eq!((found.id, found.not_before, found.not_after), ("a", 5, 6));
        assert_eq!(view.lookup(8, &[3]).unwrap(), None);
        assert_eq!(
            view.lookup(26, &[0xbd, 0x88, 0xeb, 0x80])
                .unwrap()
                .unwrap()
                .id,
            "c"
        );
        let by_id = |mut v: Vec<Credential>| {
            v.sort_by(|a, b| a.id.cmp(&b.id));
            v
        };
        assert_eq!(by_id(view.to_vec().unwrap()), by_id(set.clone()));
        assert!(SetView::new(&encode(1, &[]).unwrap()).unwrap().is_empty());
        assert_eq!(view.digest().unwrap(), SetDigest::of(&set));
    }

    #[test]
    fn damaged_blobs_are_errors_not_panics() {
        let blob = encode(3, &[cred("a", 8, &[1], 0, 0), cred("b", 16, &[1, 2], 0, 0)]).unwrap();
        for cut in 0..blob.len() {
            if let Ok(view) = SetView::new(&blob[..cut]) {
                for c in view.iter() {
                    let _ = c;
                }
                let _ = view.lookup(16, &[1, 2]);
            }
        }
        let mut bad = blob.clone();
        bad[HEADER] = 0xff; // first offset far out of range
        let view = SetView::new(&bad).unwrap();
        assert!(view.get(0).is_err());
        assert!(SetView::new(b"XXXX\0\0\0\0\0\0\0\0\0\0\0\0").is_err());
        let mut huge = blob.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(SetView::new(&huge).is_err());
        // Found by fuzzing (credset_view): a record whose bits encode refuses read as a card.
        for bits in [0u8, 129, 255] {
            let mut odd = blob.clone();
            let at = u32_at(&blob, HEADER).unwrap() as usize;
            odd[at] = bits;
            let view = SetView::new(&odd).unwrap();
            assert_eq!(
                view.get(0).err(),
                Some(SetError::Damaged("a card's bits are not in 1..=128"))
            );
        }
    }

    #[test]
    fn sets_the_layout_cannot_hold_are_refused_not_cut() {
        let long = "é".repeat(32_768);
        for set in [
            vec![cred(&long, 8, &[1], 0, 0)],
            vec![cred("a", 9, &[1], 0, 0)],
            vec![cred("a", 0, &[], 0, 0)],
            vec![cred("a", 129, &[0; 17], 0, 0)],
        ] {
            assert!(matches!(encode(1, &set), Err(SetError::Unencodable(_))));
        }
        let longest = "\u{1F600}".repeat(64);
        let blob = encode(1, &[cred(&longest, 8, &[1], 0, 0)]).unwrap();
        let view = SetView::new(&blob).unwrap();
        assert_eq!(view.get(0).unwrap().id, longest);
    }

    /// The first layout, as the encoder before `DHS2` wrote it (written out here byte by byte).
    #[test]
    fn the_first_layout_is_still_read() {
        let mut blob = b"DHS1".to_vec();
        blob.extend_from_slice(&7u64.to_le_bytes());
        blob.extend_from_slice(&2u32.to_le_bytes());
        blob.extend_from_slice(&24u32.to_le_bytes());
        blob.extend_from_slice(&37u32.to_le_bytes());
        // 8 bits 0x01, not_before 5, not_after 0, id "ab"
        blob.extend_from_slice(&[8, 1, 5, 0, 0, 0, 0, 0, 0, 0, 2, b'a', b'b']);
        blob.extend_from_slice(&[16, 1, 2, 0, 0, 0, 0, 9, 0, 0, 0, 1, b'c']);
        let view = SetView::new(&blob).unwrap();
        assert_eq!(view.version(), 7);
        assert_eq!(
            view.to_vec().unwrap(),
            vec![cred("ab", 8, &[1], 5, 0), cred("c", 16, &[1, 2], 0, 9)]
        );
        assert_eq!(view.lookup(16, &[1, 2]).unwrap().unwrap().id, "c");
        // An id of 64 four-byte characters, cut by that encoder at byte 255: damaged, not misread.
        let mut cut = blob[..16].to_vec();
        cut[12..16].copy_from_slice(&1u32.to_le_bytes());
        cut.extend_from_slice(&20u32.to_le_bytes());
        cut.extend_from_slice(&[8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 255]);
        cut.extend_from_slice(&"\u{1F600}".repeat(64).as_bytes()[..255]);
        let view = SetView::new(&cut).unwrap();
        assert_eq!(view.get(0), Err(SetError::Damaged("id is not UTF-8")));
        assert!(view.digest().is_err());
    }

    #[test]
    fn decisions_follow_the_validity_window() {
        let set = [cred("w", 8, &[1], 100, 200), cred("o", 8, &[2], 0, 0)];
        let blob = encode(1, &set).unwrap();
        let view = SetView::new(&blob).unwrap();
        let reason = |data: u8, now| decide(&view, 8, &[data], now).unwrap().0;
        assert_eq!(reason(1, 99), AccessReason::NotYetValid);
        assert_eq!(reason(1, 100), AccessReason::Ok);
        assert_eq!(reason(1, 200), AccessReason::Ok);
        assert_eq!(reason(1, 201), AccessReason::Expired);
        assert_eq!(reason(2, u64::MAX), AccessReason::Ok);
        assert_eq!(
            decide(&view, 8, &[3], 0).unwrap(),
            (AccessReason::UnknownCard, None)
        );
    }
}

//! A credential set as the store keeps it: one blob, sorted by card (bits, then data), with an
//! offset table, so a card can be looked up by binary search on the stored bytes without decoding
//! the set. A `hub` door decides each card read this way, with no copy of its set in memory, and
//! a full table for a `stored` door comes out already in the order the reader link wants.
//!
//! Layout (integers little-endian): magic `DHS1`, the snapshot version u64, count u32, `count`
//! record offsets u32 (from the start of the blob), then the records: bits u8, data ceil(bits/8)
//! bytes, not_before u32, not_after u32, id length u8, id (UTF-8). The version travels with the set
//! so a reader of the store can tell which snapshot it holds.

use std::cmp::Ordering;

use crate::snapshot::Credential;

const MAGIC: &[u8; 4] = b"DHS1";
const HEADER: usize = 16;

/// A stored set that cannot be read (a damaged store).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored credential set is damaged: {0}")]
pub struct SetError(&'static str);

/// Encodes version `version`'s set, sorted by card. Ids are at most 64 characters (checked when
/// parsed), so their UTF-8 length fits in a byte.
pub fn encode(version: u64, set: &[Credential]) -> Vec<u8> {
    let mut order: Vec<&Credential> = set.iter().collect();
    order.sort_by(|a, b| card_cmp((a.bits, &a.data), (b.bits, &b.data)));
    let records: usize = set.iter().map(|c| 10 + c.data.len() + c.id.len()).sum();
    let mut out = Vec::with_capacity(HEADER + 4 * set.len() + records);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(set.len() as u32).to_le_bytes());
    let mut offset = HEADER + 4 * set.len();
    for c in &order {
        out.extend_from_slice(&(offset as u32).to_le_bytes());
        offset += 10 + c.data.len() + c.id.len().min(255);
    }
    for c in order {
        c.encode_entry(&mut out);
        let id = &c.id.as_bytes()[..c.id.len().min(255)];
        out.push(id.len() as u8);
        out.extend_from_slice(id);
    }
    out
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
        if blob.len() < HEADER || &blob[..4] != MAGIC {
            return Err(SetError("bad header"));
        }
        let version = u32_at(blob, 4)
            .zip(u32_at(blob, 8))
            .map(|(lo, hi)| u64::from(lo) | u64::from(hi) << 32)
            .ok_or(SetError("bad header"))?;
        let count = u32_at(blob, 12).ok_or(SetError("bad header"))? as usize;
        if HEADER + 4 * count > blob.len() {
            return Err(SetError("offset table overruns the blob"));
        }
        Ok(SetView {
            blob,
            version,
            count,
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
            return Err(SetError("index out of range"));
        }
        let at = u32_at(self.blob, HEADER + 4 * i).ok_or(SetError("bad offset"))? as usize;
        let b = self.blob;
        let bits = *b.get(at).ok_or(SetError("record overruns the blob"))?;
        let n = usize::from(bits).div_ceil(8);
        let data = b
            .get(at + 1..at + 1 + n)
            .ok_or(SetError("record overruns the blob"))?;
        let not_before = u32_at(b, at + 1 + n).ok_or(SetError("record overruns the blob"))?;
        let not_after = u32_at(b, at + 5 + n).ok_or(SetError("record overruns the blob"))?;
        let id_len = usize::from(
            *b.get(at + 9 + n)
                .ok_or(SetError("record overruns the blob"))?,
        );
        let id = b
            .get(at + 10 + n..at + 10 + n + id_len)
            .ok_or(SetError("record overruns the blob"))?;
        let id = std::str::from_utf8(id).map_err(|_| SetError("id is not UTF-8"))?;
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

    /// Every credential, owned, in card order.
    pub fn to_vec(&self) -> Result<Vec<Credential>, SetError> {
        self.iter().map(|c| c.map(|c| c.to_credential())).collect()
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
        let blob = encode(1042, &set);
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
        assert!(SetView::new(&encode(1, &[])).unwrap().is_empty());
    }

    #[test]
    fn damaged_blobs_are_errors_not_panics() {
        let blob = encode(3, &[cred("a", 8, &[1], 0, 0), cred("b", 16, &[1, 2], 0, 0)]);
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
        let mut huge = blob;
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(SetView::new(&huge).is_err());
    }
}

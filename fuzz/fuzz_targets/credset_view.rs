//! The stored-set decoder (`credset::SetView`) on any blob, as a damaged store could hold it:
//! the header, every record, lookups. A set that reads encodes to a blob that reads back to the
//! same set, in which every card is found by lookup.
#![no_main]

use doorhub::credset::{SetView, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|blob: &[u8]| {
    let Ok(view) = SetView::new(blob) else {
        return;
    };
    assert!(view.len() <= blob.len() / 4);
    // Every record, and a lookup of each card (the stored order may be damaged: no result is
    // promised, only an answer).
    for c in view.iter().flatten() {
        let _ = view.lookup(c.bits, c.data);
    }
    let _ = view.lookup(26, &[0xBD, 0x88, 0xEB, 0x80]);
    let Ok(set) = view.to_vec() else {
        return;
    };

    let again = encode(view.version(), &set).expect("a set that reads encodes");
    let reread = SetView::new(&again).expect("an encoded set reads");
    assert_eq!(reread.version(), view.version());
    let mut sorted = set.clone();
    sorted.sort_by(|a, b| (a.bits, &a.data).cmp(&(b.bits, &b.data)));
    let reread_set = reread.to_vec().expect("an encoded set reads");
    assert_eq!(reread_set, sorted);
    for b in &sorted {
        let found = reread
            .lookup(b.bits, &b.data)
            .expect("a clean set looks up");
        assert!(found.is_some_and(|f| f.bits == b.bits && f.data == b.data.as_slice()));
    }
});

//! `osdp::frame::decode` on any bytes: never panics, consumes what it says it does, and a frame
//! that decodes encodes to bytes that decode to it again: exactly the bytes it came from, unless
//! those set CTRL bits 4-7, which the decoder ignores (the contract defines bits 0-3 only) and the
//! encoder writes as zero.
#![no_main]

use doorhub::osdp::frame::{self, MARK, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((frame, consumed))) = frame::decode(data) else {
        return;
    };
    assert!(consumed <= data.len() && consumed <= MAX_FRAME + 1);
    let mark = data.first() == Some(&MARK);
    let encoded = frame.encode(mark).expect("a decoded frame encodes");
    assert_eq!(frame::decode(&encoded), Ok(Some((frame.clone(), consumed))));
    assert_eq!(frame.encoded_len(), Ok(consumed - usize::from(mark)));
    // CTRL bits 4-7 are ignored and re-encoded as zero: then the bytes, and so the MAC input
    // rebuilt from the frame, differ from what was received.
    let ctrl = data[usize::from(mark) + 4];
    if ctrl & 0xF0 != 0 {
        return;
    }
    assert_eq!(encoded, data[..consumed]);
    if frame.mac.is_some() {
        // What a Secure Channel MAC covers is the frame from SOM through the data.
        let input = frame.mac_input().expect("a decoded frame has a MAC input");
        let check = if frame.use_crc { 2 } else { 1 };
        assert_eq!(input, data[usize::from(mark)..consumed - 4 - check]);
    }
});

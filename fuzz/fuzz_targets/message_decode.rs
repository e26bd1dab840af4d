//! `Command::decode` and `Reply::decode` for every code on any data. Input: the code, then the
//! data. A message that decodes has that code and encodes back to the same data (osdp_NAK: its
//! reason byte; the error-specific bytes after it are ignored), which decodes to it again.
#![no_main]

use doorhub::osdp::message::{Command, REPLY_NAK, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&code, data)) = input.split_first() else {
        return;
    };
    if let Ok(command) = Command::decode(code, data) {
        assert_eq!(command.code(), code);
        let encoded = command.encode_data();
        assert_eq!(encoded, data);
        assert_eq!(Command::decode(code, &encoded), Ok(command.clone()));
        let frame = command.to_frame(0, 1);
        assert_eq!(Command::from_frame(&frame), Ok(command));
    }
    if let Ok(reply) = Reply::decode(code, data) {
        assert_eq!(reply.code(), code);
        let encoded = reply.encode_data();
        if code == REPLY_NAK {
            assert_eq!(encoded, data[..1]);
        } else {
            assert_eq!(encoded, data);
        }
        assert_eq!(Reply::decode(code, &encoded), Ok(reply.clone()));
        let frame = reply.to_frame(0x7E, 3);
        assert_eq!(Reply::from_frame(&frame), Ok(reply));
    }
});

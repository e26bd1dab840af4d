//! The manufacturer-specific sub-commands and replies (`push::mfg`) on any bytes. Input: the
//! osdp_MFG / osdp_MFGREP data, vendor code first. What decodes encodes back to the same bytes.
#![no_main]

use doorhub::push::mfg::{DEFAULT_VENDOR_CODE, MfgCommand, MfgReply, strip_vendor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let vendor = DEFAULT_VENDOR_CODE;
    let command = MfgCommand::decode_with_vendor(vendor, data);
    let reply = MfgReply::decode_with_vendor(vendor, data);
    let body = strip_vendor(vendor, data);
    if let Ok(command) = command {
        assert_eq!(command.encode_with_vendor(vendor), data);
        assert_eq!(MfgCommand::decode(&command.encode()), Ok(command));
    }
    if let Ok(reply) = reply {
        assert_eq!(reply.encode_with_vendor(vendor), data);
        assert_eq!(MfgReply::decode(&reply.encode()), Ok(reply));
    }
    // Without the vendor check: the same bytes read as a body from the sub-command on.
    if body.is_err() {
        if let Ok(command) = MfgCommand::decode(data) {
            assert_eq!(command.encode(), data);
        }
        if let Ok(reply) = MfgReply::decode(data) {
            assert_eq!(reply.encode(), data);
        }
    }
});

//! Every packet that decodes from raw bytes, in any protocol version, must encode to bytes
//! that decode to an equal packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::codec_checks::check_roundtrip(data);
});

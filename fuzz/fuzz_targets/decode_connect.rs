//! `decode_connect` on raw bytes, whole and byte by byte, under a small and a large maximum
//! packet size, compared with `decode_packet` on the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::codec_checks::check_decode_connect(data);
});

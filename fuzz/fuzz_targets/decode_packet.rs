//! `decode_packet` on a stream fed whole, in fuzzer-chosen chunks and byte by byte, in every
//! protocol version, under a small and a large maximum packet size. The input layout is
//! `switchyard_fuzz::codec_checks::SplitInput`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::codec_checks::check_decode_packet(data);
});

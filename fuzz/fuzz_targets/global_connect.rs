//! The global endpoint's first steps on untrusted bytes: `read_connect` over an in-memory
//! stream delivered in fuzzer-chosen chunks, the CONNACK refusal for a bad CONNECT, and the
//! routing decision for a good one. The input layout is
//! `switchyard_fuzz::codec_checks::SplitInput`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::global_checks::check_global_connect(data);
});

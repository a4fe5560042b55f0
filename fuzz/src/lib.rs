//! Shared checks of the Switchyard fuzz targets. Each target in `fuzz_targets/` feeds its input
//! to one function here, and `crates/codec/tests/fuzz_corpus.rs` replays the committed corpus
//! through the same functions of [`codec_checks`].

pub mod codec_checks;
pub mod global_checks;

//! Replays the committed fuzz corpus and the crash reproducers through the checks of the fuzz
//! targets, so the ordinary test suite keeps checking what fuzzing found, without cargo-fuzz.
//!
//! The checks are the fuzz crate's own (`fuzz/src/codec_checks.rs`), included here by path so
//! the two cannot drift apart. Each directory holds one input per file: `fuzz/corpus/<target>`
//! is the minimized corpus and `fuzz/regressions/<target>` holds inputs that once failed.

#[path = "../../../fuzz/src/codec_checks.rs"]
mod codec_checks;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Returns the path of `fuzz/<kind>/<target>` in the repository.
fn fuzz_dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target)
}

/// Returns the files of `dir` in name order, or none when the directory does not exist.
fn input_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("reading a corpus directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file of the corpus and the regressions of `target` and fails with the
/// names of the files whose check panicked. Returns the number of corpus files.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let corpus = input_files(&fuzz_dir("corpus", target));
    let regressions = input_files(&fuzz_dir("regressions", target));
    let mut failures = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data =
            fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: checks failed for {failures:#?}"
    );
    corpus.len()
}

#[test]
fn decode_packet_corpus_passes() {
    let count = replay("decode_packet", codec_checks::check_decode_packet);
    assert!(count > 0, "fuzz/corpus/decode_packet is empty or missing");
}

#[test]
fn decode_connect_corpus_passes() {
    let count = replay("decode_connect", codec_checks::check_decode_connect);
    assert!(count > 0, "fuzz/corpus/decode_connect is empty or missing");
}

#[test]
fn roundtrip_corpus_passes() {
    let count = replay("roundtrip", codec_checks::check_roundtrip);
    assert!(count > 0, "fuzz/corpus/roundtrip is empty or missing");
}

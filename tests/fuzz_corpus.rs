//! Replays the committed cargo-fuzz seed corpus (`fuzz/corpus/<target>/`)
//! through the same invariant checks the fuzz targets run, so every
//! `cargo test` exercises them without a nightly toolchain or libFuzzer.

use std::fs;
use std::path::Path;

use ringmux::codec::fuzzing;

/// Run `check` on every file of `fuzz/corpus/<target>/`; the directory must
/// hold at least one file.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "{}: empty corpus", dir.display());
    for path in entries {
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Name the failing file: the panic message alone doesn't say which.
        let result = std::panic::catch_unwind(|| check(&data));
        if let Err(panic) = result {
            eprintln!("corpus file {} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn request_head_corpus() {
    replay("request_head", fuzzing::request_head);
}

#[test]
fn chunked_corpus() {
    replay("chunked", fuzzing::chunked);
}

#[test]
fn response_head_corpus() {
    replay("response_head", fuzzing::response_head);
}

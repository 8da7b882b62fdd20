//! Fuzz target for `BodyDecoder` (chunked): whole, split in two, byte by byte.
//! The invariants live in `ringmux::codec::fuzzing::chunked`, shared with
//! `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringmux::codec::fuzzing::chunked(data);
});

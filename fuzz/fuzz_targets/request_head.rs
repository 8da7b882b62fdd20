//! Fuzz target for `parse_request`: whole input, prefixes, pipelined heads.
//! The invariants live in `ringmux::codec::fuzzing::request_head`, shared with
//! `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringmux::codec::fuzzing::request_head(data);
});

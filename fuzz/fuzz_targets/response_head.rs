//! Fuzz target for `parse_response`: every request method / client version / keep-alive context.
//! The invariants live in `ringmux::codec::fuzzing::response_head`, shared with
//! `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringmux::codec::fuzzing::response_head(data);
});

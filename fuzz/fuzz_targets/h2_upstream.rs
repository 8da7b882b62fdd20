//! Fuzz target: `ringmux::h2::fuzzing::upstream` (the invariants live there,
//! shared with the corpus replay that `cargo test` runs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringmux::h2::fuzzing::upstream(data);
});

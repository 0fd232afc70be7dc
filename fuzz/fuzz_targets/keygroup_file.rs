//! Fuzz target: see `flowstate_fuzz::keygroup_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::keygroup_file(data));

//! Fuzz target: see `flowstate_fuzz::operator_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::operator_file(data));

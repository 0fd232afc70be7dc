//! Fuzz target: see `flowstate_fuzz::state_schema`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::state_schema(data));

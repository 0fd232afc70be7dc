//! Fuzz target: see `flowstate_fuzz::checkpoint_history`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::checkpoint_history(data));

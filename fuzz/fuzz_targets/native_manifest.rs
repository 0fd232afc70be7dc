//! Fuzz target: see `flowstate_fuzz::native_manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::native_manifest(data));

//! Fuzz target: see `flowstate_fuzz::rocksdb_list`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::rocksdb_list(data));

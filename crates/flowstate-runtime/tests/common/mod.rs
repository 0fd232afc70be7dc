//! What the runtime's integration tests share: the backends a job can run on in this
//! build, so that the same tests run heap-only (`--no-default-features`) and with
//! RocksDB.

use std::path::Path;

use flowstate_runtime::BackendChoice;

/// Every backend this build has: the heap, and RocksDB with its databases under `dir`
/// when the `rocksdb` feature is on.
pub fn backends(dir: &Path) -> Vec<BackendChoice> {
    #[allow(unused_mut)] // one element heap-only
    let mut all = vec![BackendChoice::Heap];
    #[cfg(feature = "rocksdb")]
    all.push(BackendChoice::RocksDb(
        flowstate_runtime::RocksDbOptions::new(dir),
    ));
    #[cfg(not(feature = "rocksdb"))]
    let _ = dir;
    all
}

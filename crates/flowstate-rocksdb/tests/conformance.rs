//! The shared conformance suite, unchanged, against the RocksDB backend in each
//! checkpoint format: canonical, native full and incremental; and once more with a
//! deferred-write budget of a few entries, so that writes also reach RocksDB between
//! snapshots, not only at them; once with a read-entry cache of a few entries, so
//! that it empties and fills again all through; and once without one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use flowstate_conformance::BackendFactory;
use flowstate_core::backend::KeyedBackendConfig;
use flowstate_core::error::StateResult;
use flowstate_core::snapshot::KeyedStateHandle;
use flowstate_core::state::StateKey;
use flowstate_core::storage::CheckpointStorage;
use flowstate_rocksdb::{RocksDbKeyedStateBackend, RocksDbOptions, SnapshotMode};

struct Rocks {
    dir: tempfile::TempDir,
    mode: SnapshotMode,
    deferred_write_bytes: usize,
    entry_cache_bytes: usize,
}

impl Rocks {
    fn new(mode: SnapshotMode) -> Self {
        Rocks {
            dir: tempfile::tempdir().expect("temp dir"),
            mode,
            deferred_write_bytes: RocksDbOptions::new("").deferred_write_bytes,
            entry_cache_bytes: RocksDbOptions::new("").entry_cache_bytes,
        }
    }
    fn with_deferred_write_bytes(mut self, bytes: usize) -> Self {
        self.deferred_write_bytes = bytes;
        self
    }
    fn with_entry_cache_bytes(mut self, bytes: usize) -> Self {
        self.entry_cache_bytes = bytes;
        self
    }
    fn options(&self) -> RocksDbOptions {
        RocksDbOptions::new(self.dir.path())
            .with_snapshot_mode(self.mode)
            .with_block_cache_bytes(8 << 20)
            .with_write_buffer_bytes(1 << 20)
            .with_deferred_write_bytes(self.deferred_write_bytes)
            .with_entry_cache_bytes(self.entry_cache_bytes)
    }
}

impl BackendFactory for Rocks {
    type Backend<K: StateKey> = RocksDbKeyedStateBackend<K>;
    fn create<K: StateKey>(
        &self,
        config: KeyedBackendConfig<K>,
    ) -> StateResult<RocksDbKeyedStateBackend<K>> {
        self.options().create(config)
    }
    fn restore<K: StateKey>(
        &self,
        config: KeyedBackendConfig<K>,
        storage: &dyn CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> StateResult<RocksDbKeyedStateBackend<K>> {
        self.options().restore(config, storage, handles)
    }
}

mod canonical {
    use super::*;
    flowstate_conformance::conformance_suite!(Rocks::new(SnapshotMode::Canonical));
}

mod native_full {
    use super::*;
    flowstate_conformance::conformance_suite!(Rocks::new(SnapshotMode::NativeFull));
}

mod incremental {
    use super::*;
    flowstate_conformance::conformance_suite!(Rocks::new(SnapshotMode::Incremental));
}

mod small_deferred_batches {
    use super::*;
    flowstate_conformance::conformance_suite!(
        Rocks::new(SnapshotMode::Incremental).with_deferred_write_bytes(256)
    );
}

mod small_entry_cache {
    use super::*;
    flowstate_conformance::conformance_suite!(
        Rocks::new(SnapshotMode::Incremental)
            .with_deferred_write_bytes(256)
            .with_entry_cache_bytes(400)
    );
}

mod no_entry_cache {
    use super::*;
    flowstate_conformance::conformance_suite!(
        Rocks::new(SnapshotMode::Canonical).with_entry_cache_bytes(0)
    );
}

//! The shared conformance suite, unchanged, against the RocksDB backend in each
//! checkpoint format: canonical, native full and incremental.
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
}

impl Rocks {
    fn new(mode: SnapshotMode) -> Self {
        Rocks {
            dir: tempfile::tempdir().expect("temp dir"),
            mode,
        }
    }
    fn options(&self) -> RocksDbOptions {
        RocksDbOptions::new(self.dir.path())
            .with_snapshot_mode(self.mode)
            .with_block_cache_bytes(8 << 20)
            .with_write_buffer_bytes(1 << 20)
    }
}

impl BackendFactory for Rocks {
    type Backend<K: StateKey> = RocksDbKeyedStateBackend<K>;
    fn create<K: StateKey>(
        &self,
        config: KeyedBackendConfig<K>,
    ) -> StateResult<RocksDbKeyedStateBackend<K>> {
        RocksDbKeyedStateBackend::new(config, self.options())
    }
    fn restore<K: StateKey>(
        &self,
        config: KeyedBackendConfig<K>,
        storage: &dyn CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> StateResult<RocksDbKeyedStateBackend<K>> {
        RocksDbKeyedStateBackend::restore(config, self.options(), storage, handles)
    }
}

macro_rules! conformance {
    ($mode:ident, $($name:ident),* $(,)?) => {
        #[allow(non_snake_case)]
        mod $mode {
            use super::*;
            $( #[test] fn $name() { flowstate_conformance::$name(&Rocks::new(SnapshotMode::$mode)); } )*
        }
    };
}

macro_rules! suite {
    ($($mode:ident),*) => {
        $( conformance!(
            $mode,
            value_state_matches_model,
            list_state_matches_model,
            map_state_matches_model,
            reducing_state_matches_model,
            aggregating_state_matches_model,
            snapshot_round_trip_all_kinds,
            rescaling_every_key_once,
            snapshot_isolated_from_later_writes,
            snapshot_isolated_from_concurrent_writer,
            corrupt_snapshots_are_rejected,
            bad_input_is_typed_errors,
            serializer_compatibility_on_restore,
            unregistered_restored_state_is_kept,
            same_descriptor_same_state,
            serialized_value_access,
            merge_namespaces,
            reads_golden_keyed_snapshot,
            shared_registry_retention,
        ); )*
    };
}

suite!(Canonical, NativeFull, Incremental);

//! Runs the shared conformance suite against the heap backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use flowstate_conformance::BackendFactory;
use flowstate_core::backend::KeyedBackendConfig;
use flowstate_core::error::StateResult;
use flowstate_core::snapshot::KeyedStateHandle;
use flowstate_core::state::StateKey;
use flowstate_core::storage::CheckpointStorage;
use flowstate_heap::HeapKeyedStateBackend;

struct Heap;

impl BackendFactory for Heap {
    type Backend<K: StateKey> = HeapKeyedStateBackend<K>;
    fn create<K: StateKey>(
        &self,
        config: KeyedBackendConfig<K>,
    ) -> StateResult<HeapKeyedStateBackend<K>> {
        HeapKeyedStateBackend::new(config)
    }
    fn restore<K: StateKey>(
        &self,
        config: KeyedBackendConfig<K>,
        storage: &dyn CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> StateResult<HeapKeyedStateBackend<K>> {
        HeapKeyedStateBackend::restore(config, storage, handles)
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $( #[test] fn $name() { flowstate_conformance::$name(&Heap); } )*
    };
}

conformance!(
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
);

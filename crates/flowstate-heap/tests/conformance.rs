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

flowstate_conformance::conformance_suite!(Heap);

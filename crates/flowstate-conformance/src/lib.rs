//! The conformance suite every keyed state backend runs unchanged.
//!
//! A backend crate implements [`BackendFactory`] and calls each `pub fn` of this crate
//! from one `#[test]` (see `flowstate-heap/tests/conformance.rs`). The suite checks
//! behaviour, not code paths: every state kind against an in-memory model over random
//! operation sequences (with snapshot/restore round trips in the middle), rescaling
//! across parallelisms with every key accounted for, snapshot isolation from later
//! writes, corruption detection, serializer compatibility and schema evolution on restore, bad input, and state TTL.
//!
//! It is test support: a failed expectation panics with a message, as a test would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod evolution;
mod model;
mod scenarios;
pub mod serializers;
mod ttl;

pub use evolution::{
    Evolution, evolves, reads_golden_evolution_savepoint, schema_evolution_matrix,
    schema_evolution_refusals,
};
pub use model::{
    aggregating_state_matches_model, list_state_matches_model, map_state_matches_model,
    reducing_state_matches_model, value_state_matches_model,
};
pub use scenarios::{
    bad_input_is_typed_errors, corrupt_snapshots_are_rejected, fixed_integer_serializer_on_restore,
    golden_dir, map_scans_of_every_size, merge_namespaces, reads_golden_keyed_snapshot,
    rescaling_every_key_once, same_descriptor_same_state, serialized_value_access,
    serializer_compatibility_on_restore, shared_registry_retention,
    snapshot_isolated_from_concurrent_writer, snapshot_isolated_from_later_writes,
    snapshot_round_trip_all_kinds, unregistered_restored_state_is_kept,
};
pub use ttl::{
    ttl_full_snapshot_cleanup, ttl_per_element_expiry, ttl_restore_toggled_and_changed,
    ttl_visibility_table,
};

use flowstate_core::backend::{KeyedBackendConfig, KeyedStateBackend};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::serializer::SerdeSerializer;
use std::sync::atomic::{AtomicU64, Ordering};

use flowstate_core::snapshot::{AsyncKeyedSnapshot, KeyedStateHandle};
use flowstate_core::state::StateKey;
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::ObjectCheckpointStorage;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Declares one `#[test]` per scenario of the suite for a factory expression, so every
/// backend runs every scenario, including ones added later.
///
/// ```text
/// flowstate_conformance::conformance_suite!(MyFactory::new());
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::conformance_suite!(@tests $factory;
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
            fixed_integer_serializer_on_restore,
            unregistered_restored_state_is_kept,
            same_descriptor_same_state,
            serialized_value_access,
            merge_namespaces,
            map_scans_of_every_size,
            reads_golden_keyed_snapshot,
            shared_registry_retention,
            ttl_visibility_table,
            ttl_per_element_expiry,
            ttl_full_snapshot_cleanup,
            ttl_restore_toggled_and_changed,
            schema_evolution_matrix,
            schema_evolution_refusals,
            reads_golden_evolution_savepoint,
        );
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        $( #[test] fn $name() { $crate::$name(&$factory); } )*
    };
}

/// How the suite makes and restores backends of the implementation under test.
pub use flowstate_core::backend::KeyedBackendFactory as BackendFactory;

/// A backend configuration with the default serde key serializer.
pub fn config<K: Serialize + DeserializeOwned + 'static>(
    max_parallelism: u32,
    range: KeyGroupRange,
) -> KeyedBackendConfig<K> {
    KeyedBackendConfig {
        max_parallelism,
        key_group_range: range,
        key_serializer: SerdeSerializer::<K>::arc(),
    }
}

/// Real checkpoint storage in a fresh temporary directory (kept alive by the guard).
pub fn temp_storage() -> (tempfile::TempDir, ObjectCheckpointStorage) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = ObjectCheckpointStorage::local(dir.path()).expect("local storage");
    (dir, storage)
}

static CHECKPOINT_IDS: AtomicU64 = AtomicU64::new(1);

/// A fresh checkpoint id (unique within the test process).
pub fn next_checkpoint_id() -> u64 {
    CHECKPOINT_IDS.fetch_add(1, Ordering::Relaxed)
}

/// Takes checkpoint (both phases) of `backend` to `path` and confirms it complete, as a
/// coordinator would.
pub fn snapshot_to<K: StateKey, B: KeyedStateBackend<K>>(
    backend: &B,
    storage: &dyn CheckpointStorage,
    path: &str,
) -> KeyedStateHandle {
    let id = next_checkpoint_id();
    let handle = backend
        .snapshot(id)
        .expect("synchronous snapshot part")
        .write(storage, path)
        .expect("asynchronous snapshot part");
    backend
        .notify_checkpoint_complete(id)
        .expect("notify complete");
    handle
}

//! The keyed state backend interface.
//!
//! A keyed backend stores the keyed state of one operator instance for its key-group
//! range. The runtime sets the current key before each record; state handles obtained
//! from descriptors then act on that key (and on their own current namespace).
//! Snapshots have two phases: [`KeyedStateBackend::snapshot`] is the synchronous part
//! and returns a [`KeyedSnapshot`] that can be written on another thread while
//! processing continues; it captures exactly the state at the call.
//!
//! Backends are chosen by configuration; user code only sees the `dyn` state traits.

use std::rc::Rc;
use std::sync::Arc;

use crate::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use crate::error::{StateError, StateResult};
use crate::keygroup::{KeyGroupRange, check_max_parallelism};
use crate::serializer::{IntegerEncoding, TypeSerializer};
use crate::snapshot::{AsyncKeyedSnapshot, KeyedSnapshot, KeyedStateHandle};
use crate::state::{
    InternalAggregatingState, InternalListState, InternalMapState, InternalReducingState,
    InternalValueState, Namespace, StateKey, StateValue,
};
use crate::storage::CheckpointStorage;

/// What every keyed backend is built from.
pub struct KeyedBackendConfig<K> {
    /// Number of key groups; fixed for the life of the state.
    pub max_parallelism: u32,
    /// The key groups this instance owns.
    pub key_group_range: KeyGroupRange,
    /// Serializer of keys; its bytes determine the key group.
    pub key_serializer: Arc<dyn TypeSerializer<K>>,
}

impl<K> Clone for KeyedBackendConfig<K> {
    fn clone(&self) -> Self {
        KeyedBackendConfig {
            max_parallelism: self.max_parallelism,
            key_group_range: self.key_group_range,
            key_serializer: self.key_serializer.clone(),
        }
    }
}

impl<K> KeyedBackendConfig<K> {
    /// Validates max parallelism and that the range lies below it.
    pub fn validate(&self) -> StateResult<()> {
        check_max_parallelism(self.max_parallelism)?;
        if let Some(end) = self.key_group_range.end()
            && end >= self.max_parallelism
        {
            return Err(StateError::InvalidArgument(format!(
                "{} exceeds max parallelism {}",
                self.key_group_range, self.max_parallelism
            )));
        }
        Ok(())
    }
}

impl<K: 'static> KeyedBackendConfig<K> {
    /// Whether keys are integers serialized by postcard ([`crate::serializer::SerdeSerializer`]),
    /// whose bytes [`IntegerEncoding`] builds in registers: a backend then finds a key's
    /// group without calling the serializer, as `key_by` does. Asks the serializer for
    /// its snapshot: call it once, when the backend is made.
    pub fn integer_keys(&self) -> bool {
        IntegerEncoding::writes(self.key_serializer.as_ref())
    }
}

/// Makes and restores keyed backends of one kind: the piece of configuration that picks
/// a backend, so code that runs operators never names one.
pub trait KeyedBackendFactory {
    /// The backend type for keys `K`.
    type Backend<K: StateKey>: KeyedStateBackend<K>;
    /// A fresh, empty backend.
    fn create<K: StateKey>(&self, config: KeyedBackendConfig<K>) -> StateResult<Self::Backend<K>>;
    /// A backend restored from snapshots (any parallelism, same max parallelism).
    fn restore<K: StateKey>(
        &self,
        config: KeyedBackendConfig<K>,
        storage: &dyn CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> StateResult<Self::Backend<K>>;
}

/// The keyed state of one operator instance.
pub trait KeyedStateBackend<K: StateKey> {
    /// The asynchronous part of this backend's checkpoints.
    type Snapshot: AsyncKeyedSnapshot;

    /// Number of key groups.
    fn max_parallelism(&self) -> u32;
    /// Key groups owned by this instance.
    fn key_group_range(&self) -> KeyGroupRange;
    /// The key group `key` belongs to.
    fn key_group_of(&self, key: &K) -> StateResult<u32>;
    /// Makes `key` current; errors if its key group is not owned here.
    fn set_current_key(&self, key: K) -> StateResult<()>;
    /// Makes `key` current when its key group is already known: the runtime's
    /// `key_by` computes it once, on the sending side, to route the record, and a
    /// backend need not serialize and hash the key again for it. `key_group` must be
    /// [`KeyedStateBackend::key_group_of`] of `key` (debug builds check it); the
    /// default ignores it.
    fn set_current_key_in_group(&self, key: K, key_group: u32) -> StateResult<()> {
        let _ = key_group;
        self.set_current_key(key)
    }
    /// Hints that `keys` (each with its key group) are about to become current, so a
    /// backend may fetch their entries ahead of use: the heap backend brings them into
    /// the CPU cache, the RocksDB backend reads them with one batched `MultiGet`. The
    /// keyed operator calls it for the next few records of a batch before running them:
    /// their accesses then overlap instead of waiting one after another. It changes no
    /// state and reports nothing (a key group not owned here is ignored; a failed read
    /// ahead leaves the reads to the records); the default does nothing.
    fn prefetch(&self, keys: &[(u32, &K)]) {
        let _ = keys;
    }
    /// The current key.
    fn current_key(&self) -> Option<K>;
    /// The current key's key group.
    fn current_key_group(&self) -> Option<u32>;

    /// Gets or creates a value state; with an enabled TTL in the descriptor, a
    /// [`crate::ttl`] decorator over the stored form.
    fn value_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ValueStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalValueState<N, T>>> {
        match desc.enabled_ttl() {
            Some(ttl) => {
                crate::ttl::value_state(desc, ttl, |stored| self.create_value_state(stored))
            }
            None => self.create_value_state(desc),
        }
    }
    /// Gets or creates a list state (with TTL as for [`KeyedStateBackend::value_state`]).
    fn list_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ListStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalListState<N, T>>> {
        match desc.enabled_ttl() {
            Some(ttl) => crate::ttl::list_state(desc, ttl, |stored| self.create_list_state(stored)),
            None => self.create_list_state(desc),
        }
    }
    /// Gets or creates a map state (with TTL as for [`KeyedStateBackend::value_state`]).
    fn map_state<N: Namespace, UK: StateKey, UV: StateValue>(
        &self,
        desc: &MapStateDescriptor<UK, UV>,
    ) -> StateResult<Rc<dyn InternalMapState<N, UK, UV>>> {
        match desc.enabled_ttl() {
            Some(ttl) => crate::ttl::map_state(desc, ttl, |stored| self.create_map_state(stored)),
            None => self.create_map_state(desc),
        }
    }
    /// Gets or creates a reducing state (with TTL as for
    /// [`KeyedStateBackend::value_state`]).
    fn reducing_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ReducingStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalReducingState<N, T>>> {
        match desc.enabled_ttl() {
            Some(ttl) => {
                crate::ttl::reducing_state(desc, ttl, |stored| self.create_reducing_state(stored))
            }
            None => self.create_reducing_state(desc),
        }
    }
    /// Gets or creates an aggregating state (with TTL as for
    /// [`KeyedStateBackend::value_state`]).
    fn aggregating_state<N: Namespace, IN: 'static, ACC: StateValue, OUT: 'static>(
        &self,
        desc: &AggregatingStateDescriptor<IN, ACC, OUT>,
    ) -> StateResult<Rc<dyn InternalAggregatingState<N, IN, OUT>>> {
        match desc.enabled_ttl() {
            Some(ttl) => crate::ttl::aggregating_state(desc, ttl, |stored| {
                self.create_aggregating_state(stored)
            }),
            None => self.create_aggregating_state(desc),
        }
    }

    /// The backend's own value state for `desc`, ignoring its TTL config (backends
    /// implement this; user code calls [`KeyedStateBackend::value_state`]). The TTL
    /// layer calls it with the stored form, whose descriptor carries
    /// [`crate::ttl::TtlStorage`] for background cleanup.
    fn create_value_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ValueStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalValueState<N, T>>>;
    /// The backend's own list state (see [`KeyedStateBackend::create_value_state`]).
    fn create_list_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ListStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalListState<N, T>>>;
    /// The backend's own map state (see [`KeyedStateBackend::create_value_state`]).
    fn create_map_state<N: Namespace, UK: StateKey, UV: StateValue>(
        &self,
        desc: &MapStateDescriptor<UK, UV>,
    ) -> StateResult<Rc<dyn InternalMapState<N, UK, UV>>>;
    /// The backend's own reducing state (see [`KeyedStateBackend::create_value_state`]).
    fn create_reducing_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ReducingStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalReducingState<N, T>>>;
    /// The backend's own aggregating state (see
    /// [`KeyedStateBackend::create_value_state`]).
    fn create_aggregating_state<N: Namespace, IN: 'static, ACC: StateValue, OUT: 'static>(
        &self,
        desc: &AggregatingStateDescriptor<IN, ACC, OUT>,
    ) -> StateResult<Rc<dyn InternalAggregatingState<N, IN, OUT>>>;

    /// Names of registered states and of restored states not yet registered.
    fn state_names(&self) -> Vec<String>;
    /// Every key with an entry in the registered state `state` under `namespace`.
    fn keys<N: Namespace>(&self, state: &str, namespace: &N) -> StateResult<Vec<K>>;
    /// The synchronous part of checkpoint `checkpoint_id` in the backend's configured
    /// format (canonical, native, incremental).
    fn snapshot(&self, checkpoint_id: u64) -> StateResult<Self::Snapshot>;
    /// The synchronous part of a savepoint: always the canonical format, which every
    /// backend restores.
    fn savepoint(&self) -> StateResult<KeyedSnapshot>;
    /// Checkpoint `checkpoint_id` completed everywhere: files it uploaded may be
    /// referenced by later incremental checkpoints.
    fn notify_checkpoint_complete(&self, checkpoint_id: u64) -> StateResult<()> {
        let _ = checkpoint_id;
        Ok(())
    }
    /// Checkpoint `checkpoint_id` was abandoned: nothing it uploaded may be referenced.
    fn notify_checkpoint_aborted(&self, checkpoint_id: u64) -> StateResult<()> {
        let _ = checkpoint_id;
        Ok(())
    }
    /// Figures of the backend's own for metrics (RocksDB: memtable bytes, block cache
    /// usage, pending compaction bytes, flushes and compactions waiting or running), as
    /// `(name, value)`; none by default.
    fn properties(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

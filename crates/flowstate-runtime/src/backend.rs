//! The configured keyed backend: one type over every backend, so jobs choose a backend
//! by configuration and user code never names one.
//!
//! [`AnyBackend`] implements [`KeyedStateBackend`] by delegating to the backend it
//! holds; the dispatch is one `match` per state registration and per record key, and
//! state handles are the backends' own `Rc<dyn ...>` handles.

use std::rc::Rc;

use flowstate_core::backend::{KeyedBackendConfig, KeyedBackendFactory, KeyedStateBackend};
use flowstate_core::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use flowstate_core::error::StateResult;
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::snapshot::{AsyncKeyedSnapshot, KeyedSnapshot, KeyedStateHandle};
use flowstate_core::state::{
    InternalAggregatingState, InternalListState, InternalMapState, InternalReducingState,
    InternalValueState, Namespace, StateKey, StateValue,
};
use flowstate_core::storage::CheckpointStorage;
use flowstate_heap::{HeapBackendFactory, HeapKeyedStateBackend};

use crate::timers::TimerSpill;
#[cfg(feature = "rocksdb")]
use flowstate_rocksdb::{RocksDbKeyedStateBackend, RocksDbOptions, RocksDbSnapshot};

/// Which keyed state backend a job uses.
#[derive(Clone, Debug, Default)]
pub enum BackendChoice {
    /// State in memory (the default).
    #[default]
    Heap,
    /// Embedded RocksDB with these options (feature `rocksdb`).
    #[cfg(feature = "rocksdb")]
    RocksDb(RocksDbOptions),
}

impl BackendChoice {
    /// A fresh backend of this kind.
    pub fn create<K: StateKey>(&self, config: KeyedBackendConfig<K>) -> StateResult<AnyBackend<K>> {
        Ok(match self {
            BackendChoice::Heap => AnyBackend::Heap(HeapBackendFactory.create(config)?),
            #[cfg(feature = "rocksdb")]
            BackendChoice::RocksDb(o) => AnyBackend::RocksDb(o.create(config)?),
        })
    }

    /// A backend of this kind restored from snapshots (of either kind when canonical).
    pub fn restore<K: StateKey>(
        &self,
        config: KeyedBackendConfig<K>,
        storage: &dyn CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> StateResult<AnyBackend<K>> {
        Ok(match self {
            BackendChoice::Heap => {
                AnyBackend::Heap(HeapBackendFactory.restore(config, storage, handles)?)
            }
            #[cfg(feature = "rocksdb")]
            BackendChoice::RocksDb(o) => AnyBackend::RocksDb(o.restore(config, storage, handles)?),
        })
    }
}

/// A keyed backend of the configured kind.
pub enum AnyBackend<K> {
    /// The heap backend.
    Heap(HeapKeyedStateBackend<K>),
    /// The RocksDB backend.
    #[cfg(feature = "rocksdb")]
    RocksDb(RocksDbKeyedStateBackend<K>),
}

/// The asynchronous part of a snapshot of an [`AnyBackend`].
pub enum AnySnapshot {
    /// Of the heap backend.
    Heap(KeyedSnapshot),
    /// Of the RocksDB backend.
    #[cfg(feature = "rocksdb")]
    RocksDb(RocksDbSnapshot),
}

impl AsyncKeyedSnapshot for AnySnapshot {
    fn write(self, storage: &dyn CheckpointStorage, path: &str) -> StateResult<KeyedStateHandle> {
        match self {
            AnySnapshot::Heap(s) => s.write(storage, path),
            #[cfg(feature = "rocksdb")]
            AnySnapshot::RocksDb(s) => s.write(storage, path),
        }
    }
}

impl<K: StateKey> AnyBackend<K> {
    /// `heap` or `rocksdb` (metric names).
    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            AnyBackend::Heap(_) => "heap",
            #[cfg(feature = "rocksdb")]
            AnyBackend::RocksDb(_) => "rocksdb",
        }
    }

    /// A native savepoint: the backend's own format, self-contained under `dir` (the
    /// heap backend's native format is the canonical one).
    #[cfg_attr(not(feature = "rocksdb"), allow(unused_variables))]
    pub fn native_savepoint(&self, dir: &str) -> StateResult<AnySnapshot> {
        Ok(match self {
            AnyBackend::Heap(b) => AnySnapshot::Heap(b.savepoint()?),
            #[cfg(feature = "rocksdb")]
            AnyBackend::RocksDb(b) => {
                AnySnapshot::RocksDb(RocksDbSnapshot::Native(b.native_savepoint(dir)?))
            }
        })
    }
}

impl<K: StateKey> AnyBackend<K> {
    /// Where this backend's keyed operators keep the timers beyond their in-memory
    /// window, and the window: RocksDB spills to a scratch set on local disk (SPEC 4);
    /// the heap backend keeps every timer in memory (`None`).
    pub(crate) fn timer_spill(&self) -> StateResult<Option<(Rc<dyn TimerSpill>, usize)>> {
        match self {
            AnyBackend::Heap(_) => Ok(None),
            #[cfg(feature = "rocksdb")]
            AnyBackend::RocksDb(b) => {
                let set = flowstate_rocksdb::SpillSet::open(b.options())?;
                Ok(Some((Rc::new(set), b.options().timer_window)))
            }
        }
    }
}

#[cfg(feature = "rocksdb")]
impl TimerSpill for flowstate_rocksdb::SpillSet {
    fn insert_all(&self, keys: &[Vec<u8>]) -> Result<(), crate::RuntimeError> {
        Ok(flowstate_rocksdb::SpillSet::insert_all(
            self,
            keys.iter().map(Vec::as_slice),
        )?)
    }
    fn remove_all(&self, keys: &[Vec<u8>]) -> Result<(), crate::RuntimeError> {
        Ok(flowstate_rocksdb::SpillSet::remove_all(
            self,
            keys.iter().map(Vec::as_slice),
        )?)
    }
    fn contains(&self, key: &[u8]) -> Result<bool, crate::RuntimeError> {
        Ok(flowstate_rocksdb::SpillSet::contains(self, key)?)
    }
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, crate::RuntimeError> {
        Ok(flowstate_rocksdb::SpillSet::scan(self, prefix, limit)?)
    }
}

macro_rules! both {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            AnyBackend::Heap($b) => $e,
            #[cfg(feature = "rocksdb")]
            AnyBackend::RocksDb($b) => $e,
        }
    };
}

impl<K: StateKey> KeyedStateBackend<K> for AnyBackend<K> {
    type Snapshot = AnySnapshot;

    fn max_parallelism(&self) -> u32 {
        both!(self, b => b.max_parallelism())
    }
    fn key_group_range(&self) -> KeyGroupRange {
        both!(self, b => b.key_group_range())
    }
    fn key_group_of(&self, key: &K) -> StateResult<u32> {
        both!(self, b => b.key_group_of(key))
    }
    fn set_current_key(&self, key: K) -> StateResult<()> {
        both!(self, b => b.set_current_key(key))
    }
    fn set_current_key_in_group(&self, key: K, key_group: u32) -> StateResult<()> {
        both!(self, b => b.set_current_key_in_group(key, key_group))
    }
    fn prefetch(&self, keys: &[(u32, &K)]) {
        both!(self, b => b.prefetch(keys))
    }
    fn current_key(&self) -> Option<K> {
        both!(self, b => b.current_key())
    }
    fn current_key_group(&self) -> Option<u32> {
        both!(self, b => b.current_key_group())
    }
    fn create_value_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ValueStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalValueState<N, T>>> {
        both!(self, b => b.create_value_state(desc))
    }
    fn create_list_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ListStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalListState<N, T>>> {
        both!(self, b => b.create_list_state(desc))
    }
    fn create_map_state<N: Namespace, UK: StateKey, UV: StateValue>(
        &self,
        desc: &MapStateDescriptor<UK, UV>,
    ) -> StateResult<Rc<dyn InternalMapState<N, UK, UV>>> {
        both!(self, b => b.create_map_state(desc))
    }
    fn create_reducing_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ReducingStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalReducingState<N, T>>> {
        both!(self, b => b.create_reducing_state(desc))
    }
    fn create_aggregating_state<N: Namespace, IN: 'static, ACC: StateValue, OUT: 'static>(
        &self,
        desc: &AggregatingStateDescriptor<IN, ACC, OUT>,
    ) -> StateResult<Rc<dyn InternalAggregatingState<N, IN, OUT>>> {
        both!(self, b => b.create_aggregating_state(desc))
    }
    fn state_names(&self) -> Vec<String> {
        both!(self, b => b.state_names())
    }
    fn keys<N: Namespace>(&self, state: &str, namespace: &N) -> StateResult<Vec<K>> {
        both!(self, b => b.keys(state, namespace))
    }
    fn snapshot(&self, checkpoint_id: u64) -> StateResult<AnySnapshot> {
        Ok(match self {
            AnyBackend::Heap(b) => AnySnapshot::Heap(b.snapshot(checkpoint_id)?),
            #[cfg(feature = "rocksdb")]
            AnyBackend::RocksDb(b) => AnySnapshot::RocksDb(b.snapshot(checkpoint_id)?),
        })
    }
    fn savepoint(&self) -> StateResult<KeyedSnapshot> {
        both!(self, b => b.savepoint())
    }
    fn notify_checkpoint_complete(&self, checkpoint_id: u64) -> StateResult<()> {
        both!(self, b => b.notify_checkpoint_complete(checkpoint_id))
    }
    fn properties(&self) -> Vec<(&'static str, u64)> {
        both!(self, b => b.properties())
    }
    fn notify_checkpoint_aborted(&self, checkpoint_id: u64) -> StateResult<()> {
        both!(self, b => b.notify_checkpoint_aborted(checkpoint_id))
    }
}

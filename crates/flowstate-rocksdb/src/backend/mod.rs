//! [`RocksDbKeyedStateBackend`]: keyed state in an embedded RocksDB, one column family
//! per state, larger than memory, with canonical, native and incremental snapshots.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use flowstate_core::backend::{KeyedBackendConfig, KeyedBackendFactory, KeyedStateBackend};
use flowstate_core::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use flowstate_core::format::put_vbytes;
use flowstate_core::keygroup::{KeyGroupRange, key_group_for_serialized_key};
use flowstate_core::serializer::{
    IntegerEncoding, SerdeSerializer, TypeSerializer, require_same_layout,
};
use flowstate_core::snapshot::{KeyedSnapshot, KeyedStateHandle, KeyedStateWriter, StateMetaInfo};
use flowstate_core::state::{
    InternalAggregatingState, InternalListState, InternalMapState, InternalReducingState,
    InternalValueState, Namespace, StateKey, StateKind, StateValue, VoidNamespace,
};
use flowstate_core::storage::CheckpointStorage;
use flowstate_core::ttl::{StateTtlConfig, filter_snapshot_writer};
use flowstate_core::{StateError, StateResult};
use rocksdb::ReadOptions;

use crate::db::{
    DbHolder, DbSettings, DirGuard, fresh_dir, rerr, total_order_read_options, unique_id,
    write_options,
};
use crate::keys::{parse_key, put_key_prefix_with};
use crate::options::{RocksDbOptions, SnapshotMode};
use crate::snapshot::{CfWriter, NativeSnapshot, RocksDbSnapshot, Tracker, lock};
use crate::states::{AggX, Batching, ListX, MapX, ReduceX, Shared, ValueX};

mod checkpoint;
mod register;
mod restore;
use register::resolve;
pub(crate) use restore::download;

/// Rewrites stored value bytes from an old serializer's format to the new one.
type Rewrite = Box<dyn Fn(&[u8]) -> StateResult<Vec<u8>>>;

/// Checks serializers against a restored description (if any); returns the handle's
/// typed parts, the description to store from now on, and a rewrite if values migrate.
type Resolver<'a, X> =
    dyn Fn(Option<&StateMetaInfo>) -> StateResult<(X, StateMetaInfo, Option<Rewrite>)> + 'a;

/// The options select the RocksDB backend: each backend made gets its own directory
/// under `local_dir`.
impl KeyedBackendFactory for RocksDbOptions {
    type Backend<K: StateKey> = RocksDbKeyedStateBackend<K>;
    fn create<K: StateKey>(
        &self,
        config: KeyedBackendConfig<K>,
    ) -> StateResult<RocksDbKeyedStateBackend<K>> {
        RocksDbKeyedStateBackend::new(config, self.clone())
    }
    fn restore<K: StateKey>(
        &self,
        config: KeyedBackendConfig<K>,
        storage: &dyn CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> StateResult<RocksDbKeyedStateBackend<K>> {
        RocksDbKeyedStateBackend::restore(config, self.clone(), storage, handles)
    }
}

struct Registered {
    kind: StateKind,
    handle: Rc<dyn Any>,
    meta: StateMetaInfo,
    /// The TTL of a state stored with timestamps.
    ttl: Option<StateTtlConfig>,
}

/// Keyed state of one operator instance in an embedded RocksDB.
///
/// ```no_run
/// use flowstate_core::backend::{KeyedBackendConfig, KeyedBackendFactory, KeyedStateBackend};
/// use flowstate_core::descriptor::ValueStateDescriptor;
/// use flowstate_core::keygroup::KeyGroupRange;
/// use flowstate_core::serializer::SerdeSerializer;
/// use flowstate_core::state::{ValueState, VoidNamespace};
/// use flowstate_rocksdb::{RocksDbKeyedStateBackend, RocksDbOptions};
///
/// let backend = RocksDbKeyedStateBackend::<u64>::new(
///     KeyedBackendConfig {
///         max_parallelism: 128,
///         key_group_range: KeyGroupRange::all(128).unwrap(),
///         key_serializer: SerdeSerializer::<u64>::arc(),
///     },
///     RocksDbOptions::new("/tmp/flowstate-rocksdb"),
/// ).unwrap();
/// let count = backend.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("count")).unwrap();
/// backend.set_current_key(7).unwrap();
/// count.update(1).unwrap();
/// ```
pub struct RocksDbKeyedStateBackend<K> {
    config: KeyedBackendConfig<K>,
    settings: Arc<DbSettings>,
    shared: Rc<Shared<K>>,
    states: RefCell<BTreeMap<String, Registered>>,
    /// States present in the database (restored) but not registered yet.
    restored: RefCell<BTreeMap<String, StateMetaInfo>>,
    /// States whose migration failed part-way: their local values are mixed, so they
    /// can be neither used nor snapshotted (the job must restore again).
    half_migrated: RefCell<BTreeSet<String>>,
    tracker: Arc<Mutex<Tracker>>,
    session: String,
    /// States read ahead by [`KeyedStateBackend::prefetch`]: value, reducing and
    /// aggregating states without namespaces (one entry per key, known from the key).
    prefetched: RefCell<Vec<Rc<dyn Batching>>>,
    /// Every registered state, for writing their deferred writes.
    deferring: RefCell<Vec<Rc<dyn Batching>>>,
    /// Entry keys of the last prefetch (buffers reused).
    prefetch_keys: RefCell<Vec<Vec<u8>>>,
}

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// Makes `key` current: its `key group | length | key` prefix, built in reused
    /// buffers (this runs once per record). `key_group`, when the caller knows it
    /// (`set_current_key_in_group`), spares hashing the key again. The prefix is
    /// built in the spare buffer and swapped in once complete, so that a failure
    /// leaves the current key as it was.
    fn make_current(&self, key: K, key_group: Option<u32>) -> StateResult<()> {
        let mut spare = self.shared.spare_prefix.borrow_mut();
        spare.clear();
        let kg = self.put_prefix(&mut spare, &key, key_group)?;
        let range = self.config.key_group_range;
        if !range.contains(kg) {
            return Err(StateError::KeyGroupOutOfRange {
                key_group: kg,
                range,
            });
        }
        std::mem::swap(&mut *self.shared.prefix.borrow_mut(), &mut *spare);
        *self.shared.key.borrow_mut() = Some(key);
        Ok(())
    }

    /// Appends `key`'s `key group | length | key` prefix to `out` and returns its key
    /// group (`key_group` when the caller knows it).
    fn put_prefix(&self, out: &mut Vec<u8>, key: &K, key_group: Option<u32>) -> StateResult<u32> {
        let ser = &self.config.key_serializer;
        put_key_prefix_with(out, key_group, self.config.max_parallelism, |o| {
            ser.serialize_into(key, o)
        })?
        .map_err(|e| StateError::serialization("<key>", e))
    }

    /// The key's serialized bytes, into `out` (cleared first).
    fn serialize_key(&self, key: &K, out: &mut Vec<u8>) -> StateResult<()> {
        out.clear();
        self.config
            .key_serializer
            .serialize_into(key, out)
            .map_err(|e| StateError::serialization("<key>", e))
    }

    /// Writes every state's deferred writes to RocksDB:
    /// first thing wherever RocksDB is read other than through a state's get.
    fn write_deferred(&self) -> StateResult<()> {
        for s in self.deferring.borrow().iter() {
            s.write_deferred()?;
        }
        Ok(())
    }

    /// The entry keys (`key group | key | namespace`, the namespace being
    /// [`VoidNamespace`]) of `keys` whose key groups are owned here, sorted and unique,
    /// into `out` (its buffers reused).
    fn prefetch_entry_keys(&self, keys: &[(u32, &K)], out: &mut Vec<Vec<u8>>) -> StateResult<()> {
        let mut ns = Vec::new();
        SerdeSerializer::<VoidNamespace>::new()
            .serialize_into(&VoidNamespace, &mut ns)
            .map_err(|e| StateError::serialization("<namespace>", e))?;
        let mut n = 0;
        for (kg, key) in keys {
            if !self.config.key_group_range.contains(*kg) {
                continue;
            }
            if n == out.len() {
                out.push(Vec::new());
            }
            let k = &mut out[n];
            k.clear();
            self.put_prefix(k, key, Some(*kg))?;
            put_vbytes(k, &ns)?;
            n += 1;
        }
        out.truncate(n);
        out.sort_unstable();
        out.dedup();
        Ok(())
    }

    /// The options the backend was made with.
    pub fn options(&self) -> &RocksDbOptions {
        &self.settings.options
    }

    /// An empty backend in a fresh directory under `options.local_dir`.
    pub fn new(config: KeyedBackendConfig<K>, options: RocksDbOptions) -> StateResult<Self> {
        config.validate()?;
        let settings = Arc::new(DbSettings::new(options, config.max_parallelism));
        let dir = fresh_dir(&settings.options.local_dir, "instance")?;
        let db = settings.open(&dir, &[])?;
        Ok(Self::assemble(
            config,
            settings,
            DbHolder {
                db,
                _dir: DirGuard(dir),
            },
        ))
    }

    fn assemble(
        config: KeyedBackendConfig<K>,
        settings: Arc<DbSettings>,
        holder: DbHolder,
    ) -> Self {
        let deferred_write_bytes = settings.options.deferred_write_bytes;
        let entry_cache_bytes = settings.options.entry_cache_bytes;
        RocksDbKeyedStateBackend {
            config,
            settings,
            shared: Rc::new(Shared {
                holder: Arc::new(holder),
                key: RefCell::new(None),
                prefix: RefCell::new(Vec::new()),
                spare_prefix: RefCell::new(Vec::new()),
                write_options: write_options(),
                read_options: ReadOptions::default(),
                deferred_write_bytes,
                entry_cache_bytes,
            }),
            states: RefCell::new(BTreeMap::new()),
            restored: RefCell::new(BTreeMap::new()),
            half_migrated: RefCell::new(BTreeSet::new()),
            tracker: Arc::new(Mutex::new(Tracker::default())),
            session: unique_id(),
            prefetched: RefCell::new(Vec::new()),
            deferring: RefCell::new(Vec::new()),
            prefetch_keys: RefCell::new(Vec::new()),
        }
    }

    fn db(&self) -> &rocksdb::DB {
        &self.shared.holder.db
    }
}

impl<K: StateKey> KeyedStateBackend<K> for RocksDbKeyedStateBackend<K> {
    type Snapshot = RocksDbSnapshot;

    fn max_parallelism(&self) -> u32 {
        self.config.max_parallelism
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.config.key_group_range
    }

    fn key_group_of(&self, key: &K) -> StateResult<u32> {
        let mut bytes = Vec::with_capacity(16);
        self.serialize_key(key, &mut bytes)?;
        Ok(key_group_for_serialized_key(
            &bytes,
            self.config.max_parallelism,
        ))
    }

    fn set_current_key(&self, key: K) -> StateResult<()> {
        self.make_current(key, None)
    }

    fn set_current_key_in_group(&self, key: K, key_group: u32) -> StateResult<()> {
        self.make_current(key, Some(key_group))
    }

    fn prefetch(&self, keys: &[(u32, &K)]) {
        let states = self.prefetched.borrow();
        if states.is_empty() {
            return;
        }
        let mut entry_keys = self.prefetch_keys.borrow_mut();
        if self.prefetch_entry_keys(keys, &mut entry_keys).is_err() {
            entry_keys.clear();
        }
        for s in states.iter() {
            s.begin(&entry_keys);
        }
    }

    fn current_key(&self) -> Option<K> {
        self.shared.key.borrow().clone()
    }

    fn current_key_group(&self) -> Option<u32> {
        let key = self.shared.key.borrow();
        key.as_ref().and_then(|k| self.key_group_of(k).ok())
    }

    fn create_value_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ValueStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalValueState<N, T>>> {
        let name = desc.name();
        let s = self.register::<N, ValueX<T>>(
            name,
            StateKind::Value,
            &|m: &StateMetaInfo| m.check_value_serializer(desc.serializer().as_ref()),
            &|old| {
                let (ser, rw) = resolve(name, "value", desc.serializer(), old)?;
                let meta = StateMetaInfo::new::<N>(name, StateKind::Value, ser.snapshot(), None);
                let x = ValueX {
                    ser,
                    default: desc.default_value().cloned(),
                };
                Ok((x, meta, rw))
            },
            desc.ttl_storage().map(|t| &t.config),
        )?;
        Ok(s)
    }

    fn create_list_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ListStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalListState<N, T>>> {
        let name = desc.name();
        let s = self.register::<N, ListX<T>>(
            name,
            StateKind::List,
            &|m: &StateMetaInfo| m.check_value_serializer(desc.serializer().as_ref()),
            &|old| {
                let (ser, rw) = resolve(name, "element", desc.serializer(), old)?;
                let meta = StateMetaInfo::new::<N>(name, StateKind::List, ser.snapshot(), None);
                let integers = IntegerEncoding::writes(ser.as_ref());
                Ok((ListX { ser, integers }, meta, rw))
            },
            desc.ttl_storage().map(|t| &t.config),
        )?;
        Ok(s)
    }

    fn create_map_state<N: Namespace, UK: StateKey, UV: StateValue>(
        &self,
        desc: &MapStateDescriptor<UK, UV>,
    ) -> StateResult<Rc<dyn InternalMapState<N, UK, UV>>> {
        let name = desc.name();
        let current = |meta: &StateMetaInfo| {
            meta.check_value_serializer(desc.value_serializer().as_ref())?;
            meta.check_user_key_serializer(desc.key_serializer().as_ref())
        };
        let s = self.register::<N, MapX<UK, UV>>(
            name,
            StateKind::Map,
            &current,
            &|old| {
                if let Some(m) = old {
                    m.check_user_key_serializer(desc.key_serializer().as_ref())?;
                }
                let (value_ser, rw) = resolve(name, "value", desc.value_serializer(), old)?;
                let meta = StateMetaInfo::new::<N>(
                    name,
                    StateKind::Map,
                    value_ser.snapshot(),
                    Some(desc.key_serializer().snapshot()),
                );
                let x = MapX {
                    key_ser: desc.key_serializer().clone(),
                    value_ser,
                };
                Ok((x, meta, rw))
            },
            desc.ttl_storage().map(|t| &t.config),
        )?;
        Ok(s)
    }

    fn create_reducing_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ReducingStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalReducingState<N, T>>> {
        let name = desc.name();
        let s = self.register::<N, ReduceX<T>>(
            name,
            StateKind::Reducing,
            &|m: &StateMetaInfo| m.check_value_serializer(desc.serializer().as_ref()),
            &|old| {
                let (ser, rw) = resolve(name, "value", desc.serializer(), old)?;
                let meta = StateMetaInfo::new::<N>(name, StateKind::Reducing, ser.snapshot(), None);
                let x = ReduceX {
                    ser,
                    reduce: desc.reduce_fn().clone(),
                };
                Ok((x, meta, rw))
            },
            desc.ttl_storage().map(|t| &t.config),
        )?;
        Ok(s)
    }

    fn create_aggregating_state<N: Namespace, IN: 'static, ACC: StateValue, OUT: 'static>(
        &self,
        desc: &AggregatingStateDescriptor<IN, ACC, OUT>,
    ) -> StateResult<Rc<dyn InternalAggregatingState<N, IN, OUT>>> {
        let name = desc.name();
        let s = self.register::<N, AggX<IN, ACC, OUT>>(
            name,
            StateKind::Aggregating,
            &|m: &StateMetaInfo| m.check_value_serializer(desc.serializer().as_ref()),
            &|old| {
                let (ser, rw) = resolve(name, "accumulator", desc.serializer(), old)?;
                let meta =
                    StateMetaInfo::new::<N>(name, StateKind::Aggregating, ser.snapshot(), None);
                let x = AggX {
                    ser,
                    function: desc.function().clone(),
                };
                Ok((x, meta, rw))
            },
            desc.ttl_storage().map(|t| &t.config),
        )?;
        Ok(s)
    }

    fn state_names(&self) -> Vec<String> {
        self.all_metas().into_iter().map(|m| m.name).collect()
    }

    fn keys<N: Namespace>(&self, state: &str, namespace: &N) -> StateResult<Vec<K>> {
        self.write_deferred()?;
        let known =
            self.states.borrow().contains_key(state) || self.restored.borrow().contains_key(state);
        let cf = self.db().cf_handle(state).filter(|_| known);
        let Some(cf) = cf else {
            return Err(StateError::UnknownState(state.to_string()));
        };
        if let Some(m) = self.restored.borrow().get(state) {
            require_same_layout(
                state,
                "namespace",
                &SerdeSerializer::<N>::new(),
                &m.namespace_serializer,
            )?;
        }
        let mut ns = Vec::new();
        SerdeSerializer::<N>::new()
            .serialize_into(namespace, &mut ns)
            .map_err(|e| StateError::serialization(state, e))?;
        let mut out = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        let mut it = self
            .db()
            .raw_iterator_cf_opt(&cf, total_order_read_options());
        it.seek_to_first();
        while it.valid() {
            if let Some(raw) = it.key() {
                let p = parse_key(raw, self.config.max_parallelism, state)?;
                if p.namespace == ns.as_slice() && last.as_deref() != Some(p.key) {
                    out.push(
                        self.config
                            .key_serializer
                            .deserialize(p.key)
                            .map_err(|e| StateError::serialization(state, e))?,
                    );
                    last = Some(p.key.to_vec());
                }
            }
            it.next();
        }
        it.status().map_err(rerr("iterate keys"))?;
        Ok(out)
    }

    fn snapshot(&self, checkpoint_id: u64) -> StateResult<RocksDbSnapshot> {
        self.check_not_half_migrated()?;
        let mode = self.settings.options.snapshot_mode;
        if mode == SnapshotMode::Canonical {
            return self.savepoint().map(RocksDbSnapshot::Canonical);
        }
        let source = self.checkpoint()?;
        let base = if mode == SnapshotMode::Incremental {
            lock(&self.tracker)?.confirmed.clone()
        } else {
            HashMap::new()
        };
        Ok(RocksDbSnapshot::Native(NativeSnapshot {
            checkpoint_id,
            source,
            metas: self.all_metas(),
            key_serializer: self.config.key_serializer.snapshot(),
            range: self.config.key_group_range,
            max_parallelism: self.config.max_parallelism,
            base,
            tracker: self.tracker.clone(),
            session: self.session.clone(),
            shared_prefix: self.settings.options.shared_prefix.clone(),
            track: true,
        }))
    }

    fn savepoint(&self) -> StateResult<KeyedSnapshot> {
        self.check_not_half_migrated()?;
        let source = Arc::new(self.checkpoint()?);
        let writers: Vec<Box<dyn KeyedStateWriter>> = self
            .all_metas()
            .into_iter()
            .map(|meta| {
                let states = self.states.borrow();
                let ttl = states.get(&meta.name).and_then(|r| r.ttl.as_ref());
                let writer = Box::new(CfWriter {
                    source: source.clone(),
                    meta,
                    max_parallelism: self.config.max_parallelism,
                });
                filter_snapshot_writer(writer, ttl)
            })
            .collect();
        Ok(KeyedSnapshot::new(
            self.config.max_parallelism,
            self.config.key_group_range,
            self.config.key_serializer.snapshot(),
            writers,
        ))
    }

    fn notify_checkpoint_complete(&self, checkpoint_id: u64) -> StateResult<()> {
        let mut t = lock(&self.tracker)?;
        if let Some(files) = t.pending.remove(&checkpoint_id) {
            t.confirmed = files;
            t.pending.retain(|id, _| *id > checkpoint_id);
        }
        Ok(())
    }

    fn notify_checkpoint_aborted(&self, checkpoint_id: u64) -> StateResult<()> {
        lock(&self.tracker)?.pending.remove(&checkpoint_id);
        Ok(())
    }

    fn properties(&self) -> Vec<(&'static str, u64)> {
        let db = self.db();
        let names = self.state_names();
        crate::properties::read(db, names.iter().filter_map(|n| db.cf_handle(n)))
    }
}

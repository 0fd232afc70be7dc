//! [`HeapKeyedStateBackend`]: keyed state in memory, per key group, with asynchronous
//! copy-on-write snapshots in the canonical format.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use flowstate_core::backend::{KeyedBackendConfig, KeyedBackendFactory, KeyedStateBackend};
use flowstate_core::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor, validate_state_name,
};
use flowstate_core::error::{StateError, StateResult};
use flowstate_core::keygroup::{KeyGroupRange, key_group_for_hash, key_group_for_serialized_key};
use flowstate_core::serializer::{
    IntegerEncoding, SerdeSerializer, TypeSerializer, require_same_layout,
};
use flowstate_core::snapshot::{
    KeyedSnapshot, KeyedStateHandle, RestoredState, StateMetaInfo, check_kind, read_keyed_state,
    section_entries,
};
use flowstate_core::state::{
    InternalAggregatingState, InternalListState, InternalMapState, InternalReducingState,
    InternalValueState, Namespace, StateKey, StateKind, StateValue, VoidNamespace,
};
use flowstate_core::storage::CheckpointStorage;
use flowstate_core::ttl::resolve_restored;

use crate::states::{AggExtra, HeapState, ListExtra, MapExtra, ReduceExtra, ValueExtra};
use crate::table::{
    Codec, ErasedTable, KeyContext, ListCodec, MapCodec, PendingWriter, StateTable, TableTtl,
    UserMap, ValueCodec,
};

/// Checks serializers against a restored description (if any) and returns the codec
/// and the description to store from now on.
type Resolver<'a, S> =
    dyn Fn(Option<&StateMetaInfo>) -> StateResult<(Arc<dyn Codec<S>>, StateMetaInfo)> + 'a;

/// Selects the heap backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapBackendFactory;

impl KeyedBackendFactory for HeapBackendFactory {
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

struct Registered<K> {
    kind: StateKind,
    handle: Rc<dyn Any>,
    table: Rc<dyn ErasedTable<K>>,
}

/// Keyed state of one operator instance, held in memory.
///
/// ```
/// use std::sync::Arc;
/// use flowstate_core::backend::{KeyedBackendConfig, KeyedBackendFactory, KeyedStateBackend};
/// use flowstate_core::descriptor::ValueStateDescriptor;
/// use flowstate_core::keygroup::KeyGroupRange;
/// use flowstate_core::serializer::SerdeSerializer;
/// use flowstate_core::state::{ValueState, VoidNamespace};
/// use flowstate_heap::HeapKeyedStateBackend;
///
/// let backend = HeapKeyedStateBackend::<String>::new(KeyedBackendConfig {
///     max_parallelism: 128,
///     key_group_range: KeyGroupRange::all(128).unwrap(),
///     key_serializer: SerdeSerializer::<String>::arc(),
/// }).unwrap();
/// let count = backend
///     .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("count").with_default(0))
///     .unwrap();
/// backend.set_current_key("alice".to_string()).unwrap();
/// count.update(count.value().unwrap().unwrap_or(0) + 1).unwrap();
/// assert_eq!(count.value().unwrap(), Some(1));
/// ```
pub struct HeapKeyedStateBackend<K> {
    config: KeyedBackendConfig<K>,
    ctx: Rc<KeyContext<K>>,
    states: RefCell<BTreeMap<String, Registered<K>>>,
    /// Restored states not registered yet, still encoded.
    pending: RefCell<BTreeMap<String, RestoredState>>,
    /// TTL states that clean up incrementally on every record.
    per_record_cleanup: RefCell<Vec<Rc<dyn ErasedTable<K>>>>,
    /// Whether `per_record_cleanup` has a table: a flag read on every record instead
    /// of a borrow (two writes of the `RefCell`'s count) of a list that is mostly
    /// empty.
    cleans_per_record: Cell<bool>,
    /// States without namespaces, whose entries [`KeyedStateBackend::prefetch`]
    /// brings into the cache.
    prefetched: RefCell<Vec<Rc<dyn ErasedTable<K>>>>,
    /// Keys are postcard integers: their key group comes from [`IntegerEncoding`].
    integer_keys: bool,
}

impl<K: StateKey> HeapKeyedStateBackend<K> {
    /// [`KeyedStateBackend::key_group_of`] for keys without the integer fast path:
    /// the key serialized, its bytes hashed. Kept out of line so that the fast path
    /// inlines into the caller's loop.
    #[inline(never)]
    fn key_group_of_serialized(&self, key: &K) -> StateResult<u32> {
        let mut scratch = self.ctx.scratch.borrow_mut();
        scratch.clear();
        self.config
            .key_serializer
            .serialize_into(key, &mut scratch)
            .map_err(|e| StateError::Serialization {
                state: "<key>".into(),
                source: e,
            })?;
        Ok(key_group_for_serialized_key(
            &scratch,
            self.config.max_parallelism,
        ))
    }

    /// An empty backend.
    pub fn new(config: KeyedBackendConfig<K>) -> StateResult<Self> {
        config.validate()?;
        Ok(HeapKeyedStateBackend {
            integer_keys: config.integer_keys(),
            config,
            ctx: Rc::new(KeyContext {
                key: RefCell::new(None),
                kg_index: Cell::new(0),
                scratch: RefCell::new(Vec::with_capacity(64)),
            }),
            states: RefCell::new(BTreeMap::new()),
            pending: RefCell::new(BTreeMap::new()),
            per_record_cleanup: RefCell::new(Vec::new()),
            cleans_per_record: Cell::new(false),
            prefetched: RefCell::new(Vec::new()),
        })
    }

    /// A backend restored from keyed snapshots of any parallelism (same max
    /// parallelism): reads only the key groups of `config.key_group_range`. States are
    /// decoded when registered, after their serializers are checked.
    pub fn restore(
        config: KeyedBackendConfig<K>,
        storage: &dyn CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> StateResult<Self> {
        let backend = Self::new(config)?;
        let restored = read_keyed_state(
            storage,
            handles,
            backend.config.max_parallelism,
            backend.config.key_group_range,
        )?;
        if let Some(key_ser) = &restored.key_serializer {
            require_same_layout(
                "<keys>",
                "key",
                backend.config.key_serializer.as_ref(),
                key_ser,
            )?;
        }
        *backend.pending.borrow_mut() = restored.states.into_iter().collect();
        Ok(backend)
    }

    /// Gets the registered state `name` or registers it: checks kind, types and
    /// serializers against what is registered or restored, then decodes restored data.
    /// `resolve` checks the serializers against a restored description and returns the
    /// codec and the description to store from now on.
    fn register<N, S, X>(
        &self,
        name: &str,
        kind: StateKind,
        current: &dyn Fn(&StateMetaInfo) -> StateResult<()>,
        resolve: &Resolver<'_, S>,
        ttl: Option<TableTtl<S>>,
        extra: X,
    ) -> StateResult<Rc<HeapState<K, N, S, X>>>
    where
        N: Namespace,
        S: StateValue,
        X: 'static,
    {
        validate_state_name(name)?;
        if let Some(r) = self.states.borrow().get(name) {
            check_kind(name, r.kind, kind)?;
            current(r.table.meta())?;
            return r
                .handle
                .clone()
                .downcast::<HeapState<K, N, S, X>>()
                .map_err(|_| StateError::TypeMismatch {
                    name: name.to_string(),
                    detail: "registered with other namespace or value types".into(),
                });
        }
        let pending = self.pending.borrow();
        let restored = pending.get(name);
        if let Some(p) = restored {
            p.meta.check_restorable_as::<N>(kind)?;
        }
        let (codec, meta) = resolve(restored.map(|p| &p.meta))?;
        let table = Rc::new(StateTable::<K, N, S>::new(
            meta,
            self.config.key_group_range,
            self.config.max_parallelism,
            self.config.key_serializer.clone(),
            Arc::new(SerdeSerializer::<N>::new()),
            codec,
            ttl,
        ));
        if let Some(p) = restored {
            table.load(&p.sections, &p.path)?;
        }
        drop(pending);
        self.pending.borrow_mut().remove(name);
        let handle = Rc::new(HeapState {
            ctx: self.ctx.clone(),
            table: table.clone(),
            ns: RefCell::new(N::default()),
            extra,
        });
        if table.cleans_per_record() {
            self.per_record_cleanup.borrow_mut().push(table.clone());
            self.cleans_per_record.set(true);
        }
        if TypeId::of::<N>() == TypeId::of::<VoidNamespace>() {
            self.prefetched.borrow_mut().push(table.clone());
        }
        self.states.borrow_mut().insert(
            name.to_string(),
            Registered {
                kind,
                handle: handle.clone(),
                table,
            },
        );
        Ok(handle)
    }
}

impl<K: StateKey> KeyedStateBackend<K> for HeapKeyedStateBackend<K> {
    fn max_parallelism(&self) -> u32 {
        self.config.max_parallelism
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.config.key_group_range
    }

    #[inline]
    fn key_group_of(&self, key: &K) -> StateResult<u32> {
        if self.integer_keys
            && let Some(hash) = IntegerEncoding::key_hash_of(key)
        {
            return Ok(key_group_for_hash(hash, self.config.max_parallelism));
        }
        self.key_group_of_serialized(key)
    }

    fn set_current_key(&self, key: K) -> StateResult<()> {
        let kg = self.key_group_of(&key)?;
        self.set_current_key_in_group(key, kg)
    }

    fn set_current_key_in_group(&self, key: K, kg: u32) -> StateResult<()> {
        debug_assert_eq!(
            self.key_group_of(&key).ok(),
            Some(kg),
            "key group of the key"
        );
        let range = self.config.key_group_range;
        let idx = range.index_of(kg).ok_or(StateError::KeyGroupOutOfRange {
            key_group: kg,
            range,
        })?;
        *self.ctx.key.borrow_mut() = Some(key);
        self.ctx.kg_index.set(idx);
        if self.cleans_per_record.get() {
            for t in self.per_record_cleanup.borrow().iter() {
                t.per_record_cleanup();
            }
        }
        Ok(())
    }

    fn prefetch(&self, keys: &[(u32, &K)]) {
        for t in self.prefetched.borrow().iter() {
            t.touch(keys);
        }
    }

    fn current_key(&self) -> Option<K> {
        self.ctx.key.borrow().clone()
    }

    fn current_key_group(&self) -> Option<u32> {
        self.ctx
            .key
            .borrow()
            .as_ref()
            .map(|_| self.config.key_group_range.start() + self.ctx.kg_index.get() as u32)
    }

    fn create_value_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ValueStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalValueState<N, T>>> {
        let name = desc.name();
        let resolve = |old: Option<&StateMetaInfo>| {
            let r = match old {
                Some(m) => resolve_restored(name, "value", desc.serializer(), &m.value_serializer)?,
                None => resolve_restored(
                    name,
                    "value",
                    desc.serializer(),
                    &desc.serializer().snapshot(),
                )?,
            };
            let meta =
                StateMetaInfo::new::<N>(name, StateKind::Value, r.serializer.snapshot(), None);
            let codec: Arc<dyn Codec<T>> = Arc::new(ValueCodec {
                ser: r.serializer,
                reader: r.reader,
            });
            Ok((codec, meta))
        };
        let s = self.register::<N, T, ValueExtra<T>>(
            name,
            StateKind::Value,
            &|m: &StateMetaInfo| m.check_value_serializer(desc.serializer().as_ref()),
            &resolve,
            desc.ttl_storage().map(TableTtl::whole),
            ValueExtra(desc.default_value().cloned()),
        )?;
        Ok(s)
    }

    fn create_list_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ListStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalListState<N, T>>> {
        let name = desc.name();
        let resolve = |old: Option<&StateMetaInfo>| {
            let prev = old.map_or_else(
                || desc.serializer().snapshot(),
                |m| m.value_serializer.clone(),
            );
            let r = resolve_restored(name, "element", desc.serializer(), &prev)?;
            let meta =
                StateMetaInfo::new::<N>(name, StateKind::List, r.serializer.snapshot(), None);
            let codec: Arc<dyn Codec<Vec<T>>> = Arc::new(ListCodec {
                ser: r.serializer,
                reader: r.reader,
            });
            Ok((codec, meta))
        };
        let s = self.register::<N, Vec<T>, ListExtra>(
            name,
            StateKind::List,
            &|m: &StateMetaInfo| m.check_value_serializer(desc.serializer().as_ref()),
            &resolve,
            desc.ttl_storage().map(TableTtl::list),
            ListExtra,
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
        let resolve = |old: Option<&StateMetaInfo>| {
            if let Some(m) = old {
                m.check_user_key_serializer(desc.key_serializer().as_ref())?;
            }
            let prev = old.map_or_else(
                || desc.value_serializer().snapshot(),
                |m| m.value_serializer.clone(),
            );
            let r = resolve_restored(name, "value", desc.value_serializer(), &prev)?;
            let meta = StateMetaInfo::new::<N>(
                name,
                StateKind::Map,
                r.serializer.snapshot(),
                Some(desc.key_serializer().snapshot()),
            );
            let codec: Arc<dyn Codec<UserMap<UK, UV>>> = Arc::new(MapCodec {
                key_ser: desc.key_serializer().clone(),
                value_ser: r.serializer,
                value_reader: r.reader,
            });
            Ok((codec, meta))
        };
        let s = self.register::<N, UserMap<UK, UV>, MapExtra>(
            name,
            StateKind::Map,
            &current,
            &resolve,
            desc.ttl_storage().map(TableTtl::map),
            MapExtra,
        )?;
        Ok(s)
    }

    fn create_reducing_state<N: Namespace, T: StateValue>(
        &self,
        desc: &ReducingStateDescriptor<T>,
    ) -> StateResult<Rc<dyn InternalReducingState<N, T>>> {
        let name = desc.name();
        let resolve = |old: Option<&StateMetaInfo>| {
            let prev = old.map_or_else(
                || desc.serializer().snapshot(),
                |m| m.value_serializer.clone(),
            );
            let r = resolve_restored(name, "value", desc.serializer(), &prev)?;
            let meta =
                StateMetaInfo::new::<N>(name, StateKind::Reducing, r.serializer.snapshot(), None);
            let codec: Arc<dyn Codec<T>> = Arc::new(ValueCodec {
                ser: r.serializer,
                reader: r.reader,
            });
            Ok((codec, meta))
        };
        let s = self.register::<N, T, ReduceExtra<T>>(
            name,
            StateKind::Reducing,
            &|m: &StateMetaInfo| m.check_value_serializer(desc.serializer().as_ref()),
            &resolve,
            desc.ttl_storage().map(TableTtl::whole),
            ReduceExtra(desc.reduce_fn().clone()),
        )?;
        Ok(s)
    }

    fn create_aggregating_state<N: Namespace, IN: 'static, ACC: StateValue, OUT: 'static>(
        &self,
        desc: &AggregatingStateDescriptor<IN, ACC, OUT>,
    ) -> StateResult<Rc<dyn InternalAggregatingState<N, IN, OUT>>> {
        let name = desc.name();
        let resolve = |old: Option<&StateMetaInfo>| {
            let prev = old.map_or_else(
                || desc.serializer().snapshot(),
                |m| m.value_serializer.clone(),
            );
            let r = resolve_restored(name, "accumulator", desc.serializer(), &prev)?;
            let meta = StateMetaInfo::new::<N>(
                name,
                StateKind::Aggregating,
                r.serializer.snapshot(),
                None,
            );
            let codec: Arc<dyn Codec<ACC>> = Arc::new(ValueCodec {
                ser: r.serializer,
                reader: r.reader,
            });
            Ok((codec, meta))
        };
        let s = self.register::<N, ACC, AggExtra<IN, ACC, OUT>>(
            name,
            StateKind::Aggregating,
            &|m: &StateMetaInfo| m.check_value_serializer(desc.serializer().as_ref()),
            &resolve,
            desc.ttl_storage().map(TableTtl::whole),
            AggExtra(desc.function().clone()),
        )?;
        Ok(s)
    }

    fn state_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.states.borrow().keys().cloned().collect();
        names.extend(self.pending.borrow().keys().cloned());
        names.sort();
        names
    }

    fn keys<N: Namespace>(&self, state: &str, namespace: &N) -> StateResult<Vec<K>> {
        if let Some(r) = self.states.borrow().get(state) {
            return r.table.keys(namespace);
        }
        // A restored state not registered yet: decode keys and namespaces only.
        let pending = self.pending.borrow();
        let p = pending
            .get(state)
            .ok_or_else(|| StateError::UnknownState(state.to_string()))?;
        let ns_ser = SerdeSerializer::<N>::new();
        require_same_layout(state, "namespace", &ns_ser, &p.meta.namespace_serializer)?;
        let ser_err = |e| StateError::Serialization {
            state: state.to_string(),
            source: e,
        };
        let mut keys = Vec::new();
        for (_, section) in &p.sections {
            for e in section_entries(section, &p.path)? {
                if ns_ser.deserialize(e.namespace).map_err(ser_err)? == *namespace {
                    keys.push(
                        self.config
                            .key_serializer
                            .deserialize(e.key)
                            .map_err(ser_err)?,
                    );
                }
            }
        }
        Ok(keys)
    }

    type Snapshot = KeyedSnapshot;

    fn snapshot(&self, _checkpoint_id: u64) -> StateResult<KeyedSnapshot> {
        self.savepoint()
    }

    fn savepoint(&self) -> StateResult<KeyedSnapshot> {
        let mut writers: Vec<Box<dyn flowstate_core::snapshot::KeyedStateWriter>> = Vec::new();
        for r in self.states.borrow().values() {
            writers.push(r.table.writer());
        }
        for p in self.pending.borrow().values() {
            let mut sections: hashbrown::HashMap<u32, Vec<bytes::Bytes>> =
                hashbrown::HashMap::new();
            for (kg, s) in &p.sections {
                sections.entry(*kg).or_default().push(s.clone());
            }
            writers.push(Box::new(PendingWriter {
                meta: p.meta.clone(),
                sections,
            }));
        }
        Ok(KeyedSnapshot::new(
            self.config.max_parallelism,
            self.config.key_group_range,
            self.config.key_serializer.snapshot(),
            writers,
        ))
    }
}

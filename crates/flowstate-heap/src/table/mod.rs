//! The heap backend's storage: one hash table per key group per state, copy-on-write.
//!
//! Each key group's table is a [`KgSlot`]: owned by the state while no snapshot holds
//! it, behind an `Arc` once a snapshot's synchronous part has shared it (O(key
//! groups), no entry is copied). The first write to a shared key group takes the table
//! back: without a copy when the snapshot writer has already dropped it, by cloning
//! that one table when the snapshot still holds it, so the snapshot keeps seeing
//! exactly the state at the snapshot point while processing continues. The snapshot
//! writer drops each key group's `Arc` as soon as it is written. A key group is copied
//! at most once per snapshot, and only if it is written before the snapshot thread
//! reaches it. An owned table is written without touching a reference count: an
//! atomic read-modify-write per write (what `Arc::make_mut` costs) is a full memory
//! barrier on x86 and kept cache misses of neighbouring records from overlapping.
//!
//! Entries live in a `hashbrown::HashTable` keyed by `(key, namespace)`: one hash and
//! one probe per access, and the key is cloned only when a new entry is inserted.
//!
//! Beside the tables: `codec.rs` (what each state kind's values are written as),
//! `ttl.rs` (what expires, and the incremental cleanup), `snapshot.rs` (the
//! asynchronous part of a snapshot).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use flowstate_core::error::{StateError, StateResult};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::serializer::TypeSerializer;
use flowstate_core::snapshot::{
    KeyedStateWriter, StateMetaInfo, check_entry_key_group, section_entries,
};
use flowstate_core::state::VoidNamespace;
use flowstate_core::ttl::filter_snapshot_writer;
use hashbrown::{DefaultHashBuilder, HashTable};
use smallvec::SmallVec;

pub(crate) use crate::user_map::UserMap;

mod codec;
mod snapshot;
mod ttl;

use codec::ser_err;
pub(crate) use codec::{Codec, ListCodec, MapCodec, ValueCodec};
pub(crate) use snapshot::PendingWriter;
use snapshot::TableSnapshot;
pub(crate) use ttl::TableTtl;

/// One stored entry.
#[derive(Clone)]
pub(crate) struct Entry<K, N, S> {
    pub(crate) key: K,
    pub(crate) ns: N,
    pub(crate) value: S,
}

/// The estimated size of a state's tables below which [`ErasedTable::touch`] does
/// nothing: about a core's L2 cache.
const TOUCH_MIN_BYTES: usize = 1 << 20;

/// How many values [`ErasedTable::touch`] gathers without allocating: the keyed
/// operator prefetches 32 records at a time.
const TOUCH_INLINE: usize = 32;

/// The entries of one key group of one state.
pub(crate) type KgTable<K, N, S> = HashTable<Entry<K, N, S>>;

/// One key's probe in [`ErasedTable::touch`]: its key group's table, hash and key.
type Probe<'a, K, N, S> = (&'a KgTable<K, N, S>, u64, &'a K);

/// One key group's table: owned, or shared with a snapshot (then `owned` is empty and
/// unused).
pub(crate) struct KgSlot<K, N, S> {
    owned: KgTable<K, N, S>,
    shared: Option<Arc<KgTable<K, N, S>>>,
}

impl<K: Clone, N: Clone, S: Clone> KgSlot<K, N, S> {
    fn new() -> Self {
        KgSlot {
            owned: HashTable::new(),
            shared: None,
        }
    }

    /// The table, for writing: a shared table is taken back first (cloned only while a
    /// snapshot still holds it).
    #[inline]
    pub(crate) fn to_mut(&mut self) -> &mut KgTable<K, N, S> {
        if self.shared.is_some() {
            self.take_back();
        }
        &mut self.owned
    }

    /// Takes the table back from a snapshot, cloning it if the snapshot still holds
    /// it. Out of line: once per key group per checkpoint, so the check in
    /// [`Self::to_mut`], on every write, stays a test and a branch.
    #[cold]
    #[inline(never)]
    fn take_back(&mut self) {
        if let Some(shared) = self.shared.take() {
            self.owned = Arc::unwrap_or_clone(shared);
        }
    }

    /// Shares the table with a snapshot: the snapshot's handle on it.
    fn share(&mut self) -> Arc<KgTable<K, N, S>> {
        let owned = &mut self.owned;
        self.shared
            .get_or_insert_with(|| Arc::new(std::mem::take(owned)))
            .clone()
    }
}

impl<K, N, S> std::ops::Deref for KgSlot<K, N, S> {
    type Target = KgTable<K, N, S>;

    #[inline]
    fn deref(&self) -> &KgTable<K, N, S> {
        self.shared.as_deref().unwrap_or(&self.owned)
    }
}

/// The backend's current key, shared by every state handle.
pub(crate) struct KeyContext<K> {
    pub(crate) key: RefCell<Option<K>>,
    /// Position of the current key's group within the backend's range.
    pub(crate) kg_index: Cell<usize>,
    pub(crate) scratch: RefCell<Vec<u8>>,
}

/// All key groups of one state.
pub(crate) struct StateTable<K, N, S> {
    pub(crate) meta: StateMetaInfo,
    pub(crate) range: KeyGroupRange,
    pub(crate) max_parallelism: u32,
    pub(crate) maps: RefCell<Vec<KgSlot<K, N, S>>>,
    pub(crate) hasher: DefaultHashBuilder,
    pub(crate) key_ser: Arc<dyn TypeSerializer<K>>,
    pub(crate) ns_ser: Arc<dyn TypeSerializer<N>>,
    pub(crate) codec: Arc<dyn Codec<S>>,
    pub(crate) ttl: Option<TableTtl<S>>,
    /// Whether an access since the last prefetch read or wrote inside a value (a
    /// map's pairs, a list's elements), not only its entry: the prefetch loads what
    /// values keep out of line only then (a state read only by `is_empty` would pay
    /// for lines it never reads).
    pub(crate) reads_inside: Cell<bool>,
}

impl<K, N, S> StateTable<K, N, S>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(
        meta: StateMetaInfo,
        range: KeyGroupRange,
        max_parallelism: u32,
        key_ser: Arc<dyn TypeSerializer<K>>,
        ns_ser: Arc<dyn TypeSerializer<N>>,
        codec: Arc<dyn Codec<S>>,
        ttl: Option<TableTtl<S>>,
    ) -> Self {
        StateTable {
            meta,
            range,
            max_parallelism,
            maps: RefCell::new((0..range.len()).map(|_| KgSlot::new()).collect()),
            hasher: DefaultHashBuilder::default(),
            key_ser,
            ns_ser,
            codec,
            ttl,
            reads_inside: Cell::new(true),
        }
    }

    #[inline]
    pub(crate) fn hash(&self, key: &K, ns: &N) -> u64 {
        self.hasher.hash_one((key, ns))
    }

    /// Decodes restored sections into the tables. Nothing is inserted unless every
    /// entry decodes and sits in the key group it was stored under.
    pub(crate) fn load(&self, sections: &[(u32, bytes::Bytes)], path: &str) -> StateResult<()> {
        let name = &self.meta.name;
        let mut decoded: Vec<(usize, Entry<K, N, S>)> = Vec::new();
        for (kg, section) in sections {
            let idx = self
                .range
                .index_of(*kg)
                .ok_or(StateError::KeyGroupOutOfRange {
                    key_group: *kg,
                    range: self.range,
                })?;
            for e in section_entries(section, path)? {
                check_entry_key_group(path, name, e.key, *kg, self.max_parallelism)?;
                let key = self.key_ser.deserialize(e.key).map_err(ser_err(name))?;
                let ns = self
                    .ns_ser
                    .deserialize(e.namespace)
                    .map_err(ser_err(name))?;
                let value = self.codec.decode(name, path, e.payload)?;
                decoded.push((idx, Entry { key, ns, value }));
            }
        }
        let mut maps = self.maps.borrow_mut();
        for (idx, entry) in decoded {
            let hash = self.hash(&entry.key, &entry.ns);
            let table = maps[idx].to_mut();
            match table.entry(
                hash,
                |e| e.key == entry.key && e.ns == entry.ns,
                |e| self.hasher.hash_one((&e.key, &e.ns)),
            ) {
                hashbrown::hash_table::Entry::Occupied(mut o) => o.get_mut().value = entry.value,
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(entry);
                }
            }
        }
        Ok(())
    }
}

/// A state table seen without its namespace and value types.
pub(crate) trait ErasedTable<K> {
    fn meta(&self) -> &StateMetaInfo;
    /// Incremental TTL cleanup run once per record, when configured.
    fn per_record_cleanup(&self);
    /// Whether [`ErasedTable::per_record_cleanup`] does anything.
    fn cleans_per_record(&self) -> bool;
    fn writer(&self) -> Box<dyn KeyedStateWriter>;
    fn keys(&self, ns: &dyn Any) -> StateResult<Vec<K>>;
    /// Prefetches each key's entry (with its key group): it brings the entries (for a
    /// key not there yet, the bucket its insert will write) into the CPU cache before
    /// the records that need them run, with prefetch instructions that do not wait,
    /// so that their cache misses overlap. Only tables without
    /// namespaces (`VoidNamespace`) probe; others, whose namespace is known only when
    /// a record runs, do nothing; so do tables small enough to stay in cache. Key
    /// groups outside the range are skipped.
    fn touch(&self, keys: &[(u32, &K)]);
}

impl<K, N, S> ErasedTable<K> for StateTable<K, N, S>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    fn meta(&self) -> &StateMetaInfo {
        &self.meta
    }

    fn per_record_cleanup(&self) {
        if let Some(t) = &self.ttl
            && let Some(inc) = t.config.cleanup().incremental
            && inc.run_for_every_record
        {
            self.cleanup_expired(t, inc.cleanup_size);
        }
    }

    fn cleans_per_record(&self) -> bool {
        self.ttl.as_ref().is_some_and(|t| {
            t.config
                .cleanup()
                .incremental
                .is_some_and(|i| i.run_for_every_record)
        })
    }

    fn writer(&self) -> Box<dyn KeyedStateWriter> {
        let writer = Box::new(TableSnapshot {
            meta: self.meta.clone(),
            range: self.range,
            maps: self
                .maps
                .borrow_mut()
                .iter_mut()
                .map(|m| Some(m.share()))
                .collect(),
            key_ser: self.key_ser.clone(),
            ns_ser: self.ns_ser.clone(),
            codec: self.codec.clone(),
        });
        filter_snapshot_writer(writer, self.ttl.as_ref().map(|t| &t.config))
    }

    fn touch(&self, keys: &[(u32, &K)]) {
        let Some(ns) = (&VoidNamespace as &dyn Any).downcast_ref::<N>() else {
            return;
        };
        let Ok(maps) = self.maps.try_borrow() else {
            return;
        };
        // A key group's table; none for a key group outside the range.
        let table_of = |kg: u32| self.range.index_of(kg).and_then(|i| maps.get(i));
        // A state that fits in the CPU's caches needs no probing ahead, which would
        // only cost: its size is estimated from the first key's key group.
        let sample = keys.first().and_then(|&(kg, _)| table_of(kg));
        let bytes = sample.map_or(0, |m| {
            m.num_buckets() * std::mem::size_of::<Entry<K, N, S>>() * maps.len()
        });
        if bytes < TOUCH_MIN_BYTES {
            return;
        }
        // Each key's entry is requested with a prefetch instruction, which does not
        // wait for the line: the probe reads the key's group of control bytes (2 MiB
        // for a million keys, mostly in cache) and takes the first bucket whose hash
        // tag matches, without reading the bucket (another key's bucket with the same
        // 7-bit tag, a few times in a hundred, costs a useless line). The loads of the
        // old form (a full `find`, comparing keys) waited in the CPU's reorder window,
        // so only a few were in flight at once. A key not there yet gets the line
        // where it will be inserted.
        if !self.codec.touches() || !self.reads_inside.replace(false) {
            // Only the entries: each key's bucket is requested as soon as its hash is
            // known (gathering the probes first was a third of this loop's work).
            for &(kg, key) in keys {
                if let Some(m) = table_of(kg) {
                    flowstate_prefetch::prefetch_bucket(m, self.hash(key, ns));
                }
            }
            return;
        }
        // With the values too: first each key's table and hash, which read nothing
        // but the batch and the tables' headers, kept for the second pass below.
        let probes: SmallVec<[Probe<'_, K, N, S>; TOUCH_INLINE]> = keys
            .iter()
            .filter_map(|&(kg, key)| table_of(kg).map(|m| (&**m, self.hash(key, ns), key)))
            .collect();
        for &(m, hash, _) in &probes {
            flowstate_prefetch::prefetch_bucket(m, hash);
        }
        // What a value keeps out of line is loaded once its entry is there, all
        // values at once, so that their misses overlap too.
        let found: SmallVec<[&S; TOUCH_INLINE]> = probes
            .iter()
            .filter_map(|&(m, hash, key)| m.find(hash, |e| e.key == *key && e.ns == *ns))
            .map(|e| &e.value)
            .collect();
        if !found.is_empty() {
            self.codec.touch(&found);
        }
    }

    fn keys(&self, ns: &dyn Any) -> StateResult<Vec<K>> {
        let ns = ns
            .downcast_ref::<N>()
            .ok_or_else(|| StateError::TypeMismatch {
                name: self.meta.name.clone(),
                detail: "requested keys under another namespace type".into(),
            })?;
        Ok(self
            .maps
            .borrow()
            .iter()
            .flat_map(|m| {
                m.iter()
                    .filter(|e| e.ns == *ns)
                    .map(|e| e.key.clone())
                    .collect::<Vec<_>>()
            })
            .collect())
    }
}

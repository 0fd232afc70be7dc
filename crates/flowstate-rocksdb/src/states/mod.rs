//! State handles of the RocksDB backend.
//!
//! Values are stored serialized: value, reducing and aggregating state as the value;
//! list state as a concatenation of items (`flowstate_core::rocksdb_list`; appends are
//! merge operands, never a read-modify-write); map state as one RocksDB entry per user
//! key.
//!
//! One file per state kind: `value.rs` (value, reducing and aggregating state: one
//! stored value per key and namespace), `list.rs` and `map.rs`. This module holds what
//! they share: the handle, its raw reads and deferred writes, and the backend's
//! batching of them.

mod list;
mod map;
mod value;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use flowstate_core::descriptor::{AggregateFunction, ReduceFn};
use flowstate_core::format::put_len_prefixed;
use flowstate_core::serializer::{SerdeSerializer, TypeSerializer};
use flowstate_core::state::{InternalKvState, Namespace, StateKey};
use flowstate_core::{StateError, StateResult};
use rocksdb::{BoundColumnFamily, ReadOptions, WriteBatch, WriteOptions};

use crate::buffers::{Buf, Buffers};
use crate::cache::EntryCache;
use crate::db::{DbHolder, rerr};
use crate::deferred::{Deferred, Held, Op};
use crate::prefetch::{Prefetched, read_ahead};
use crate::scan::ScanIter;

/// What every handle of one backend shares: the database and the current key.
pub(crate) struct Shared<K> {
    pub(crate) holder: Arc<DbHolder>,
    pub(crate) key: RefCell<Option<K>>,
    /// `key group | length | key` of the current key.
    pub(crate) prefix: RefCell<Vec<u8>>,
    /// Where the next current key's prefix is built, then swapped with `prefix`.
    pub(crate) spare_prefix: RefCell<Vec<u8>>,
    pub(crate) write_options: WriteOptions,
    /// Reused: rust-rocksdb's `get_pinned_cf` builds and frees options on every call.
    pub(crate) read_options: ReadOptions,
    /// Bytes of writes a state defers before it writes them ([`RocksState::deferred`]).
    pub(crate) deferred_write_bytes: usize,
    /// Bytes of read entries a state keeps ([`RocksState::cached`]).
    pub(crate) entry_cache_bytes: usize,
}

/// A keyed state handle; `X` carries the kind's serializers and functions.
pub(crate) struct RocksState<K, N, X> {
    pub(crate) shared: Rc<Shared<K>>,
    pub(crate) name: String,
    pub(crate) ns: RefCell<N>,
    /// Built once: constructing a serde serializer formats its type name.
    pub(crate) ns_ser: SerdeSerializer<N>,
    pub(crate) extra: X,
    /// The keys of the backend's last prefetch, with their values when read ahead (empty
    /// unless this state is one it prefetches): gets of them are answered from here.
    pub(crate) prefetched: RefCell<Prefetched>,
    /// Puts, deletes and list appends not yet in RocksDB (see `deferred.rs`): gets of
    /// put or deleted entries are answered from here.
    pub(crate) deferred: RefCell<Deferred>,
    /// Entries read from RocksDB, kept up to date by the writes (see `cache.rs`): gets
    /// of them are answered from here after the deferred writes.
    pub(crate) cached: RefCell<EntryCache>,
    /// Reused for entry keys and serialized values.
    pub(crate) buffers: Buffers,
    /// The iterator the state's scans reuse (see `scan.rs`).
    pub(crate) scan: ScanIter,
}

/// What the backend does with every state's deferred writes, and with the states it
/// prefetches for (see `deferred.rs` and `prefetch.rs`).
pub(crate) trait Batching {
    /// Writes the deferred writes to RocksDB in one batch, in key order (before anything
    /// reads RocksDB other than through the state's get); on failure they are kept, to
    /// be tried again.
    fn write_deferred(&self) -> StateResult<()>;
    /// Starts a batch with `entry_keys` (sorted, unique): caches the keys, with their
    /// values while the state's records read most of what is cached ([`read_ahead`]):
    /// from the deferred writes, the others read in one `MultiGet`. A failed read
    /// caches the keys without values.
    fn begin(&self, entry_keys: &[Vec<u8>]);
    /// Drops the iterator the state's scans reuse (see `scan.rs`), unpinning the
    /// RocksDB version it holds.
    fn release_scan(&self);
}

impl<K: StateKey, N: Namespace, X> Batching for RocksState<K, N, X> {
    fn write_deferred(&self) -> StateResult<()> {
        let mut deferred = self.deferred.borrow_mut();
        if deferred.is_empty() {
            return Ok(());
        }
        let cf = self.cf()?;
        let mut batch = WriteBatch::default();
        let sorted = deferred.sorted();
        for (key, op) in sorted.iter() {
            match op {
                Op::Put(v) => batch.put_cf(&cf, key, v),
                Op::Delete => batch.delete_cf(&cf, key),
                Op::Append(operand) => batch.merge_cf(&cf, key, operand),
            }
        }
        self.db()
            .write_opt(batch, &self.shared.write_options)
            .map_err(rerr("write deferred writes"))?;
        deferred.clear();
        Ok(())
    }

    fn release_scan(&self) {
        self.scan.release();
    }

    fn begin(&self, entry_keys: &[Vec<u8>]) {
        let mut cache = self.prefetched.borrow_mut();
        let deferred = self.deferred.borrow();
        let mut cached = self.cached.borrow_mut();
        // Each key's bucket among the deferred writes and the cached entries requested
        // at once, so that the look-ups below and the records' writes find them in cache.
        for k in entry_keys {
            deferred.touch(k);
            cached.touch(k);
        }
        if !read_ahead(cache.len(), cache.reads()) {
            cache.fill(entry_keys.iter().map(|k| (k.as_slice(), None)));
            return;
        }
        // One look-up per key: what the deferred writes or the cached entries hold, and
        // the keys neither does.
        let held: Vec<Option<Held<'_>>> = entry_keys
            .iter()
            .map(|k| deferred.get(k).or_else(|| cached.get(k).map(Held::Known)))
            .collect();
        let unwritten: Vec<&Vec<u8>> = entry_keys
            .iter()
            .zip(&held)
            .filter(|(_, h)| h.is_none())
            .map(|(k, _)| k)
            .collect();
        let read = match self.cf() {
            Ok(cf) if !unwritten.is_empty() => self
                .db()
                .batched_multi_get_cf_opt(&cf, unwritten.iter(), true, &self.shared.read_options)
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .ok(),
            Ok(_) => Some(Vec::new()),
            Err(_) => None,
        };
        let Some(read) = read else {
            cache.fill(entry_keys.iter().map(|k| (k.as_slice(), None)));
            return;
        };
        // One result per key read, in order; a key without one is cached unread.
        let mut values = read.iter();
        cache.fill(entry_keys.iter().zip(held).map(|(k, held)| {
            let value = match held {
                Some(Held::Known(v)) => Some(v),
                // Appends to a value not read: cached without it (a get writes them).
                Some(Held::Appended) => None,
                None => values.next().map(|v| v.as_deref()),
            };
            (k.as_slice(), value)
        }));
        for (k, v) in unwritten.iter().zip(&read) {
            cached.remember(k, v.as_deref());
        }
    }
}

pub(crate) struct ValueX<T> {
    pub(crate) ser: Arc<dyn TypeSerializer<T>>,
    pub(crate) default: Option<T>,
}
pub(crate) struct ListX<T> {
    pub(crate) ser: Arc<dyn TypeSerializer<T>>,
    /// `ser` writes integers as [`IntegerEncoding`] does: items are encoded here, with
    /// no call through `ser` per item, and whole lists of them stored as runs
    /// (`flowstate_core::rocksdb_list`).
    pub(crate) integers: bool,
}
pub(crate) struct MapX<UK, UV> {
    pub(crate) key_ser: Arc<dyn TypeSerializer<UK>>,
    pub(crate) value_ser: Arc<dyn TypeSerializer<UV>>,
}
pub(crate) struct ReduceX<T> {
    pub(crate) ser: Arc<dyn TypeSerializer<T>>,
    pub(crate) reduce: ReduceFn<T>,
}
pub(crate) struct AggX<IN, ACC, OUT> {
    pub(crate) ser: Arc<dyn TypeSerializer<ACC>>,
    pub(crate) function: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
}

fn ser_err(state: &str) -> impl Fn(flowstate_core::SerializationError) -> StateError + '_ {
    move |e| StateError::serialization(state, e)
}

impl<K: StateKey, N: Namespace, X> RocksState<K, N, X> {
    fn db(&self) -> &rocksdb::DB {
        &self.shared.holder.db
    }

    fn cf(&self) -> StateResult<Arc<BoundColumnFamily<'_>>> {
        self.db()
            .cf_handle(&self.name)
            .ok_or_else(|| StateError::UnknownState(self.name.clone()))
    }

    /// `key group | key | namespace` of the current key and namespace.
    fn entry_key(&self) -> StateResult<Buf<'_>> {
        if self.shared.key.borrow().is_none() {
            return Err(StateError::NoCurrentKey {
                state: self.name.clone(),
            });
        }
        let mut k = self.buffers.take();
        k.extend_from_slice(&self.shared.prefix.borrow());
        // The namespace serialized in place behind its length, as the key prefix is.
        put_len_prefixed(&mut k, |o| self.ns_ser.serialize_into(&self.ns.borrow(), o))?
            .map_err(ser_err(&self.name))?;
        Ok(k)
    }

    fn with_raw<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> StateResult<R>,
    ) -> StateResult<R> {
        if let Some(v) = self.prefetched.borrow_mut().get(key) {
            return f(v);
        }
        let appended = match self.deferred.borrow().get(key) {
            Some(Held::Known(v)) => return f(v),
            Some(Held::Appended) => true,
            None => false,
        };
        if appended {
            // The appends apply to what RocksDB holds: they go in first.
            self.write_deferred()?;
        } else if let Some(v) = self.cached.borrow().get(key) {
            return f(v);
        }
        let cf = self.cf()?;
        let v = self
            .db()
            .get_pinned_cf_opt(&cf, key, &self.shared.read_options)
            .map_err(rerr("get"))?;
        self.cached.borrow_mut().remember(key, v.as_deref());
        f(v.as_deref())
    }

    fn put_raw(&self, key: &[u8], value: &[u8]) -> StateResult<()> {
        self.defer(key, Some(value))
    }

    fn delete_raw(&self, key: &[u8]) -> StateResult<()> {
        self.defer(key, None)
    }

    /// Keeps a put (`Some`) or delete (`None`) among the deferred writes, and writes them
    /// all once they reach their budget.
    fn defer(&self, key: &[u8], value: Option<&[u8]>) -> StateResult<()> {
        self.prefetched.borrow_mut().update(key, value);
        self.cached.borrow_mut().update(key, value);
        self.deferring(|d| d.insert(key, value))
    }

    /// Adds to the deferred writes with `f`, then writes them all if they reached their
    /// budget.
    fn deferring(&self, f: impl FnOnce(&mut Deferred)) -> StateResult<()> {
        let full = {
            let mut deferred = self.deferred.borrow_mut();
            f(&mut deferred);
            deferred.bytes() >= self.shared.deferred_write_bytes
        };
        if full {
            self.write_deferred()?;
        }
        Ok(())
    }

    /// Writes `batch` after the deferred writes, so that it lands after them. `changed`
    /// is what the batch does to each entry key it writes (`None`: deletes it), for the
    /// cached entries to follow.
    fn write_batch<'k>(
        &self,
        batch: WriteBatch,
        changed: impl IntoIterator<Item = (&'k [u8], Option<&'k [u8]>)>,
    ) -> StateResult<()> {
        self.write_deferred()?;
        self.db()
            .write_opt(batch, &self.shared.write_options)
            .map_err(rerr("write batch"))?;
        let mut cached = self.cached.borrow_mut();
        for (key, value) in changed {
            cached.update(key, value);
        }
        Ok(())
    }

    /// Keeps an append (a RocksDB merge) among the deferred writes, and writes them all
    /// once they reach their budget.
    fn merge_raw(&self, key: &[u8], operand: &[u8]) -> StateResult<()> {
        self.prefetched.borrow_mut().forget(key);
        self.cached.borrow_mut().forget(key);
        self.deferring(|d| d.append(key, operand))
    }

    /// Runs `f` with the entry key of (current key, `ns`), restoring the namespace after.
    fn at_namespace<R>(
        &self,
        ns: &N,
        f: impl FnOnce(&Self, &[u8]) -> StateResult<R>,
    ) -> StateResult<R> {
        let previous = self.ns.replace(ns.clone());
        let r = self.entry_key().and_then(|k| f(self, &k));
        *self.ns.borrow_mut() = previous;
        r
    }

    /// Removes and returns the raw values of (current key, each source namespace).
    fn take_sources(&self, sources: &[N]) -> StateResult<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for s in sources {
            if let Some(v) = self.at_namespace(s, |st, k| {
                let v = st.with_raw(k, |v| Ok(v.map(<[u8]>::to_vec)))?;
                if v.is_some() {
                    st.delete_raw(k)?;
                }
                Ok(v)
            })? {
                out.push(v);
            }
        }
        Ok(out)
    }

    fn decode<T: 'static>(&self, ser: &dyn TypeSerializer<T>, bytes: &[u8]) -> StateResult<T> {
        ser.deserialize(bytes).map_err(ser_err(&self.name))
    }

    fn encode<T: 'static>(&self, ser: &dyn TypeSerializer<T>, v: &T) -> StateResult<Buf<'_>> {
        let mut out = self.buffers.take();
        ser.serialize_into(v, &mut out)
            .map_err(ser_err(&self.name))?;
        Ok(out)
    }
}

/// Kinds stored as one serialized value: their serialized form is the stored bytes.
pub(crate) trait SingleValue {
    type V: 'static;
    fn serializer(&self) -> &dyn TypeSerializer<Self::V>;
}

impl<T: 'static> SingleValue for ValueX<T> {
    type V = T;
    fn serializer(&self) -> &dyn TypeSerializer<T> {
        self.ser.as_ref()
    }
}

impl<T: 'static> SingleValue for ReduceX<T> {
    type V = T;
    fn serializer(&self) -> &dyn TypeSerializer<T> {
        self.ser.as_ref()
    }
}

impl<IN, ACC: 'static, OUT> SingleValue for AggX<IN, ACC, OUT> {
    type V = ACC;
    fn serializer(&self) -> &dyn TypeSerializer<ACC> {
        self.ser.as_ref()
    }
}

impl<K: StateKey, N: Namespace, X: SingleValue> InternalKvState<N> for RocksState<K, N, X> {
    fn name(&self) -> &str {
        &self.name
    }
    fn set_current_namespace(&self, namespace: N) {
        *self.ns.borrow_mut() = namespace;
    }
    fn get_serialized(&self) -> StateResult<Option<Vec<u8>>> {
        let k = self.entry_key()?;
        self.with_raw(&k, |v| Ok(v.map(<[u8]>::to_vec)))
    }
    fn set_serialized(&self, payload: &[u8]) -> StateResult<()> {
        self.decode(self.extra.serializer(), payload)?;
        let k = self.entry_key()?;
        self.put_raw(&k, payload)
    }
}

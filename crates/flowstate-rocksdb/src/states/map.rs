//! Map state on RocksDB: one entry per user key, behind the key and namespace.

use flowstate_core::StateResult;
use flowstate_core::format::{put_varint, put_vbytes};
use flowstate_core::snapshot::payload;
use flowstate_core::state::{
    InternalKvState, InternalMapState, MapState, Namespace, StateKey, StateValue,
};
use rocksdb::WriteBatch;

use crate::buffers::Buf;
use crate::db::rerr;

use super::{Batching, MapX, RocksState, ser_err};

// ---- map ----

/// Entries `entries`, `keys` and `values` make room for before their scan: growing a
/// vector from empty reallocates at 4 and 8 entries, and with glibc's allocator those
/// reallocations took 13% of `mapKeys` on maps of 10 entries, and the
/// `malloc_consolidate` they left RocksDB's next iterator arena to pay 4% more (perf,
/// 2026-12-04; `docs/benchmarks-history.md`, "Session 47").
const SCAN_CAPACITY: usize = 16;

impl<K: StateKey, N: Namespace, UK: StateKey, UV: StateValue> RocksState<K, N, MapX<UK, UV>> {
    fn user_entry_key(&self, uk: &UK) -> StateResult<Buf<'_>> {
        let mut k = self.entry_key()?;
        self.extra
            .key_ser
            .serialize_into(uk, &mut k)
            .map_err(ser_err(&self.name))?;
        Ok(k)
    }

    /// Runs `f` on every (user key bytes, value bytes) of the current key and namespace.
    fn scan(&self, mut f: impl FnMut(&[u8], &[u8]) -> StateResult<bool>) -> StateResult<()> {
        // An iterator reads RocksDB only.
        self.write_deferred()?;
        let prefix = self.entry_key()?;
        // Prefix seeks: the entry prefix is the extractor's, so files without it are
        // skipped; the check below still ends the scan at the prefix's end. The
        // iterator is the state's own, refreshed (see `scan.rs`).
        self.scan.with(&self.shared.holder, &self.name, |it| {
            it.seek(&prefix);
            while it.valid() {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                let Some(uk) = k.strip_prefix(prefix.as_slice()) else {
                    break;
                };
                if !f(uk, v)? {
                    break;
                }
                it.next();
            }
            it.status().map_err(rerr("iterate"))
        })
    }
}

impl<K: StateKey, N: Namespace, UK: StateKey, UV: StateValue> MapState<UK, UV>
    for RocksState<K, N, MapX<UK, UV>>
{
    fn get(&self, key: &UK) -> StateResult<Option<UV>> {
        let k = self.user_entry_key(key)?;
        self.with_raw(&k, |v| {
            v.map(|b| self.decode(self.extra.value_ser.as_ref(), b))
                .transpose()
        })
    }
    fn put(&self, key: UK, value: UV) -> StateResult<()> {
        let k = self.user_entry_key(&key)?;
        let v = self.encode(self.extra.value_ser.as_ref(), &value)?;
        self.put_raw(&k, &v)
    }
    fn put_all(&self, entries: Vec<(UK, UV)>) -> StateResult<()> {
        for (uk, uv) in &entries {
            let k = self.user_entry_key(uk)?;
            let v = self.encode(self.extra.value_ser.as_ref(), uv)?;
            self.put_raw(&k, &v)?;
        }
        Ok(())
    }
    fn remove(&self, key: &UK) -> StateResult<()> {
        let k = self.user_entry_key(key)?;
        self.delete_raw(&k)
    }
    fn contains(&self, key: &UK) -> StateResult<bool> {
        let k = self.user_entry_key(key)?;
        self.with_raw(&k, |v| Ok(v.is_some()))
    }
    fn entries(&self) -> StateResult<Vec<(UK, UV)>> {
        let mut out = Vec::with_capacity(SCAN_CAPACITY);
        self.scan(|k, v| {
            out.push((
                self.decode(self.extra.key_ser.as_ref(), k)?,
                self.decode(self.extra.value_ser.as_ref(), v)?,
            ));
            Ok(true)
        })?;
        Ok(out)
    }
    fn keys(&self) -> StateResult<Vec<UK>> {
        let mut out = Vec::with_capacity(SCAN_CAPACITY);
        self.scan(|k, _| {
            out.push(self.decode(self.extra.key_ser.as_ref(), k)?);
            Ok(true)
        })?;
        Ok(out)
    }
    fn values(&self) -> StateResult<Vec<UV>> {
        let mut out = Vec::with_capacity(SCAN_CAPACITY);
        self.scan(|_, v| {
            out.push(self.decode(self.extra.value_ser.as_ref(), v)?);
            Ok(true)
        })?;
        Ok(out)
    }
    fn is_empty(&self) -> StateResult<bool> {
        let mut empty = true;
        self.scan(|_, _| {
            empty = false;
            Ok(false)
        })?;
        Ok(empty)
    }
    fn clear(&self) -> StateResult<()> {
        let prefix = self.entry_key()?;
        let cf = self.cf()?;
        let mut batch = WriteBatch::default();
        let mut deleted = Vec::new();
        self.scan(|uk, _| {
            let mut k = prefix.to_vec();
            k.extend_from_slice(uk);
            batch.delete_cf(&cf, &k);
            deleted.push(k);
            Ok(true)
        })?;
        self.write_batch(batch, deleted.iter().map(|k| (k.as_slice(), None)))
    }
}

impl<K: StateKey, N: Namespace, UK: StateKey, UV: StateValue> InternalKvState<N>
    for RocksState<K, N, MapX<UK, UV>>
{
    fn name(&self) -> &str {
        &self.name
    }
    fn set_current_namespace(&self, namespace: N) {
        *self.ns.borrow_mut() = namespace;
    }
    fn get_serialized(&self) -> StateResult<Option<Vec<u8>>> {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        self.scan(|k, v| {
            pairs.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })?;
        if pairs.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::new();
        put_varint(&mut out, pairs.len() as u32);
        for (k, v) in &pairs {
            put_vbytes(&mut out, k)?;
            put_vbytes(&mut out, v)?;
        }
        Ok(Some(out))
    }
    fn set_serialized(&self, canonical: &[u8]) -> StateResult<()> {
        let pairs = payload::map_pairs(canonical, &self.name)?;
        for (k, v) in &pairs {
            self.decode(self.extra.key_ser.as_ref(), k)?;
            self.decode(self.extra.value_ser.as_ref(), v)?;
        }
        MapState::clear(self)?;
        let prefix = self.entry_key()?;
        let cf = self.cf()?;
        let mut batch = WriteBatch::default();
        let mut put = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let mut key = prefix.to_vec();
            key.extend_from_slice(k);
            batch.put_cf(&cf, &key, v);
            put.push((key, v));
        }
        self.write_batch(batch, put.iter().map(|(k, v)| (k.as_slice(), Some(*v))))
    }
}

impl<K: StateKey, N: Namespace, UK: StateKey, UV: StateValue> InternalMapState<N, UK, UV>
    for RocksState<K, N, MapX<UK, UV>>
{
}

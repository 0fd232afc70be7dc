//! The RocksDB backend's baseline: every op done with the `rocksdb` crate directly on a
//! [`PlainDb`] (the backend's own column-family options), with the backend's key layout
//! (`key group | length | key | length | namespace | user key`) built in a reused buffer,
//! fixed-width integers instead of serializers, the column family looked up once, one
//! iterator for the map scans (refreshed before each, as the backend's states keep
//! theirs), and no state API in between: what a hand-written job on RocksDB would do.

use anyhow::{Context, Result};
use flowstate_core::keygroup::key_group_for_serialized_key;
use flowstate_rocksdb::PlainDb;
use rocksdb::{ReadOptions, WriteBatch};

use super::{Data, Kind, LIST_VALUES, MAP_KEYS};

/// The max parallelism the backend under test runs with (one key-group byte).
pub(super) const MAX_PARALLELISM: u32 = 128;

/// Appends `key group | 8 | key | 0` (the empty namespace) for `key`; map user keys
/// follow as 8 little-endian bytes, as values are stored.
fn entry_key(out: &mut Vec<u8>, key: u64) {
    out.clear();
    let bytes = key.to_be_bytes();
    out.push(key_group_for_serialized_key(&bytes, MAX_PARALLELISM) as u8);
    out.push(8);
    out.extend_from_slice(&bytes);
    out.push(0);
}

/// Appends one length-prefixed list element.
fn put_element(out: &mut Vec<u8>, v: u64) {
    out.push(8);
    out.extend_from_slice(&v.to_le_bytes());
}

/// Elements of a stored list (length-prefixed, back to back).
fn elements(stored: &[u8]) -> impl Iterator<Item = u64> + '_ {
    stored.chunks_exact(9).map(|c| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&c[1..]);
        u64::from_le_bytes(b)
    })
}

/// A little-endian integer from up to 8 bytes.
fn read_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(b)
}

/// A plain database set up as the op's backend is.
pub(super) struct RawDb {
    db: PlainDb,
    list: Vec<u8>,
}

impl RawDb {
    /// Opens a database and writes what `setup` puts into the backend for `kind`.
    pub(super) fn new(db: PlainDb, d: &Data, kind: Kind) -> Result<Self> {
        let mut list = Vec::new();
        for v in &d.list {
            put_element(&mut list, *v);
        }
        debug_assert_eq!(list.len(), LIST_VALUES * 9);
        let raw = RawDb { db, list };
        let cf = raw.db.cf().context("column family")?;
        let (db, w) = (raw.db.db(), raw.db.write_options());
        let mut key = Vec::new();
        for (i, k) in d.setup_keys.iter().enumerate() {
            entry_key(&mut key, *k);
            match kind {
                Kind::Value => db.put_cf_opt(&cf, &key, d.value(i).to_le_bytes(), w)?,
                Kind::List => {
                    let mut e = Vec::new();
                    put_element(&mut e, d.value(i));
                    db.merge_cf_opt(&cf, &key, e, w)?;
                }
                Kind::Map => {
                    let len = key.len();
                    for (mk, mv) in d.map_keys.iter().zip(&d.map_values) {
                        key.truncate(len);
                        key.extend_from_slice(&mk.to_le_bytes());
                        db.put_cf_opt(&cf, &key, mv.to_le_bytes(), w)?;
                    }
                }
            }
        }
        drop(cf);
        Ok(raw)
    }

    /// RocksDB's figures for the database (see [`PlainDb::properties`]).
    pub(super) fn properties(&self) -> Vec<(&'static str, u64)> {
        self.db.properties()
    }

    /// Compacts the column family into one sorted run, as the backend's
    /// `compact_state` does (see `setup::compacts`).
    pub(super) fn compact(&self) -> Result<()> {
        let cf = self.db.cf().context("column family")?;
        self.db
            .db()
            .compact_range_cf(&cf, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// Runs op `name` `n` times from invocation `start`, as `run_op` does; returns the
    /// ops counted and the fold of what was read, or `None` for an op without a
    /// baseline.
    pub(super) fn run(
        &self,
        d: &Data,
        name: &str,
        start: usize,
        n: usize,
    ) -> Result<Option<(u64, u64)>> {
        let cf = self.db.cf().context("column family")?;
        let (db, w) = (self.db.db(), self.db.write_options());
        let read = ReadOptions::default();
        let mut ops = 0u64;
        let mut sink = 0u64;
        let mut key = Vec::with_capacity(32);
        let mut element = Vec::with_capacity(9);
        // The map scans' one iterator, refreshed before each scan, as the backend's
        // states keep theirs (building one per scan was about half of a scan). Built
        // on the first scan only: an iterator pins a version, which write ops should
        // not carry.
        let mut scan_iter = None;
        for i in start..start + n {
            let (k, new_k, v) = (d.setup_key(i), d.new_key(i), d.value(i));
            let (mk, mv) = (d.map_keys[i % MAP_KEYS], d.map_values[i % MAP_KEYS]);
            let user_key = |key: &mut Vec<u8>, base: u64| {
                entry_key(key, base);
                key.extend_from_slice(&mk.to_le_bytes());
            };
            match name {
                "valueUpdate" | "valueAdd" => {
                    entry_key(&mut key, if name == "valueAdd" { new_k } else { k });
                    db.put_cf_opt(&cf, &key, v.to_le_bytes(), w)?;
                }
                "valueGet" => {
                    entry_key(&mut key, k);
                    sink ^= db
                        .get_pinned_cf_opt(&cf, &key, &read)?
                        .map_or(0, |b| read_u64(&b));
                }
                "listUpdate" => {
                    entry_key(&mut key, k);
                    db.put_cf_opt(&cf, &key, &self.list, w)?;
                }
                "listAdd" | "listAppend" => {
                    entry_key(&mut key, if name == "listAdd" { new_k } else { k });
                    element.clear();
                    put_element(&mut element, v);
                    db.merge_cf_opt(&cf, &key, &element, w)?;
                }
                "listGet" => {
                    entry_key(&mut key, k);
                    sink ^= db
                        .get_pinned_cf_opt(&cf, &key, &read)?
                        .map_or(0, |b| elements(&b).count() as u64);
                }
                "listGetAndIterate" => {
                    entry_key(&mut key, k);
                    if let Some(b) = db.get_pinned_cf_opt(&cf, &key, &read)? {
                        sink ^= elements(&b).fold(0, |a, x| a ^ x);
                    }
                }
                "listAddAll" => {
                    entry_key(&mut key, k);
                    db.merge_cf_opt(&cf, &key, &self.list, w)?;
                }
                "mapUpdate" | "mapAdd" => {
                    let (base, value) = if name == "mapAdd" {
                        (new_k, mv)
                    } else {
                        (k, mv + 1.0)
                    };
                    user_key(&mut key, base);
                    db.put_cf_opt(&cf, &key, value.to_le_bytes(), w)?;
                }
                "mapGet" => {
                    user_key(&mut key, k);
                    sink ^= db
                        .get_pinned_cf_opt(&cf, &key, &read)?
                        .map_or(0, |b| read_u64(&b));
                }
                "mapContains" => {
                    user_key(&mut key, k);
                    sink ^= u64::from(db.get_pinned_cf_opt(&cf, &key, &read)?.is_some());
                }
                "mapRemove" => {
                    user_key(&mut key, k);
                    db.delete_cf_opt(&cf, &key, w)?;
                }
                "mapPutAll" => {
                    entry_key(&mut key, k);
                    let len = key.len();
                    let mut batch = WriteBatch::default();
                    for (mk, mv) in d.map_keys.iter().zip(&d.map_values) {
                        key.truncate(len);
                        key.extend_from_slice(&mk.to_le_bytes());
                        batch.put_cf(&cf, &key, mv.to_le_bytes());
                    }
                    db.write_opt(batch, w)?;
                }
                "mapIsEmpty" | "mapKeys" | "mapValues" | "mapEntries" | "mapIterator" => {
                    entry_key(&mut key, k);
                    // The key's entries share the column family's extractor prefix
                    // (`key group | key | namespace`): a prefix seek, as the backend's.
                    let scan = scan_iter.get_or_insert_with(|| {
                        let mut ro = ReadOptions::default();
                        ro.set_prefix_same_as_start(true);
                        db.raw_iterator_cf_opt(&cf, ro)
                    });
                    scan.refresh()?;
                    scan.seek(&key);
                    let mut empty = true;
                    while scan.valid() {
                        let (Some(uk), Some(uv)) = (scan.key(), scan.value()) else {
                            break;
                        };
                        let Some(user_key) = uk.strip_prefix(key.as_slice()) else {
                            break;
                        };
                        empty = false;
                        if name == "mapIsEmpty" {
                            break;
                        }
                        sink ^= super::ops::fold_entry(name, read_u64(user_key), read_u64(uv));
                        ops += 1;
                        scan.next();
                    }
                    scan.status()?;
                    if name == "mapIsEmpty" {
                        sink ^= u64::from(empty);
                    } else {
                        continue;
                    }
                }
                _ => return Ok(None),
            }
            ops += 1;
        }
        Ok(Some((ops, sink)))
    }
}

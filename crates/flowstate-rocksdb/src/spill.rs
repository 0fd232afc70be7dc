//! A spill set: an ordered set of byte strings kept in a scratch RocksDB instance of
//! its own, for indexes that must not live in memory and need no snapshot (they are
//! rebuilt from state on restore), such as the time-ordered index of a keyed
//! operator's timers (Flink keeps its RocksDB timers in a column family for the same
//! reason: millions of timers, a few of them needed at a time).
//!
//! The instance lives in a fresh directory under the backend's working directory and
//! is removed when the set is dropped (the directory is the set's own: created fresh
//! with a unique name). Writes skip the WAL: a crashed run's set is scratch, cleaned
//! with the rest of the working directory at the next start.

use rocksdb::{DB, Direction, IteratorMode, WriteBatch};

use flowstate_core::StateResult;

use crate::db::{DbHolder, DirGuard, fresh_dir, rerr, write_options};
use crate::options::RocksDbOptions;

/// An ordered set of byte strings on local disk (see the module docs).
pub struct SpillSet {
    holder: DbHolder,
}

impl SpillSet {
    /// A new empty set in a fresh directory under `options.local_dir`.
    pub fn open(options: &RocksDbOptions) -> StateResult<Self> {
        let dir = fresh_dir(&options.local_dir, "spill")?;
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        o.set_max_background_jobs(1);
        o.set_keep_log_file_num(1);
        o.set_write_buffer_size(options.write_buffer_bytes.max(64 << 10));
        let db = DB::open(&o, &dir).map_err(rerr("open spill set"))?;
        Ok(SpillSet {
            holder: DbHolder {
                db,
                _dir: DirGuard(dir),
            },
        })
    }

    fn db(&self) -> &DB {
        &self.holder.db
    }

    /// Adds `keys`.
    pub fn insert_all<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) -> StateResult<()> {
        let mut batch = WriteBatch::default();
        for k in keys {
            batch.put(k, []);
        }
        self.db()
            .write_opt(batch, &write_options())
            .map_err(rerr("spill insert"))
    }

    /// Removes `keys` (absent ones are ignored).
    pub fn remove_all<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) -> StateResult<()> {
        let mut batch = WriteBatch::default();
        for k in keys {
            batch.delete(k);
        }
        self.db()
            .write_opt(batch, &write_options())
            .map_err(rerr("spill remove"))
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: &[u8]) -> StateResult<bool> {
        Ok(self
            .db()
            .get_pinned(key)
            .map_err(rerr("spill get"))?
            .is_some())
    }

    /// The first `limit` keys that start with `prefix`, in byte order.
    pub fn scan(&self, prefix: &[u8], limit: usize) -> StateResult<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let iter = self
            .db()
            .iterator(IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item.map_err(rerr("spill scan"))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(k.into_vec());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keeps_keys_in_order_and_removes_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let options = RocksDbOptions::new(tmp.path());
        let set = SpillSet::open(&options).unwrap();
        let keys: Vec<&[u8]> = vec![b"a3", b"a1", b"b1", b"a2"];
        set.insert_all(keys.iter().copied()).unwrap();
        assert!(set.contains(b"a2").unwrap());
        assert!(!set.contains(b"a4").unwrap());
        assert_eq!(
            set.scan(b"a", 2).unwrap(),
            vec![b"a1".to_vec(), b"a2".to_vec()]
        );
        assert_eq!(set.scan(b"a", 10).unwrap().len(), 3);
        set.remove_all([&b"a1"[..], b"zz"]).unwrap();
        assert_eq!(set.scan(b"", 10).unwrap().len(), 3);
        drop(set);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}

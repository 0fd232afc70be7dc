//! A bare RocksDB database with the backend's options, for measuring the backend against
//! RocksDB itself (`flowstate-bench state --backend rocksdb` runs every op on it too).

use flowstate_core::StateResult;
use flowstate_core::state::StateKind;
use rocksdb::{BoundColumnFamily, WriteOptions};
use std::sync::Arc;

use crate::db::{DbHolder, DbSettings, DirGuard, fresh_dir, write_options};
use crate::options::RocksDbOptions;

/// A database in a fresh directory under `options.local_dir` (removed on drop) with one
/// column family named `name`, opened with exactly the options a backend gives the
/// column family of a state of that kind: the same block cache, bloom filter, memtables,
/// prefix extractor (map states only), compression and list-append merge operator.
pub struct PlainDb {
    holder: DbHolder,
    name: String,
    write_options: WriteOptions,
}

impl PlainDb {
    /// Opens the database for a state of `kind`, its keys laid out for
    /// `max_parallelism` key groups (the width of the key-group prefix a map state's
    /// prefix extractor expects).
    pub fn open(
        options: &RocksDbOptions,
        name: &str,
        kind: StateKind,
        max_parallelism: u32,
    ) -> StateResult<PlainDb> {
        let settings = DbSettings::new(options.clone(), max_parallelism);
        let dir = fresh_dir(&options.local_dir, "plain")?;
        let db = settings.open(&dir, &[(name.to_string(), kind)])?;
        Ok(PlainDb {
            holder: DbHolder {
                db,
                _dir: DirGuard(dir),
            },
            name: name.to_string(),
            write_options: write_options(),
        })
    }

    /// The database.
    pub fn db(&self) -> &rocksdb::DB {
        &self.holder.db
    }

    /// The column family, looked up once by the caller and reused.
    pub fn cf(&self) -> Option<Arc<BoundColumnFamily<'_>>> {
        self.holder.db.cf_handle(&self.name)
    }

    /// RocksDB's figures for the database and its column family, named as a backend's
    /// [`properties`](flowstate_core::backend::KeyedStateBackend::properties).
    pub fn properties(&self) -> Vec<(&'static str, u64)> {
        crate::properties::read(self.db(), self.cf())
    }

    /// The backend's write options (no WAL).
    pub fn write_options(&self) -> &WriteOptions {
        &self.write_options
    }
}

//! Opening RocksDB instances with Flowstate's options, and their local directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flowstate_core::{StateError, StateResult};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, DataBlockIndexType,
    LogLevel, MergeOperands, Options, WriteBufferManager, WriteOptions,
};

use crate::options::{Compression, RocksDbOptions};
use crate::ttl_filter::{TtlFilterFactory, TtlFilters};

/// Maps a RocksDB error to a typed backend error.
pub(crate) fn rerr(op: &'static str) -> impl Fn(rocksdb::Error) -> StateError {
    move |e| StateError::Backend {
        op,
        message: e.into_string(),
    }
}

/// Maps a local I/O error to a typed backend error naming the path.
pub(crate) fn ioerr<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl Fn(std::io::Error) -> StateError + 'a {
    move |e| StateError::Backend {
        op,
        message: format!("{}: {e}", path.display()),
    }
}

/// Removes a directory when dropped (best effort: it is local scratch space).
pub(crate) struct DirGuard(pub(crate) PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An open database and its directory; the directory is removed after the database
/// closes (fields drop in order).
pub(crate) struct DbHolder {
    pub(crate) db: DB,
    pub(crate) _dir: DirGuard,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A fresh, unique identifier for directories and shared file names.
pub(crate) fn unique_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let random = RandomState::new().hash_one((
        nanos,
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed),
    ));
    format!("{:08x}{:016x}", std::process::id(), random)
}

/// A new empty directory under `base`.
pub(crate) fn fresh_dir(base: &Path, kind: &str) -> StateResult<PathBuf> {
    let dir = base.join(format!("{kind}-{}", unique_id()));
    std::fs::create_dir_all(&dir).map_err(ioerr("create directory", &dir))?;
    Ok(dir)
}

/// Append merge for list state: stored lists are concatenations of length-prefixed
/// elements, so appending is concatenation and needs no read.
fn list_append(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let len = existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    if let Some(e) = existing {
        out.extend_from_slice(e);
    }
    for op in operands.iter() {
        out.extend_from_slice(op);
    }
    Some(out)
}

/// Shared cache, memory bound and options of one backend.
pub(crate) struct DbSettings {
    pub(crate) options: RocksDbOptions,
    cache: Cache,
    write_buffers: Option<WriteBufferManager>,
    /// TTL compaction-filter specs by column family.
    pub(crate) ttl_filters: TtlFilters,
}

impl DbSettings {
    pub(crate) fn new(options: RocksDbOptions) -> Self {
        let cache_bytes = options
            .memory_bound_bytes
            .unwrap_or(options.block_cache_bytes)
            .max(1 << 20);
        let cache = Cache::new_lru_cache(cache_bytes);
        // Memtables are charged to the cache, so cache + memtables stay within the bound.
        let write_buffers = options.memory_bound_bytes.map(|bound| {
            WriteBufferManager::new_write_buffer_manager_with_cache(bound / 2, false, cache.clone())
        });
        DbSettings {
            options,
            cache,
            write_buffers,
            ttl_filters: TtlFilters::default(),
        }
    }

    pub(crate) fn db_options(&self) -> Options {
        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        o.set_max_background_jobs(2);
        o.set_log_level(LogLevel::Warn);
        o.set_keep_log_file_num(2);
        o.set_max_open_files(-1);
        if let Some(w) = &self.write_buffers {
            o.set_write_buffer_manager(w);
        }
        o
    }

    /// Options of column family `name` (its TTL filter factory is bound to the name).
    pub(crate) fn cf_options(&self, name: &str) -> Options {
        let mut block = BlockBasedOptions::default();
        block.set_block_cache(&self.cache);
        block.set_block_size(self.options.block_bytes.max(1 << 10));
        if self.options.bloom_bits_per_key > 0.0 {
            block.set_bloom_filter(self.options.bloom_bits_per_key, false);
        }
        if self.options.memory_bound_bytes.is_some() {
            block.set_cache_index_and_filter_blocks(true);
        }
        // A hash index in each data block: a point look-up finds its key in the block
        // without the binary search over restart points (6% of a RocksDB job's time).
        block.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
        block.set_data_block_hash_ratio(0.75);
        let mut o = Options::default();
        o.set_block_based_table_factory(&block);
        // A whole-key bloom filter on each memtable: a get of a key the memtable does
        // not hold (most gets, once state outgrows it) skips the skip-list search, the
        // largest single cost of a RocksDB job (15%). Sized at 10% of the memtable.
        o.set_memtable_whole_key_filtering(true);
        o.set_memtable_prefix_bloom_ratio(0.1);
        o.set_write_buffer_size(self.options.write_buffer_bytes.max(64 << 10));
        o.set_max_write_buffer_number(self.options.max_write_buffers.max(2));
        o.set_level_compaction_dynamic_level_bytes(true);
        o.set_compression_type(match self.options.compression {
            Compression::None => DBCompressionType::None,
            Compression::Snappy => DBCompressionType::Snappy,
            Compression::Lz4 => DBCompressionType::Lz4,
            Compression::Zstd => DBCompressionType::Zstd,
        });
        o.set_merge_operator_associative("flowstate.list-append", list_append);
        o.set_compaction_filter_factory(TtlFilterFactory::new(name, self.ttl_filters.clone()));
        o
    }

    fn descriptors(&self, cfs: &[String]) -> Vec<ColumnFamilyDescriptor> {
        cfs.iter()
            .filter(|n| n.as_str() != "default")
            .map(|n| ColumnFamilyDescriptor::new(n.clone(), self.cf_options(n)))
            .collect()
    }

    /// Opens (creating if needed) a database at `path` with column families `cfs`.
    pub(crate) fn open(&self, path: &Path, cfs: &[String]) -> StateResult<DB> {
        DB::open_cf_descriptors(&self.db_options(), path, self.descriptors(cfs))
            .map_err(rerr("open database"))
    }

    /// Opens a checkpoint directory read-only with every column family it has.
    pub(crate) fn open_read_only(&self, path: &Path) -> StateResult<DB> {
        let cfs = DB::list_cf(&Options::default(), path).map_err(rerr("list column families"))?;
        DB::open_cf_descriptors_read_only(&self.db_options(), path, self.descriptors(&cfs), false)
            .map_err(rerr("open checkpoint read-only"))
    }
}

/// Writes skip the WAL: durability comes from checkpoints, as in Flink.
pub(crate) fn write_options() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.disable_wal(true);
    w
}

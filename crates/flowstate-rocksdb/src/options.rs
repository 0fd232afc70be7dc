//! Configuration of the RocksDB backend, with defaults tuned for point look-ups.

use std::path::PathBuf;

use flowstate_core::snapshot::ClaimMode;

/// How checkpoints ([`flowstate_core::backend::KeyedStateBackend::snapshot`]) are written.
/// Savepoints are always canonical.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotMode {
    /// The canonical key-group stream every backend reads.
    Canonical,
    /// RocksDB's own files, all uploaded every time.
    NativeFull,
    /// RocksDB's own files; only files not uploaded by an earlier completed checkpoint.
    #[default]
    Incremental,
}

/// Block compression of SST files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// Snappy.
    Snappy,
    /// LZ4: fast, the default.
    #[default]
    Lz4,
    /// Zstandard: smaller, slower.
    Zstd,
}

/// Options of [`crate::RocksDbKeyedStateBackend`].
///
/// ```
/// let opts = flowstate_rocksdb::RocksDbOptions::new("/tmp/flowstate-rocksdb")
///     .with_block_cache_bytes(8 << 20)
///     .with_write_buffer_bytes(4 << 20)
///     .with_max_write_buffers(1);
/// assert_eq!(opts.block_cache_bytes, 8 << 20);
/// // RocksDB needs a second memtable to take writes while one is flushed.
/// assert_eq!(opts.max_write_buffers, 2);
/// ```
#[derive(Clone, Debug)]
pub struct RocksDbOptions {
    /// Local working directory; each backend instance uses a fresh subdirectory and
    /// removes it when dropped.
    pub local_dir: PathBuf,
    /// Checkpoint format.
    pub snapshot_mode: SnapshotMode,
    /// Ownership of restored files.
    pub claim_mode: ClaimMode,
    /// Storage prefix of shared (incremental) files.
    pub shared_prefix: String,
    /// LRU block cache shared by the column families of one backend (256 MiB by
    /// default: about what Flink gives RocksDB per slot from a 1 GB task manager's
    /// managed memory, 307 MiB for cache and memtables together).
    pub block_cache_bytes: usize,
    /// Uncompressed size of an SST data block (16 KiB by default; RocksDB's and
    /// Flink's default is 4 KiB). A point look-up finds its key inside a block through
    /// the block's hash index, so bigger blocks cost a look-up little, while the
    /// table's index and the cache hold a quarter as many entries: measured
    /// 2026-11-30, the RocksDB `value` job +3–5%, `mapGet` +38% with the larger cache.
    pub block_bytes: usize,
    /// Memtable size per column family (8 MiB by default; Flink takes RocksDB's 64
    /// MiB). Larger memtables stall write-heavy state ops less (RocksDB stops writes for
    /// two full memtables and slows them for 20 level-0 files), but each insert then
    /// searches a deeper skip list: measured 2026-12-06, 16 MiB took `mapAdd` from
    /// 420–743 k to 836–985 k ops/s, yet the `map` job from 0.95 / 1.20 M to 0.69 /
    /// 0.86 M records/s (p1 / p2, medians of three, alternating); 64 MiB lost on list
    /// appends too. The job is the workload that counts, so 8 MiB stays.
    pub write_buffer_bytes: usize,
    /// Memtables per column family.
    pub max_write_buffers: i32,
    /// Level-0 files that start a compaction into the next level (10 by default;
    /// RocksDB's and Flink's default is 4). Every level-0 file spans the whole key
    /// range (keys lead with their key group), so each such compaction rewrites the
    /// whole level below it: waiting for more files rewrites it less often, at the
    /// cost of more files for a point look-up to pass (each stopped by its bloom
    /// filter, mostly). Measured 2026-12-07 (`flowstate-bench job`, 4 against 10
    /// alternating, five rounds of three runs): the `map` job used 26% / 12% less CPU
    /// over all threads and ran 6% faster (p1 / p2); the `value` job used 9–13% less
    /// CPU, and its records/s were 0.95 and 0.98 of trigger 4's at p1 (two scripts)
    /// and 0.99 at p2; Nexmark's RocksDB queries stayed within the noise. Writes still
    /// slow down at RocksDB's 20 level-0 files and stop at 36.
    pub level0_compaction_trigger: i32,
    /// SST compression.
    pub compression: Compression,
    /// Bloom filter bits per key (0 disables; Flink's default is off, ours is 10).
    pub bloom_bits_per_key: f64,
    /// A bound on block cache plus memtables for the whole backend: memtables are
    /// charged to a cache of this size (half may be memtables). Overrides
    /// `block_cache_bytes` when set.
    pub memory_bound_bytes: Option<usize>,
    /// Timers a keyed operator keeps in memory, the earliest ones; the others wait in
    /// a [`crate::SpillSet`] on local disk (at least 2).
    pub timer_window: usize,
    /// Puts, deletes and list appends each state keeps in memory before writing them to
    /// RocksDB as one batch in key order (bytes of keys and values, plus 64 per entry);
    /// 0 writes each at once. A sorted batch goes into the memtable several times faster
    /// than single puts. This memory is not part of `memory_bound_bytes`.
    pub deferred_write_bytes: usize,
    /// Bytes of entries each state keeps after reading them from RocksDB, to answer
    /// its next gets of them from memory; 0 keeps none (see `cache.rs`). The bound
    /// counts the whole hash table, which grows by doubling, 65 bytes a slot: the
    /// default, 128 MiB, holds up to 917,504 entries of a `u64` key and value in a
    /// 65 MiB table (a 256 MiB bound would double that). An entry past the bound first
    /// evicts a half to three quarters of the others. This memory is not part of
    /// `memory_bound_bytes`.
    pub entry_cache_bytes: usize,
}

impl RocksDbOptions {
    /// Defaults with the given working directory.
    pub fn new(local_dir: impl Into<PathBuf>) -> Self {
        RocksDbOptions {
            local_dir: local_dir.into(),
            snapshot_mode: SnapshotMode::default(),
            claim_mode: ClaimMode::default(),
            shared_prefix: "shared".into(),
            block_cache_bytes: 256 << 20,
            block_bytes: 16 << 10,
            write_buffer_bytes: 8 << 20,
            max_write_buffers: 2,
            level0_compaction_trigger: 10,
            compression: Compression::default(),
            bloom_bits_per_key: 10.0,
            memory_bound_bytes: None,
            timer_window: 65_536,
            deferred_write_bytes: 4 << 20,
            entry_cache_bytes: 128 << 20,
        }
    }
    /// Sets the checkpoint format.
    pub fn with_snapshot_mode(mut self, mode: SnapshotMode) -> Self {
        self.snapshot_mode = mode;
        self
    }
    /// Sets the restore mode.
    pub fn with_claim_mode(mut self, mode: ClaimMode) -> Self {
        self.claim_mode = mode;
        self
    }
    /// Sets the block cache size.
    pub fn with_block_cache_bytes(mut self, bytes: usize) -> Self {
        self.block_cache_bytes = bytes;
        self
    }
    /// Sets the SST data block size.
    pub fn with_block_bytes(mut self, bytes: usize) -> Self {
        self.block_bytes = bytes;
        self
    }
    /// Sets the memtable size per column family.
    pub fn with_write_buffer_bytes(mut self, bytes: usize) -> Self {
        self.write_buffer_bytes = bytes;
        self
    }
    /// Sets how many memtables each column family may have (at least 2).
    pub fn with_max_write_buffers(mut self, count: i32) -> Self {
        self.max_write_buffers = count.max(2);
        self
    }
    /// Sets how many level-0 files start a compaction (at least 1).
    pub fn with_level0_compaction_trigger(mut self, files: i32) -> Self {
        self.level0_compaction_trigger = files.max(1);
        self
    }
    /// Sets SST compression.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }
    /// Sets how many timers a keyed operator keeps in memory.
    pub fn with_timer_window(mut self, timers: usize) -> Self {
        self.timer_window = timers.max(2);
        self
    }
    /// Sets how many bytes of writes each state defers.
    pub fn with_deferred_write_bytes(mut self, bytes: usize) -> Self {
        self.deferred_write_bytes = bytes;
        self
    }
    /// Sets how many bytes of read entries each state keeps in memory (0: none).
    pub fn with_entry_cache_bytes(mut self, bytes: usize) -> Self {
        self.entry_cache_bytes = bytes;
        self
    }
    /// Bounds block cache plus memtables.
    pub fn with_memory_bound_bytes(mut self, bytes: usize) -> Self {
        self.memory_bound_bytes = Some(bytes);
        self
    }
}

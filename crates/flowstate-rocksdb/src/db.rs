//! Opening RocksDB instances with Flowstate's options, and their local directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flowstate_core::state::StateKind;
use flowstate_core::{StateError, StateResult};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, DataBlockIndexType,
    LogLevel, MergeOperands, Options, ReadOptions, SliceTransform, WriteBufferManager,
    WriteOptions,
};

use crate::keys::{entry_prefix_len, prefix_len};
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

/// Append merge for list state: stored lists are concatenations of items
/// (`flowstate_core::rocksdb_list`), so appending is concatenation and needs no read.
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

/// The entry prefix of a key with `KG` key-group bytes (the whole key when malformed;
/// RocksDB asks only for keys [`in_domain`] accepts). Generic over the width because
/// RocksDB takes plain function pointers, which cannot capture it.
fn entry_prefix<const KG: usize>(key: &[u8]) -> &[u8] {
    &key[..entry_prefix_len(key, KG).unwrap_or(key.len())]
}

/// Whether a key with `KG` key-group bytes has an entry prefix.
fn in_domain<const KG: usize>(key: &[u8]) -> bool {
    entry_prefix_len(key, KG).is_some()
}

/// Map states' prefix extractor: `(key group, key, namespace)`, the prefix a map
/// state's range scan shares (see [`prefix_read_options`]). Its name says the
/// key-group width, so a database reopened with the other width ignores the files'
/// prefix filters instead of misreading them.
fn entry_prefix_extractor(key_group_bytes: usize) -> SliceTransform {
    if key_group_bytes == 1 {
        SliceTransform::create(
            "flowstate.entry-prefix.1",
            entry_prefix::<1>,
            Some(in_domain::<1>),
        )
    } else {
        SliceTransform::create(
            "flowstate.entry-prefix.2",
            entry_prefix::<2>,
            Some(in_domain::<2>),
        )
    }
}

/// Read options for an iterator over keys of more than one entry prefix (a whole
/// column family, a key-group range): total-order seeks, which a column family with a
/// prefix extractor needs for a correct order across prefixes.
pub(crate) fn total_order_read_options() -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_total_order_seek(true);
    ro
}

/// Read options for an iterator over the entries of one entry prefix (one map's user
/// keys): prefix seeks, which skip every file whose prefix filter lacks the prefix, and
/// stop at the prefix's end.
pub(crate) fn prefix_read_options() -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_prefix_same_as_start(true);
    ro
}

/// Shared cache, memory bound and options of one backend.
pub(crate) struct DbSettings {
    pub(crate) options: RocksDbOptions,
    /// Bytes of the key-group prefix of every key (see [`prefix_len`]).
    key_group_bytes: usize,
    cache: Cache,
    write_buffers: Option<WriteBufferManager>,
    /// TTL compaction-filter specs by column family.
    pub(crate) ttl_filters: TtlFilters,
}

impl DbSettings {
    /// Settings for a backend of `max_parallelism` key groups.
    pub(crate) fn new(options: RocksDbOptions, max_parallelism: u32) -> Self {
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
            key_group_bytes: prefix_len(max_parallelism),
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

    /// Options of column family `name` holding a state of `kind` (its TTL filter
    /// factory is bound to the name). Only map states get the prefix extractor: they
    /// alone scan by entry prefix. For value and list states the entry prefix is the
    /// whole key, so an extractor would add every key to the memtable bloom a second
    /// time and cost a call through the C API per write, for no scan.
    pub(crate) fn cf_options(&self, name: &str, kind: StateKind) -> Options {
        self.column_family_options(name, kind == StateKind::Map)
    }

    /// Options of column family `name`, with the entry-prefix extractor if
    /// `prefix_scans`.
    fn column_family_options(&self, name: &str, prefix_scans: bool) -> Options {
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
        // Prefix filters (memtable and files) for map scans; point look-ups keep using
        // the whole-key filters.
        if prefix_scans {
            o.set_prefix_extractor(entry_prefix_extractor(self.key_group_bytes));
        }
        o.set_write_buffer_size(self.options.write_buffer_bytes.max(64 << 10));
        o.set_max_write_buffer_number(self.options.max_write_buffers.max(2));
        o.set_level_compaction_dynamic_level_bytes(true);
        o.set_level_zero_file_num_compaction_trigger(self.options.level0_compaction_trigger.max(1));
        o.set_compression_type(match self.options.compression {
            Compression::None => DBCompressionType::None,
            Compression::Snappy => DBCompressionType::Snappy,
            Compression::Lz4 => DBCompressionType::Lz4,
            Compression::Zstd => DBCompressionType::Zstd,
        });
        o.set_merge_operator_associative("flowstate.list-append", list_append);
        o.set_compaction_filter_factory(TtlFilterFactory::new(name, self.ttl_filters.clone()));
        with_insert_hints(o, self.key_group_bytes)
    }

    /// Opens (creating if needed) a database at `path` with column families `cfs`, each
    /// named with its state's kind.
    pub(crate) fn open(&self, path: &Path, cfs: &[(String, StateKind)]) -> StateResult<DB> {
        let descriptors = cfs
            .iter()
            .filter(|(n, _)| n.as_str() != "default")
            .map(|(n, kind)| ColumnFamilyDescriptor::new(n.clone(), self.cf_options(n, *kind)));
        DB::open_cf_descriptors(&self.db_options(), path, descriptors)
            .map_err(rerr("open database"))
    }

    /// Opens a checkpoint directory read-only with every column family it has. Its
    /// readers scan in total order (whole column families, key-group ranges), so no
    /// column family needs the prefix extractor.
    pub(crate) fn open_read_only(&self, path: &Path) -> StateResult<DB> {
        let cfs = DB::list_cf(&Options::default(), path).map_err(rerr("list column families"))?;
        let descriptors = cfs
            .into_iter()
            .filter(|n| n.as_str() != "default")
            .map(|n| {
                let options = self.column_family_options(&n, false);
                ColumnFamilyDescriptor::new(n, options)
            });
        DB::open_cf_descriptors_read_only(&self.db_options(), path, descriptors, false)
            .map_err(rerr("open checkpoint read-only"))
    }
}

/// `o` with memtable insert hints, one per key group: RocksDB keeps each key group's
/// last insert position in the skip list and starts the next insert of that group
/// there. The deferred writes (`deferred.rs`) come as batches of tens of thousands of
/// entries in key order into a memtable of some 100,000, so consecutive inserts land a
/// few nodes apart, and the search from the top of the list is skipped. Measured
/// 2026-12-06 (old and new alternating, three rounds, medians): the RocksDB `map` job
/// 779 k to 1.02 M records/s at p1 and 885 k to 1.05 M at p2, the `value` job 521 k
/// to 587 k and 711 k to 768 k. Writes out of order (single puts) find no hint near
/// and search as before.
///
/// RocksDB's C API has no setter for this option; its options-string parser sets it
/// on a copy of `o` that keeps every other option (the shared objects, such as the
/// block cache and the merge operator, are reference-counted in RocksDB). Should the
/// parser refuse it, `o` is kept as it is: the hints only save work.
fn with_insert_hints(mut o: Options, key_group_bytes: usize) -> Options {
    let spec = format!(
        "memtable_insert_with_hint_prefix_extractor=rocksdb.CappedPrefix.{key_group_bytes}"
    );
    o.get_options_from_string(spec).unwrap_or(o)
}

/// Writes skip the WAL: durability comes from checkpoints, as in Flink.
pub(crate) fn write_options() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.disable_wal(true);
    w
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use flowstate_core::format::put_vbytes;
    use flowstate_core::keygroup::key_group_for_serialized_key;
    use rocksdb::statistics::Ticker;

    use super::*;
    use crate::keys::{ALL_KEYS_END, key_group_start, key_prefix};

    /// `key group | key | namespace` of key `k` (the entry prefix).
    fn entry_prefix(k: u32, max_p: u32) -> Vec<u8> {
        let key = k.to_be_bytes();
        let mut p = key_prefix(key_group_for_serialized_key(&key, max_p), max_p, &key).unwrap();
        put_vbytes(&mut p, b"ns").unwrap();
        p
    }

    /// The text of the OPTIONS file RocksDB wrote in database directory `path`.
    fn options_file_text(path: &Path) -> String {
        let options_file = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("OPTIONS-")
            })
            .unwrap();
        std::fs::read_to_string(options_file).unwrap()
    }

    /// With the entry-prefix extractor (a map state's column family), over entries
    /// spread across flushed files and the memtable: a prefix scan finds exactly its
    /// prefix's entries, a total-order scan (whole column family or one key group)
    /// every key in order, and seeks of prefixes a file lacks are answered by its
    /// prefix filter.
    #[test]
    fn prefix_and_total_order_scans_match_a_model() {
        for max_p in [128u32, 32768] {
            let dir = tempfile::tempdir().unwrap();
            let settings = DbSettings::new(RocksDbOptions::new(dir.path()), max_p);
            let mut db_options = settings.db_options();
            db_options.enable_statistics();
            let path = dir.path().join("db");
            let map_state = settings.cf_options("s", StateKind::Map);
            let db = DB::open_cf_descriptors(
                &db_options,
                &path,
                [ColumnFamilyDescriptor::new("s", map_state)],
            )
            .unwrap();
            let cf = db.cf_handle("s").unwrap();
            let mut model = BTreeMap::new();
            // Key k's entries: user keys r in four rounds, only in the rounds r with
            // (k + r) % 3 != 0; a file per round, the last round left in the memtable.
            for round in 0u8..4 {
                for k in 0..60u32 {
                    if (k + u32::from(round)) % 3 == 0 {
                        continue;
                    }
                    let mut key = entry_prefix(k, max_p);
                    key.push(round);
                    db.put_cf_opt(&cf, &key, [round], &write_options()).unwrap();
                    model.insert(key, vec![round]);
                }
                if round < 3 {
                    db.flush_cf(&cf).unwrap();
                }
            }
            let scan = |ro: ReadOptions, from: &[u8]| {
                let mut it = db.raw_iterator_cf_opt(&cf, ro);
                it.seek(from);
                let mut out = Vec::new();
                while let (Some(k), Some(v)) = (it.key(), it.value()) {
                    out.push((k.to_vec(), v.to_vec()));
                    it.next();
                }
                it.status().unwrap();
                out
            };
            let all: Vec<_> = model.clone().into_iter().collect();
            assert_eq!(scan(total_order_read_options(), &[]), all);
            for kg in [0, 3, max_p - 1] {
                let (start, end) = (key_group_start(kg, max_p), key_group_start(kg + 1, max_p));
                let end = if kg + 1 < max_p {
                    end
                } else {
                    ALL_KEYS_END.to_vec()
                };
                let mut ro = total_order_read_options();
                ro.set_iterate_upper_bound(end.clone());
                let want: Vec<_> = model
                    .range(start.clone()..end)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(scan(ro, &start), want, "key group {kg}");
            }
            // Keys 60.. were never written: their seeks find nothing, by the filters.
            for k in 0..90u32 {
                let prefix = entry_prefix(k, max_p);
                let want: Vec<_> = model
                    .iter()
                    .filter(|(key, _)| key.starts_with(&prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(scan(prefix_read_options(), &prefix), want, "key {k}");
            }
            let filtered = db_options.get_ticker_count(Ticker::NonLastLevelSeekFiltered)
                + db_options.get_ticker_count(Ticker::LastLevelSeekFiltered)
                + db_options.get_ticker_count(Ticker::BloomFilterPrefixUseful);
            assert!(filtered > 0, "no seek was answered by a prefix filter");
            let name = format!("flowstate.entry-prefix.{}", prefix_len(max_p));
            let text = options_file_text(&path);
            assert!(text.contains(&name), "{name} not in the OPTIONS file");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Batches of puts, deletes and list appends, some in key order (as the
        /// deferred writes come, inserted by the per-key-group hints) and some not,
        /// across key groups, into a list state's column family with the insert hints
        /// and the smallest memtable (64 KiB): every scan matches a model, list appends
        /// are concatenated by the merge operator the options copy kept, and the
        /// OPTIONS file names the hint extractor.
        #[test]
        fn hinted_inserts_match_a_model(
            batches in proptest::collection::vec(
                (
                    proptest::bool::ANY,
                    proptest::collection::vec((0u8..3, 0u16..400, 0u8..3, proptest::num::u8::ANY), 1..300),
                ),
                1..12,
            )
        ) {
            let max_p = 128;
            let dir = tempfile::tempdir().unwrap();
            let settings = DbSettings::new(
                RocksDbOptions::new(dir.path()).with_write_buffer_bytes(64 << 10),
                max_p,
            );
            let path = dir.path().join("db");
            let db = settings.open(&path, &[("l".to_string(), StateKind::List)]).unwrap();
            let cf = db.cf_handle("l").unwrap();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for (sorted, writes) in batches {
                let mut writes: Vec<(Vec<u8>, u8, u8)> = writes
                    .into_iter()
                    .map(|(kg, k, op, v)| {
                        let mut key = vec![kg * 40];
                        key.extend_from_slice(&k.to_be_bytes());
                        (key, op, v)
                    })
                    .collect();
                if sorted {
                    writes.sort_by(|a, b| a.0.cmp(&b.0));
                }
                let mut batch = rocksdb::WriteBatch::default();
                for (key, op, v) in writes {
                    match op {
                        0 => {
                            batch.put_cf(&cf, &key, [v]);
                            model.insert(key, vec![v]);
                        }
                        1 => {
                            batch.delete_cf(&cf, &key);
                            model.remove(&key);
                        }
                        _ => {
                            batch.merge_cf(&cf, &key, [v]);
                            model.entry(key).or_default().push(v);
                        }
                    }
                }
                db.write_opt(batch, &write_options()).unwrap();
                let got: Vec<(Vec<u8>, Vec<u8>)> = db
                    .iterator_cf(&cf, rocksdb::IteratorMode::Start)
                    .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                    .collect();
                let want: Vec<(Vec<u8>, Vec<u8>)> =
                    model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                proptest::prop_assert_eq!(got, want);
            }
            let text = options_file_text(&path);
            let hint = format!(
                "memtable_insert_with_hint_prefix_extractor=rocksdb.CappedPrefix.{}",
                prefix_len(max_p)
            );
            proptest::prop_assert!(text.contains(&hint), "{} not in the OPTIONS file", hint);
        }
    }
}

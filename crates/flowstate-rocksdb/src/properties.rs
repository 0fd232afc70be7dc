//! RocksDB's own figures for metrics and benchmarks, read from a database and the
//! column families of its states: sizes, and whether background work (flushes,
//! compactions) is pending or running.

use rocksdb::{AsColumnFamilyRef, DB};

/// Figures summed over the default column family and the states'.
const SUMMED: [(&str, &str); 8] = [
    ("memtable_bytes", "rocksdb.cur-size-all-mem-tables"),
    // Each level-0 file is searched by every read and seek its filters do not rule
    // out (they overlap); the deeper levels' files do not.
    ("level0_files", "rocksdb.num-files-at-level0"),
    (
        "pending_compaction_bytes",
        "rocksdb.estimate-pending-compaction-bytes",
    ),
    ("live_sst_bytes", "rocksdb.live-sst-files-size"),
    ("estimated_keys", "rocksdb.estimate-num-keys"),
    // RocksDB's 0/1 flags per column family: summed, the number of column families
    // that need a compaction, or a flush of a full memtable.
    ("compaction_pending", "rocksdb.compaction-pending"),
    ("flush_pending", "rocksdb.mem-table-flush-pending"),
    // One per column family, plus each older version something still holds: an
    // iterator (a state's scans keep one until a snapshot, `scan.rs`), a running
    // compaction. Memtables and files of such versions stay in memory and on disk.
    ("live_versions", "rocksdb.num-live-versions"),
];

/// The database's own counts (the same whichever column family asks): read once.
const RUNNING: [(&str, &str); 2] = [
    ("running_compactions", "rocksdb.num-running-compactions"),
    ("running_flushes", "rocksdb.num-running-flushes"),
];

/// The block cache's use: the cache may be shared by every column family, so the
/// largest figure is taken rather than a sum.
const CACHE: (&str, &str) = ("block_cache_bytes", "rocksdb.block-cache-usage");

/// The names of [`read`]'s figures that are background work: zero when RocksDB has no
/// flush or compaction running or waiting to run.
pub(crate) const BACKGROUND_WORK: [&str; 4] = [
    "compaction_pending",
    "flush_pending",
    "running_compactions",
    "running_flushes",
];

/// Reads the figures of `db` over its default column family and `cfs`, as
/// `(name, value)` (a figure RocksDB does not give counts 0).
pub(crate) fn read<C: AsColumnFamilyRef>(
    db: &DB,
    cfs: impl IntoIterator<Item = C>,
) -> Vec<(&'static str, u64)> {
    let default = |p: &str| db.property_int_value(p).ok().flatten().unwrap_or(0);
    let mut sums: Vec<u64> = SUMMED.iter().map(|(_, p)| default(p)).collect();
    let mut cache = default(CACHE.1);
    for cf in cfs {
        let of_cf = |p: &str| db.property_int_value_cf(&cf, p).ok().flatten().unwrap_or(0);
        for (sum, (_, p)) in sums.iter_mut().zip(SUMMED) {
            *sum = sum.saturating_add(of_cf(p));
        }
        cache = cache.max(of_cf(CACHE.1));
    }
    let mut out: Vec<(&'static str, u64)> = SUMMED.iter().map(|(n, _)| *n).zip(sums).collect();
    out.push((CACHE.0, cache));
    out.extend(RUNNING.iter().map(|(n, p)| (*n, default(p))));
    out
}

/// Whether `figures` (from `read`) show no background work at all.
pub fn background_idle(figures: &[(&str, u64)]) -> bool {
    figures
        .iter()
        .all(|(n, v)| *v == 0 || !BACKGROUND_WORK.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PlainDb, RocksDbOptions};
    use flowstate_core::state::StateKind;

    #[test]
    fn idle_only_when_no_background_figure_counts() {
        assert!(background_idle(&[]));
        assert!(background_idle(&[
            ("live_sst_bytes", 7),
            ("flush_pending", 0)
        ]));
        for name in BACKGROUND_WORK {
            assert!(!background_idle(&[("live_sst_bytes", 0), (name, 1)]));
        }
    }

    /// A flushed database shows its files and keys, every background figure, and
    /// settles to no background work.
    #[test]
    fn a_flushed_database_shows_its_figures_and_settles() {
        let dir = tempfile::tempdir().unwrap();
        let plain =
            PlainDb::open(&RocksDbOptions::new(dir.path()), "s", StateKind::Value, 128).unwrap();
        let cf = plain.cf().unwrap();
        for i in 0u64..20_000 {
            plain
                .db()
                .put_cf_opt(&cf, i.to_be_bytes(), [7u8; 32], plain.write_options())
                .unwrap();
        }
        plain.db().flush_cf(&cf).unwrap();
        drop(cf);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let figures = loop {
            let f = plain.properties();
            if background_idle(&f) || std::time::Instant::now() > deadline {
                break f;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let get = |n: &str| figures.iter().find(|(m, _)| *m == n).map(|(_, v)| *v);
        assert!(background_idle(&figures), "{figures:?}");
        for name in BACKGROUND_WORK {
            assert_eq!(get(name), Some(0), "{name}");
        }
        assert!(get("live_sst_bytes").unwrap() > 0, "{figures:?}");
        // One flush made at most one level-0 file (four trigger a compaction).
        assert!(get("level0_files").is_some_and(|n| n <= 1), "{figures:?}");
        assert!(get("estimated_keys").unwrap() >= 10_000, "{figures:?}");
    }
}

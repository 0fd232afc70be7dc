//! `flowstate-bench`: measured figures for Flowstate's state layer.
//!
//! `state` reproduces apache/flink-benchmarks' keyed state benchmarks (see `state/`)
//! and prints each op's ops/s next to Flink 2.3's figure on a machine like ours.
//!
//! `snapshot` measures a checkpoint's costs on a `ValueState<u64>` of N keys
//! (`snapshot.rs`): its synchronous and asynchronous parts, an incremental checkpoint,
//! a savepoint, restores (also rescaled) and reading every key back. `--json` prints
//! one JSON object per figure.
//!
//! `migrate` measures schema migration at restore (`migrate.rs`): values/s of a
//! restore that migrates every value of an evolved type, beside one that reads as is.
//!
//! `job` does the Flink anchor's `JobBench` work (`job.rs`): a keyed counter or map
//! job over splitmix64 keys with a checkpoint every second, in records/s.
//!
//! `nexmark` runs Nexmark queries on both backends (`nexmark.rs`): events/s per core
//! beside Flink's published per-core figures.
//!
//! ```text
//! cargo run --release -p flowstate-bench -- state --backend heap
//! cargo run --release -p flowstate-bench -- snapshot --backend heap --keys 1000000
//! ```

mod job;
mod migrate;
mod nexmark;
mod query;
mod snapshot;
mod state;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use flowstate_core::backend::KeyedBackendConfig;
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::serializer::SerdeSerializer;
use flowstate_heap::HeapBackendFactory;
use flowstate_rocksdb::{RocksDbOptions, SnapshotMode};

#[derive(Parser)]
#[command(about = "Flowstate benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Backend {
    Heap,
    Rocksdb,
    RocksdbIncremental,
}

#[derive(Subcommand)]
enum Command {
    /// Queryable state: job throughput without and with look-ups, their latency,
    /// and batch look-ups in keys/s.
    Query {
        #[arg(long, value_enum, default_value = "heap")]
        backend: Backend,
        /// Events of each timed job.
        #[arg(long, default_value_t = 4_000_000)]
        events: u64,
        /// Distinct keys.
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        /// Point look-ups per second during the loaded runs.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Runs of each mode (no queries, live, committed), in turn.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Keys per batch look-up.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Workers of the job (with fewer workers than cores, the HTTP side has a core
        /// of its own).
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Flink's Value/List/MapStateBenchmark ops: ops/s per op.
    State {
        #[arg(long, value_enum, default_value = "heap")]
        backend: Backend,
        /// Seconds per timed iteration.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Timed iterations per op (the median is reported).
        #[arg(long, default_value_t = 5)]
        iterations: usize,
        /// Warm-up runs of `--seconds` each, per subject, before the timed ones (the
        /// Flink anchor's `MICRO_WARMUP`, 2 by default), so that both sides are timed
        /// after the same warm-up.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Only these ops (Flink names, e.g. valueGet); all when empty.
        #[arg(long = "op")]
        ops: Vec<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Also run every op on a state with TTL (1 h, defaults) and report the ratio
        /// to the run without.
        #[arg(long)]
        ttl: bool,
        /// Also run every op as the keyed operator runs a batch of records (each key's
        /// group computed once, the next 32 invocations' keys prefetched first) and
        /// compare it with the same baseline.
        #[arg(long)]
        prefetch: bool,
        /// Also run every op with the state's `u64`s (values, list elements, map user
        /// keys) stored by `FixedIntegerSerializer`: 8 bytes each, as Flink's
        /// `LongSerializer` and the raw baseline write them, instead of the default
        /// serializer's varints (9 or 10 bytes for these random full-range values).
        #[arg(long)]
        fixed_integers: bool,
        /// Skip the baselines (bare maps for heap, the `rocksdb` crate for RocksDB) that
        /// otherwise run in turn with each op.
        #[arg(long)]
        no_baselines: bool,
        /// RocksDB: bytes of read entries each state keeps in memory (0: none; the
        /// backend's default, 128 MiB, when not given).
        #[arg(long)]
        entry_cache_bytes: Option<usize>,
        /// RocksDB: memtable bytes per column family (the backend's default when not
        /// given).
        #[arg(long)]
        write_buffer_bytes: Option<usize>,
        /// RocksDB: memtables per column family (the backend's default when not given).
        #[arg(long)]
        max_write_buffers: Option<i32>,
        /// RocksDB: level-0 files that start a compaction (the backend's default when
        /// not given; RocksDB's and Flink's is 4).
        #[arg(long)]
        level0_compaction_trigger: Option<i32>,
    },
    /// The Flink anchor's JobBench: a keyed value or map job, checkpoint every second.
    Job {
        #[arg(long, value_enum, default_value = "heap")]
        backend: Backend,
        /// `value` (a counter per key) or `map` (an entry per event).
        #[arg(long, default_value = "value", value_parser = ["value", "map"])]
        variant: String,
        /// Workers.
        #[arg(long, default_value_t = 1)]
        parallelism: usize,
        /// Events (the sequence 0..N).
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        /// Distinct keys.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Milliseconds between checkpoints.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// RocksDB: bytes of read entries each state keeps in memory (0: none; the
        /// backend's default, 128 MiB, when not given).
        #[arg(long)]
        entry_cache_bytes: Option<usize>,
        /// RocksDB: level-0 files that start a compaction (the backend's default when
        /// not given; RocksDB's and Flink's is 4).
        #[arg(long)]
        level0_compaction_trigger: Option<i32>,
    },
    /// Nexmark queries: events/s per core on each backend, beside Flink's published
    /// per-core figures.
    Nexmark {
        /// Queries to run (q0, q1, q2, q4, q5, q7, q8, q11); all when none is given.
        #[arg(long = "query")]
        queries: Vec<flowstate_nexmark::Query>,
        /// Backends to run each query on; heap and rocksdb when none is given.
        #[arg(long = "backend", value_enum)]
        backends: Vec<Backend>,
        /// Events of each run.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Workers (the per-core figure divides by this).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Runs per figure (the median is reported).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Schema migration at restore: values/s migrating an evolved type vs as is.
    Migrate {
        #[arg(long, value_enum, default_value = "heap")]
        backend: Backend,
        /// Number of values (one key each).
        #[arg(long, default_value_t = 1_000_000)]
        values: u64,
        /// Timed restores per figure (the median is reported).
        #[arg(long, default_value_t = 3)]
        iterations: usize,
    },
    /// Checkpoint, savepoint, restore and read-back figures for a `ValueState<u64>`.
    Snapshot {
        #[arg(long, value_enum, default_value = "heap")]
        backend: Backend,
        /// Number of keys.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Timed repetitions per figure (the median is reported).
        #[arg(long, default_value_t = 5)]
        iterations: usize,
        /// Max parallelism (number of key groups).
        #[arg(long, default_value_t = 128)]
        max_parallelism: u32,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// A keyed backend's configuration for `u64` keys in `range` of `max_p` key groups.
pub(crate) fn config(max_p: u32, range: KeyGroupRange) -> KeyedBackendConfig<u64> {
    KeyedBackendConfig {
        max_parallelism: max_p,
        key_group_range: range,
        key_serializer: SerdeSerializer::<u64>::arc(),
    }
}

/// A benchmark job's configuration: `workers` workers on the heap backend, or on
/// RocksDB under `dir/rocksdb` taking `rocksdb` snapshots, checkpointing into `dir/ck`
/// every `interval`.
pub(crate) fn job_config(
    dir: &std::path::Path,
    rocksdb: Option<SnapshotMode>,
    workers: usize,
    interval: Duration,
) -> Result<flowstate_runtime::JobConfig> {
    job_config_with(
        dir,
        rocksdb.map(|m| rocksdb_options(dir, m)),
        workers,
        interval,
    )
}

/// The RocksDB backend's default options for a benchmark job under `dir`.
pub(crate) fn rocksdb_options(dir: &std::path::Path, mode: SnapshotMode) -> RocksDbOptions {
    RocksDbOptions::new(dir.join("rocksdb")).with_snapshot_mode(mode)
}

/// [`job_config`] on RocksDB with these `rocksdb` options (heap when `None`).
pub(crate) fn job_config_with(
    dir: &std::path::Path,
    rocksdb: Option<RocksDbOptions>,
    workers: usize,
    interval: Duration,
) -> Result<flowstate_runtime::JobConfig> {
    let backend = match rocksdb {
        Some(options) => flowstate_runtime::BackendChoice::RocksDb(options),
        None => flowstate_runtime::BackendChoice::Heap,
    };
    Ok(flowstate_runtime::JobConfig::default()
        .workers(workers)
        .backend(backend)
        .checkpointing(flowstate_runtime::CheckpointConfig::local(
            dir.join("ck"),
            interval,
        )?))
}

/// The median of run figures (the upper one of an even count; 0 for none).
pub(crate) fn median_of(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Query {
            backend,
            events,
            keys,
            rate,
            runs,
            batch,
            workers,
        } => {
            if keys == 0 || runs == 0 || batch == 0 || workers == 0 {
                bail!("--keys, --runs, --batch and --workers must be positive");
            }
            query::QueryBench {
                rocksdb: backend == Backend::Rocksdb,
                events,
                keys,
                rate,
                runs,
                batch,
                workers,
            }
            .run()
        }
        Command::State {
            backend,
            seconds,
            iterations,
            warmup,
            ops,
            json,
            ttl,
            prefetch,
            fixed_integers,
            no_baselines,
            entry_cache_bytes,
            write_buffer_bytes,
            max_write_buffers,
            level0_compaction_trigger,
        } => {
            if !seconds.is_finite() || seconds <= 0.0 || iterations == 0 {
                bail!("--seconds and --iterations must be positive");
            }
            if let Some(bad) = ops.iter().find(|o| !state::OPS.iter().any(|(_, n)| n == o)) {
                bail!(
                    "unknown op `{bad}`; ops are: {}",
                    state::OPS
                        .iter()
                        .map(|(_, n)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let data = state::Data::new();
            let local = tempfile::tempdir()?;
            if !json {
                state::report::print_header(backend, warmup, iterations, seconds);
            }
            let mut rocksdb = RocksDbOptions::new(local.path());
            if let Some(bytes) = entry_cache_bytes {
                rocksdb = rocksdb.with_entry_cache_bytes(bytes);
            }
            if let Some(bytes) = write_buffer_bytes {
                rocksdb = rocksdb.with_write_buffer_bytes(bytes);
            }
            if let Some(count) = max_write_buffers {
                rocksdb = rocksdb.with_max_write_buffers(count);
            }
            if let Some(files) = level0_compaction_trigger {
                rocksdb = rocksdb.with_level0_compaction_trigger(files);
            }
            let baseline = match (no_baselines, backend) {
                (true, _) => state::Baseline::Off,
                (false, Backend::Heap) => state::Baseline::Bare,
                (false, _) => state::Baseline::Raw(&rocksdb),
            };
            let plan = state::Plan {
                seconds,
                iterations,
                warmup,
                only: &ops,
                ttl,
                prefetch,
                fixed: fixed_integers,
            };
            let results = match backend {
                Backend::Heap => state::state_bench(&HeapBackendFactory, &data, &plan, &baseline)?,
                _ => state::state_bench(&rocksdb, &data, &plan, &baseline)?,
            };
            state::report::print(&results, backend, iterations, json);
            Ok(())
        }
        Command::Job {
            backend,
            variant,
            parallelism,
            events,
            keys,
            runs,
            interval_ms,
            entry_cache_bytes,
            level0_compaction_trigger,
        } => {
            if backend == Backend::RocksdbIncremental {
                bail!("job runs RocksDB incremental already: use --backend rocksdb");
            }
            job::JobBench {
                rocksdb: backend == Backend::Rocksdb,
                map: variant == "map",
                parallelism,
                events,
                keys,
                runs,
                interval_ms,
                entry_cache_bytes,
                level0_compaction_trigger,
            }
            .run()
        }
        Command::Nexmark {
            queries,
            backends,
            events,
            workers,
            runs,
            json,
        } => {
            let queries = if queries.is_empty() {
                flowstate_nexmark::Query::ALL.to_vec()
            } else {
                queries
            };
            let backends = if backends.is_empty() {
                vec![Backend::Heap, Backend::Rocksdb]
            } else {
                backends
            };
            if backends.contains(&Backend::RocksdbIncremental) {
                bail!("nexmark runs on heap or rocksdb");
            }
            nexmark::NexmarkBench {
                queries,
                rocksdb: backends.iter().map(|b| *b == Backend::Rocksdb).collect(),
                events,
                workers,
                runs,
                json,
            }
            .run()
        }
        Command::Migrate {
            backend,
            values,
            iterations,
        } => {
            if values == 0 || iterations == 0 {
                bail!("--values and --iterations must be positive");
            }
            let local = tempfile::tempdir()?;
            let rocks = |mode| RocksDbOptions::new(local.path()).with_snapshot_mode(mode);
            let (migrate, as_is) = match backend {
                Backend::Heap => migrate::migrate_bench(&HeapBackendFactory, values, iterations),
                Backend::Rocksdb => {
                    migrate::migrate_bench(&rocks(SnapshotMode::NativeFull), values, iterations)
                }
                Backend::RocksdbIncremental => {
                    migrate::migrate_bench(&rocks(SnapshotMode::Incremental), values, iterations)
                }
            }
            .context("migrate benchmark")?;
            let name = format!("{backend:?}").to_lowercase();
            println!(
                "{}",
                serde_json::json!({
                    "suite": "migrate", "backend": name, "values": values, "iterations": iterations,
                    "migrate_values_per_sec": migrate, "as_is_values_per_sec": as_is,
                    "ratio": migrate / as_is,
                })
            );
            Ok(())
        }
        Command::Snapshot {
            backend,
            keys,
            iterations,
            max_parallelism,
            json,
        } => {
            if keys == 0 || iterations == 0 {
                bail!("--keys and --iterations must be positive");
            }
            let local = tempfile::tempdir()?;
            let rocks = |mode| RocksDbOptions::new(local.path()).with_snapshot_mode(mode);
            let figs = match backend {
                Backend::Heap => {
                    snapshot::snapshot_bench(&HeapBackendFactory, keys, iterations, max_parallelism)
                }
                Backend::Rocksdb => snapshot::snapshot_bench(
                    &rocks(SnapshotMode::NativeFull),
                    keys,
                    iterations,
                    max_parallelism,
                ),
                Backend::RocksdbIncremental => snapshot::snapshot_bench(
                    &rocks(SnapshotMode::Incremental),
                    keys,
                    iterations,
                    max_parallelism,
                ),
            }
            .context("snapshot benchmark")?;
            let name = format!("{backend:?}").to_lowercase();
            snapshot::print(&figs, &name, keys, iterations, json);
            Ok(())
        }
    }
}

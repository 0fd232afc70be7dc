//! `flowstate-bench`: measured figures for Flowstate's state layer.
//!
//! `state` reproduces apache/flink-benchmarks' keyed state benchmarks (see `state.rs`)
//! and prints each op's ops/s next to Flink 2.3's figure on a machine like ours.
//!
//! `snapshot` fills N keys of a `ValueState<u64>`, then measures a checkpoint's
//! synchronous part and asynchronous write, writes made while a snapshot is in flight,
//! a second checkpoint after 1% of keys changed (incremental on `rocksdb-incremental`),
//! a canonical savepoint, restores (from the checkpoint, from the savepoint, and
//! rescaled to two instances) and reading every key back. Figures are medians over
//! `--iterations` runs with min and max; inputs are deterministic. `--json` prints one
//! JSON object per figure.
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
mod state;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use flowstate_core::backend::{KeyedBackendConfig, KeyedBackendFactory, KeyedStateBackend};
use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::keygroup::{KeyGroupRange, key_group_range_for_operator};
use flowstate_core::serializer::SerdeSerializer;
use flowstate_core::snapshot::{AsyncKeyedSnapshot, KeyedStateHandle};
use flowstate_core::state::VoidNamespace;
use flowstate_core::storage::CheckpointStorage;
use flowstate_heap::HeapBackendFactory;
use flowstate_rocksdb::{RocksDbOptions, SnapshotMode};
use flowstate_storage::ObjectCheckpointStorage;

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
    /// Checkpoint, savepoint, restore and read-back figures for a ValueState<u64>.
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

const STATE: &str = "value";

struct Figure {
    op: &'static str,
    samples: Vec<f64>,
    unit: &'static str,
}

impl Figure {
    fn stats(&self) -> (f64, f64, f64) {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let median = if s.is_empty() { 0.0 } else { s[s.len() / 2] };
        (
            median,
            *s.first().unwrap_or(&0.0),
            *s.last().unwrap_or(&0.0),
        )
    }
}

struct Figures(Vec<Figure>);

impl Figures {
    fn add(&mut self, op: &'static str, unit: &'static str, v: f64) {
        match self.0.iter_mut().find(|f| f.op == op) {
            Some(f) => f.samples.push(v),
            None => self.0.push(Figure {
                op,
                samples: vec![v],
                unit,
            }),
        }
    }
    fn ms(&mut self, op: &'static str, d: Duration) {
        self.add(op, "ms", d.as_secs_f64() * 1e3);
    }
    fn bytes(&mut self, op: &'static str, b: u64) {
        self.add(op, "bytes", b as f64);
    }
}

fn config(max_p: u32, range: KeyGroupRange) -> KeyedBackendConfig<u64> {
    KeyedBackendConfig {
        max_parallelism: max_p,
        key_group_range: range,
        key_serializer: SerdeSerializer::<u64>::arc(),
    }
}

/// Deterministic value of key `k` in generation `g` (a splitmix-style scramble).
fn value_of(k: u64, g: u64) -> u64 {
    let mut z = k.wrapping_add(g.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^ (z >> 27)
}

fn fill<B: KeyedStateBackend<u64>>(
    b: &B,
    keys: u64,
    generation: u64,
    step: u64,
) -> Result<Duration> {
    let s = b.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new(STATE))?;
    let t = Instant::now();
    let mut k = 0;
    while k < keys {
        b.set_current_key(k)?;
        s.update(value_of(k, generation))?;
        k += step;
    }
    Ok(t.elapsed())
}

/// Rewrites every key with the value it holds after the 1% update.
fn rewrite<B: KeyedStateBackend<u64>>(b: &B, keys: u64) -> Result<Duration> {
    let s = b.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new(STATE))?;
    let t = Instant::now();
    for k in 0..keys {
        b.set_current_key(k)?;
        s.update(value_of(k, u64::from(k % 100 == 0)))?;
    }
    Ok(t.elapsed())
}

/// Reads every key back; one key in 100 was rewritten in generation 1.
fn read_back<B: KeyedStateBackend<u64>>(b: &B, keys: u64) -> Result<Duration> {
    let s = b.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new(STATE))?;
    let t = Instant::now();
    for k in 0..keys {
        b.set_current_key(k)?;
        let expected = value_of(k, u64::from(k % 100 == 0));
        if s.value()? != Some(expected) {
            bail!("key {k}: wrong value after restore");
        }
    }
    Ok(t.elapsed())
}

/// Restores the two instances of parallelism 2; checks every key is restored once.
fn restore_rescaled<F: KeyedBackendFactory>(
    f: &F,
    storage: &dyn CheckpointStorage,
    h: &[KeyedStateHandle],
    max_p: u32,
    keys: u64,
) -> Result<Duration> {
    let t = Instant::now();
    let mut backends = Vec::new();
    for i in 0..2 {
        let range = key_group_range_for_operator(max_p, 2, i)?;
        let r = f.restore(config(max_p, range), storage, h)?;
        r.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new(STATE))?;
        backends.push(r);
    }
    let elapsed = t.elapsed();
    let total: usize = backends
        .iter()
        .map(|b| b.keys(STATE, &VoidNamespace).map(|k| k.len()))
        .sum::<Result<usize, _>>()?;
    if total as u64 != keys {
        bail!("rescaled restore holds {total} keys, expected {keys}");
    }
    Ok(elapsed)
}

fn snapshot_bench<F: KeyedBackendFactory>(
    f: &F,
    keys: u64,
    iterations: usize,
    max_p: u32,
) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let storage = ObjectCheckpointStorage::local(dir.path())?;
    let all = KeyGroupRange::all(max_p)?;
    let mut figs = Figures(Vec::new());
    for it in 0..iterations {
        eprintln!(
            "[snapshot] iteration {}/{iterations}: filling {keys} keys",
            it + 1
        );
        let b = f.create(config(max_p, all))?;
        figs.ms("fill_all_keys", fill(&b, keys, 0, 1)?);

        let t = Instant::now();
        let snap = b.snapshot(1)?;
        figs.ms("checkpoint1_sync_part", t.elapsed());
        let t = Instant::now();
        let h1 = snap.write(&storage, &format!("it{it}/chk-1"))?;
        figs.ms("checkpoint1_async_part", t.elapsed());
        figs.bytes("checkpoint1_uploaded_bytes", h1.uploaded_bytes);
        b.notify_checkpoint_complete(1)?;

        // Second checkpoint after 1% of keys changed.
        fill(&b, keys, 1, 100)?;
        let t = Instant::now();
        let snap = b.snapshot(3)?;
        figs.ms("checkpoint2_1pct_sync_part", t.elapsed());
        let t = Instant::now();
        let h2 = snap.write(&storage, &format!("it{it}/chk-2"))?;
        figs.ms("checkpoint2_1pct_async_part", t.elapsed());
        figs.bytes("checkpoint2_1pct_uploaded_bytes", h2.uploaded_bytes);
        figs.bytes("checkpoint2_full_size_bytes", h2.full_size());
        b.notify_checkpoint_complete(3)?;

        let t = Instant::now();
        let sp = b.savepoint()?;
        figs.ms("savepoint_sync_part", t.elapsed());
        let t = Instant::now();
        let hs = sp.write(&storage, &format!("it{it}/savepoint"))?;
        figs.ms("savepoint_async_part", t.elapsed());
        figs.bytes("savepoint_bytes", hs.size);
        // Writes with no snapshot in flight, then while one is held (on the heap
        // backend every key group is copied once). Rewrites the same values.
        figs.ms("update_all_keys_no_snapshot", rewrite(&b, keys)?);
        let held = b.snapshot(2)?;
        figs.ms("update_all_keys_snapshot_held", rewrite(&b, keys)?);
        drop(held);
        b.notify_checkpoint_aborted(2)?;

        drop(b);

        for (op, h) in [
            ("restore_from_checkpoint1", &h1),
            ("restore_from_checkpoint2", &h2),
            ("restore_from_savepoint", &hs),
        ] {
            let t = Instant::now();
            let r = f.restore(config(max_p, all), &storage, std::slice::from_ref(h))?;
            r.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new(STATE))?;
            figs.ms(op, t.elapsed());
            if op == "restore_from_checkpoint2" {
                figs.ms("read_back_all_keys", read_back(&r, keys)?);
            }
        }
        figs.ms(
            "restore_checkpoint_rescaled_to_p2",
            restore_rescaled(f, &storage, std::slice::from_ref(&h2), max_p, keys)?,
        );
        figs.ms(
            "restore_savepoint_rescaled_to_p2",
            restore_rescaled(f, &storage, std::slice::from_ref(&hs), max_p, keys)?,
        );
    }
    Ok(figs)
}

fn print(figs: &Figures, backend: &str, keys: u64, iterations: usize, json: bool) {
    if json {
        for f in &figs.0 {
            let (median, min, max) = f.stats();
            let unit_key = if f.unit == "bytes" { "bytes" } else { "millis" };
            println!(
                "{}",
                serde_json::json!({
                    "suite": "snapshot", "backend": backend, "state": "ValueState<u64>", "keys": keys,
                    "op": f.op, unit_key: median, "iterations": iterations, "min": min, "max": max,
                })
            );
        }
        return;
    }
    println!(
        "snapshot benchmark: backend {backend}, {keys} keys, ValueState<u64>, {iterations} iterations"
    );
    println!(
        "{:<36} {:>14} {:>14} {:>14}",
        "figure", "median", "min", "max"
    );
    for f in &figs.0 {
        let (median, min, max) = f.stats();
        let fmt = |v: f64| {
            if f.unit == "bytes" {
                format!("{v:.0} B")
            } else {
                format!("{v:.3} ms")
            }
        };
        println!(
            "{:<36} {:>14} {:>14} {:>14}",
            f.op,
            fmt(median),
            fmt(min),
            fmt(max)
        );
    }
}

/// Flink 2.3.0 on a 2-core machine like ours (median ops/s, `shared/BENCHMARKS.md`).
fn flink_figure(backend: Backend, op: &str) -> Option<f64> {
    let (heap, rocks) = match op {
        "valueGet" => (2.68e6, 261e3),
        "valueUpdate" => (2.09e6, 224e3),
        "valueAdd" => (3.16e6, 173e3),
        "listGet" => (2.29e6, 128e3),
        "listGetAndIterate" => (1.97e6, 94e3),
        "listAppend" => (1.90e6, 313e3),
        "mapGet" => (1.85e6, 48e3),
        "mapContains" => (1.48e6, 53e3),
        "mapIterator" => (8.26e6, 256e3),
        "mapUpdate" => (607e3, 91e3),
        "mapAdd" => (2.87e6, 96e3),
        _ => return None,
    };
    Some(if backend == Backend::Heap {
        heap
    } else {
        rocks
    })
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

fn print_state(results: &[state::OpResult], backend: Backend, iterations: usize, json: bool) {
    let name = format!("{backend:?}").to_lowercase();
    for r in results {
        let mut s = r.samples.clone();
        s.sort_by(f64::total_cmp);
        let median = median_of(&s);
        let (min, max) = (
            s.first().copied().unwrap_or(0.0),
            s.last().copied().unwrap_or(0.0),
        );
        // TTL rows compare with the same op measured without TTL in this run;
        // the others with Flink and with the plain op's baseline.
        let plain = results
            .iter()
            .find(|o| o.variant == state::Variant::default() && o.op == r.op && o.state == r.state);
        let (reference, label) = if r.variant.ttl {
            (plain.map(|o| median_of(&o.samples)), "no TTL")
        } else {
            (flink_figure(backend, r.op), "Flink 2.3")
        };
        let state::Variant {
            ttl,
            prefetch,
            fixed,
        } = r.variant;
        let baseline = plain
            .filter(|_| !ttl)
            .and_then(|o| o.baseline.as_deref())
            .map(median_of);
        let state = match (ttl, prefetch, fixed) {
            (true, _, _) => format!("{}+TTL", r.state),
            (false, true, _) => format!("{}+prefetch", r.state),
            (false, false, true) => format!("{}+fixed", r.state),
            (false, false, false) => r.state.to_string(),
        };
        if json {
            let mut obj = serde_json::json!({
                "suite": "state", "backend": name, "state": r.state, "op": r.op, "ops_per_sec": median,
                "iterations": iterations, "min": min, "max": max, "ttl": ttl, "prefetch": prefetch,
                "fixed_integers": fixed,
            });
            if ttl {
                obj["no_ttl_ops_per_sec"] = serde_json::json!(reference);
                obj["ratio_vs_no_ttl"] = serde_json::json!(reference.map(|f| median / f));
            } else {
                obj["flink_ops_per_sec"] = serde_json::json!(reference);
                obj["ratio_vs_flink"] = serde_json::json!(reference.map(|f| median / f));
                obj["baseline_ops_per_sec"] = serde_json::json!(baseline);
                obj["ratio_vs_baseline"] = serde_json::json!(baseline.map(|b| median / b));
            }
            println!("{obj}");
        } else {
            let ratio =
                reference.map_or_else(|| "-".to_string(), |f| format!("{:.2}x", median / f));
            let reference =
                reference.map_or_else(|| "-".to_string(), |f| format!("{f:.0} ({label})"));
            let (baseline, of_baseline) = baseline.map_or_else(
                || ("-".to_string(), "-".to_string()),
                |b| (format!("{b:.0}"), format!("{:.2}x", median / b)),
            );
            println!(
                "{:<16} {:<18} {:>14.0} {:>14.0} {:>14.0} {:>22} {:>8} {:>14} {:>8}",
                state, r.op, median, min, max, reference, ratio, baseline, of_baseline
            );
        }
    }
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
                println!(
                    "state benchmark: backend {backend:?}, {warmup} + {iterations} x {seconds} s per op"
                );
                println!(
                    "{:<16} {:<18} {:>14} {:>14} {:>14} {:>22} {:>8} {:>14} {:>8}",
                    "state",
                    "op",
                    "median ops/s",
                    "min",
                    "max",
                    "reference",
                    "ratio",
                    "baseline",
                    "of it"
                );
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
            print_state(&results, backend, iterations, json);
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
                    snapshot_bench(&HeapBackendFactory, keys, iterations, max_parallelism)
                }
                Backend::Rocksdb => snapshot_bench(
                    &rocks(SnapshotMode::NativeFull),
                    keys,
                    iterations,
                    max_parallelism,
                ),
                Backend::RocksdbIncremental => snapshot_bench(
                    &rocks(SnapshotMode::Incremental),
                    keys,
                    iterations,
                    max_parallelism,
                ),
            }
            .context("snapshot benchmark")?;
            let name = format!("{backend:?}").to_lowercase();
            print(&figs, &name, keys, iterations, json);
            Ok(())
        }
    }
}

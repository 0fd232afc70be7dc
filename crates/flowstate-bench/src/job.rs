//! `flowstate-bench job`: the work of the Flink anchor's `JobBench`, exactly, so the
//! two run side by side (`scripts/bench-job.sh`): a sequence `0..n` split over the
//! workers, keyed by `splitmix64(i) mod k` (the anchor's `keyOf`), a keyed process
//! function (`value`: a `ValueState<u64>` counter read and updated per event, emitting
//! it; `map`: `MapState<u64, u64>.put(i, i)` per event, emitting `i`), a discarding
//! sink, a checkpoint every `interval` ms (heap: full snapshots; RocksDB: incremental,
//! as the anchor configures Flink). Reported as the anchor does: records/s over the
//! processing time (the first record to the last, over all workers), and over the
//! whole run (start to end, with the final checkpoint); medians of `runs` runs.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use flowstate_core::descriptor::{MapStateDescriptor, ValueStateDescriptor};
use flowstate_core::state::{MapState, ValueState};
use flowstate_rocksdb::SnapshotMode;
use flowstate_runtime::{
    BoxError, KeyedProcessFunction, OpenContext, ProcessContext, Read, RuntimeError, SplitReader,
    SplitSource, WatermarkStrategy, execute, opened,
};
use serde::{Deserialize, Serialize};

use crate::{job_config_with, median_of, rocksdb_options};

/// What to run.
pub(crate) struct JobBench {
    pub(crate) rocksdb: bool,
    pub(crate) map: bool,
    pub(crate) parallelism: usize,
    pub(crate) events: u64,
    pub(crate) keys: u64,
    pub(crate) runs: usize,
    pub(crate) interval_ms: u64,
    /// RocksDB's `entry_cache_bytes`, when not the default.
    pub(crate) entry_cache_bytes: Option<usize>,
    /// RocksDB's `level0_compaction_trigger`, when not the default.
    pub(crate) level0_compaction_trigger: Option<i32>,
}

/// The anchor's `JobBench.keyOf`: the splitmix64 finalizer of `i + golden`, mod `k`.
pub(crate) fn key_of(i: u64, k: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % k
}

/// A contiguous range of the sequence; its position is the next number.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Range {
    next: u64,
    end: u64,
}

/// `0..n`, one contiguous range per worker (Flink's `fromSequence` splits it so).
#[derive(Clone)]
struct Sequence(u64);

impl SplitSource<u64> for Sequence {
    type Split = Range;
    fn initial_splits(&mut self, index: usize, workers: usize) -> Result<Vec<Range>, BoxError> {
        let (n, w, i) = (self.0, workers as u64, index as u64);
        Ok(vec![Range {
            next: n * i / w,
            end: n * (i + 1) / w,
        }])
    }
    fn open_split(&mut self, split: Range) -> Result<Box<dyn SplitReader<u64, Range>>, BoxError> {
        Ok(Box::new(split))
    }
}

impl SplitReader<u64, Range> for Range {
    fn next(&mut self) -> Result<Read<u64>, BoxError> {
        if self.next >= self.end {
            return Ok(Read::End);
        }
        self.next += 1;
        Ok(Read::Record(self.next - 1))
    }
    fn position(&self) -> Range {
        self.clone()
    }
}

/// First and last processing instants over all workers (ns since `origin`) and the
/// records processed, as the anchor's probes.
struct Probes {
    origin: Instant,
    first: AtomicU64,
    last: AtomicU64,
    processed: AtomicU64,
}

/// Per worker: counts records, sampling the clock every 4,096 (as the anchor).
struct Tick {
    probes: Arc<Probes>,
    first: Option<u64>,
    last: u64,
    n: u64,
}

impl Tick {
    fn new(probes: Arc<Probes>) -> Self {
        Tick {
            probes,
            first: None,
            last: 0,
            n: 0,
        }
    }
    fn tick(&mut self) {
        let now = || self.probes.origin.elapsed().as_nanos() as u64;
        if self.first.is_none() {
            self.first = Some(now());
        }
        self.n += 1;
        if self.n & 4095 == 0 {
            self.last = now();
        }
    }
}

impl Drop for Tick {
    fn drop(&mut self) {
        if let Some(first) = self.first {
            let last = self.last.max(first);
            self.probes.first.fetch_min(first, Ordering::Relaxed);
            self.probes.last.fetch_max(last, Ordering::Relaxed);
            self.probes.processed.fetch_add(self.n, Ordering::Relaxed);
        }
    }
}

/// `value`: a counter per key.
struct CountFn(Option<Rc<dyn ValueState<u64>>>, Tick);

impl KeyedProcessFunction<u64, u64, u64> for CountFn {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("count"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        _: u64,
        ctx: &mut ProcessContext<'_, u64, u64>,
    ) -> Result<(), RuntimeError> {
        self.1.tick();
        let s = opened(&self.0)?;
        let next = s.value()?.map_or(1, |c| c + 1);
        s.update(next)?;
        ctx.collect(next);
        Ok(())
    }
}

/// `map`: one entry (i -> i) per event.
struct AppendFn(Option<Rc<dyn MapState<u64, u64>>>, Tick);

impl KeyedProcessFunction<u64, u64, u64> for AppendFn {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.map_state(&MapStateDescriptor::new("events"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        i: u64,
        ctx: &mut ProcessContext<'_, u64, u64>,
    ) -> Result<(), RuntimeError> {
        self.1.tick();
        let s = opened(&self.0)?;
        s.put(i, i)?;
        ctx.collect(i);
        Ok(())
    }
}

/// One run's figures.
struct Figures {
    processing_per_s: f64,
    wall_per_s: f64,
}

impl JobBench {
    fn run_once(&self) -> Result<Figures> {
        let dir = tempfile::tempdir()?;
        let rocksdb = self.rocksdb.then(|| {
            let mut options = rocksdb_options(dir.path(), SnapshotMode::Incremental);
            if let Some(bytes) = self.entry_cache_bytes {
                options = options.with_entry_cache_bytes(bytes);
            }
            if let Some(files) = self.level0_compaction_trigger {
                options = options.with_level0_compaction_trigger(files);
            }
            options
        });
        let config = job_config_with(
            dir.path(),
            rocksdb,
            self.parallelism,
            Duration::from_millis(self.interval_ms),
        )?;
        let probes = Arc::new(Probes {
            origin: Instant::now(),
            first: AtomicU64::new(u64::MAX),
            last: AtomicU64::new(0),
            processed: AtomicU64::new(0),
        });
        let (events, keys, map) = (self.events, self.keys, self.map);
        let p = probes.clone();
        let started = Instant::now();
        execute(config, move |job| {
            let keyed = job
                .source("sequence", Sequence(events), |_| 0, WatermarkStrategy::None)
                .uid("sequence")
                .key_by(move |i: &u64| key_of(*i, keys));
            let out = if map {
                keyed.process(AppendFn(None, Tick::new(p.clone())))
            } else {
                keyed.process(CountFn(None, Tick::new(p.clone())))
            };
            out.uid("keyed").sink(|_| {});
        })?;
        let wall = started.elapsed().as_secs_f64();
        let processed = probes.processed.load(Ordering::Relaxed);
        if processed != events {
            bail!("processed {processed} of {events} events");
        }
        let ns = probes
            .last
            .load(Ordering::Relaxed)
            .saturating_sub(probes.first.load(Ordering::Relaxed))
            .max(1);
        Ok(Figures {
            processing_per_s: events as f64 / (ns as f64 / 1e9),
            wall_per_s: events as f64 / wall,
        })
    }

    pub(crate) fn run(&self) -> Result<()> {
        if self.events == 0 || self.keys == 0 || self.parallelism == 0 || self.runs == 0 {
            bail!("--events, --keys, --parallelism and --runs must be positive");
        }
        let (mut processing, mut wall) = (Vec::new(), Vec::new());
        for _ in 0..self.runs {
            let f = self.run_once()?;
            processing.push(f.processing_per_s);
            wall.push(f.wall_per_s);
        }
        let (processing, wall) = (median_of(&processing), median_of(&wall));
        println!(
            "{}",
            serde_json::json!({
                "suite": "job",
                "backend": if self.rocksdb { "rocksdb" } else { "heap" },
                "variant": if self.map { "map" } else { "value" },
                "parallelism": self.parallelism, "events": self.events, "keys": self.keys,
                "checkpoint_interval_ms": self.interval_ms, "runs": self.runs,
                "records_per_s": processing,
                "records_per_s_per_core": processing / self.parallelism as f64,
                "records_per_s_wall": wall,
            })
        );
        Ok(())
    }
}

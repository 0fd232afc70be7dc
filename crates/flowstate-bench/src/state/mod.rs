//! `state`: apache/flink-benchmarks' ValueStateBenchmark, ListStateBenchmark and
//! MapStateBenchmark, with their constants: u64 keys; 500,000 set-up keys and 500,000
//! new keys, each pre-shuffled; 1,000,000 pre-generated random values; 10 map keys per
//! key with f64 values; 100-element lists for `update`/`add_all`.
//!
//! Each op runs on a freshly set-up backend: `warmup` untimed runs of `seconds` each (as
//! the Flink anchor's warm-up iterations), then `iterations` timed runs of `seconds`
//! each, in turn with its other variants (TTL, prefetched) and its baseline.
//! The ops whose lists grow with every invocation (`listAdd`, `listAppend`,
//! `listAddAll`) start each timed run from a freshly set-up state, as Flink's
//! ListStateBenchmark sets its lists up and tears them down per iteration.
//! Like JMH's per-invocation state, invocation `i` uses set-up key `i mod 500,000` of
//! the shuffled order, new key `i mod 500,000`, random value `i mod 1,000,000`. Figures
//! are ops/s (median, min, max); iteration ops (`mapKeys`, `mapValues`, `mapEntries`,
//! `mapIterator`) count one op per entry, as Flink's `@OperationsPerInvocation` does.
//!
//! Beside each op, in the same process, its baseline does the same accesses with
//! nothing of Flowstate in between: bare `hashbrown` maps for the heap backend
//! (`bare.rs`), the `rocksdb` crate on a database with the backend's options for RocksDB
//! (`raw.rs`). The op's figure over its baseline's is how close to the hardware it is.
//! The two are timed in rounds, one run of each per round, so that both see the same
//! load on a shared machine (run one after the other, the op's ratio to its baseline
//! moved by a third between runs), each timed run after every subject's RocksDB
//! background work has settled (see `measure.rs`).
//!
//! Modules: `setup.rs` sets an op's state up, `ops.rs` runs the ops, `measure.rs`
//! times them; `select.rs` picks each invocation's key; `report.rs` prints the table.

use std::cell::Cell;
use std::time::{Duration, Instant};

use anyhow::Result;
use flowstate_core::backend::{KeyedBackendFactory, KeyedStateBackend};
use flowstate_core::state::StateKind;
use flowstate_rocksdb::RocksDbOptions;

mod bare;
mod measure;
mod ops;
mod raw;
pub(crate) mod report;
mod select;
mod setup;

use measure::{BATCH, Run, Upkeep, measure, subject};
use ops::run_op;
use setup::{
    CompactState, Shape, bench_ttl, compacts, fresh, list_desc, resets, settle, wait_idle,
};

pub(crate) const SETUP_KEYS: usize = 500_000;
pub(crate) const NEW_KEYS: usize = 500_000;
pub(crate) const RANDOM_VALUES: usize = 1_000_000;
pub(crate) const MAP_KEYS: usize = 10;
pub(crate) const LIST_VALUES: usize = 100;

/// Deterministic inputs, generated once.
pub(crate) struct Data {
    setup_keys: Vec<u64>,
    new_keys: Vec<u64>,
    values: Vec<u64>,
    map_keys: Vec<u64>,
    map_values: Vec<f64>,
    list: Vec<u64>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn shuffle(&mut self, v: &mut [u64]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

impl Data {
    pub(crate) fn new() -> Self {
        Self::with_keys(SETUP_KEYS, NEW_KEYS)
    }

    /// Inputs with other key counts (the tests' small ones).
    fn with_keys(setup: usize, new: usize) -> Self {
        let mut rng = Rng(42);
        let mut setup_keys: Vec<u64> = (0..setup as u64).collect();
        rng.shuffle(&mut setup_keys);
        let mut new_keys: Vec<u64> = (setup as u64..(setup + new) as u64).collect();
        rng.shuffle(&mut new_keys);
        let values = (0..RANDOM_VALUES).map(|_| rng.next()).collect();
        let map_keys = (0..MAP_KEYS).map(|_| rng.next()).collect();
        let map_values = (0..MAP_KEYS)
            .map(|_| (rng.next() >> 11) as f64 / (1u64 << 53) as f64)
            .collect();
        let list = (0..LIST_VALUES).map(|_| rng.next()).collect();
        Data {
            setup_keys,
            new_keys,
            values,
            map_keys,
            map_values,
            list,
        }
    }
    fn setup_key(&self, i: usize) -> u64 {
        self.setup_keys[i % self.setup_keys.len()]
    }
    fn new_key(&self, i: usize) -> u64 {
        self.new_keys[i % self.new_keys.len()]
    }
    fn value(&self, i: usize) -> u64 {
        self.values[i % RANDOM_VALUES]
    }
}

/// Which state a benchmark sets up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Value,
    List,
    Map,
}

impl Kind {
    /// The kind of an [`OPS`] entry's state (`ValueState`, `ListState`, `MapState`).
    fn of(state: &str) -> Kind {
        match state {
            "ValueState" => Kind::Value,
            "ListState" => Kind::List,
            _ => Kind::Map,
        }
    }

    /// The state kind it is.
    fn state_kind(self) -> StateKind {
        match self {
            Kind::Value => StateKind::Value,
            Kind::List => StateKind::List,
            Kind::Map => StateKind::Map,
        }
    }
}

/// The ops, in Flink's names.
pub(crate) const OPS: &[(&str, &str)] = &[
    ("ValueState", "valueUpdate"),
    ("ValueState", "valueAdd"),
    ("ValueState", "valueGet"),
    ("ListState", "listUpdate"),
    ("ListState", "listAdd"),
    ("ListState", "listAppend"),
    ("ListState", "listGet"),
    ("ListState", "listGetAndIterate"),
    ("ListState", "listAddAll"),
    ("MapState", "mapUpdate"),
    ("MapState", "mapAdd"),
    ("MapState", "mapGet"),
    ("MapState", "mapContains"),
    ("MapState", "mapIsEmpty"),
    ("MapState", "mapKeys"),
    ("MapState", "mapValues"),
    ("MapState", "mapEntries"),
    ("MapState", "mapIterator"),
    ("MapState", "mapRemove"),
    ("MapState", "mapPutAll"),
    // Not a Flink op: the cost of selecting the key alone, to break figures down.
    ("ValueState", "setCurrentKey"),
];

/// Which of an op's runs a figure is of: the plain op, or one changed in one way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Variant {
    /// With a TTL on the state.
    pub(crate) ttl: bool,
    /// With keys prefetched ahead, as the keyed operator runs records.
    pub(crate) prefetch: bool,
    /// With the state's `u64`s (values, list elements, map user keys) stored at their
    /// full width by [`FixedIntegerSerializer`] instead of as postcard varints.
    ///
    /// [`FixedIntegerSerializer`]: flowstate_core::serializer::FixedIntegerSerializer
    pub(crate) fixed: bool,
}

/// One op's figures.
pub(crate) struct OpResult {
    pub(crate) state: &'static str,
    pub(crate) variant: Variant,
    pub(crate) op: &'static str,
    pub(crate) samples: Vec<f64>,
    /// The op's baseline, measured in turn with it (only on the plain variant's row:
    /// the others compare with their plain row's; none for `setCurrentKey`, or when
    /// baselines are off).
    pub(crate) baseline: Option<Vec<f64>>,
}

/// What each op is compared with.
pub(crate) enum Baseline<'a> {
    /// Nothing.
    Off,
    /// Bare `hashbrown` maps (the heap backend's).
    Bare,
    /// The `rocksdb` crate on a database with these options (the RocksDB backend's).
    Raw(&'a RocksDbOptions),
}

/// A baseline set up for one op: what its timed runs read and write.
enum BaselineData {
    Bare(bare::BareMaps),
    Raw(raw::RawDb),
}

impl BaselineData {
    /// Waits until its database has no background work (see [`wait_idle`]).
    fn wait_idle(&self) -> Duration {
        match self {
            BaselineData::Bare(_) => Duration::ZERO,
            BaselineData::Raw(db) => wait_idle(|| db.properties()),
        }
    }

    /// Compacts its database (see [`compacts`]); the bare maps have none.
    fn compact(&self) -> Result<()> {
        match self {
            BaselineData::Bare(_) => Ok(()),
            BaselineData::Raw(db) => db.compact(),
        }
    }

    /// Runs `n` invocations of `op` from `start`, as [`run_op`] does.
    fn run(&mut self, d: &Data, op: &str, start: usize, n: usize) -> Result<(u64, u64)> {
        match self {
            BaselineData::Bare(maps) => maps
                .run(d, op, start, n)
                .ok_or_else(|| anyhow::anyhow!("no bare baseline for {op}")),
            BaselineData::Raw(db) => db
                .run(d, op, start, n)?
                .ok_or_else(|| anyhow::anyhow!("no raw baseline for {op}")),
        }
    }
}

impl Baseline<'_> {
    /// Sets up the baseline of op `op` of `kind`, or `None` for no baseline.
    fn set_up(&self, d: &Data, kind: Kind, op: &str) -> Result<Option<BaselineData>> {
        if op == "setCurrentKey" {
            return Ok(None);
        }
        match self {
            Baseline::Off => Ok(None),
            Baseline::Bare => {
                eprintln!("[state] {op}: bare-map baseline");
                Ok(Some(BaselineData::Bare(bare::BareMaps::new(d, kind))))
            }
            Baseline::Raw(options) => {
                eprintln!("[state] {op}: raw RocksDB baseline");
                let db = flowstate_rocksdb::PlainDb::open(
                    options,
                    op,
                    kind.state_kind(),
                    raw::MAX_PARALLELISM,
                )?;
                let raw = raw::RawDb::new(db, d, kind)?;
                settle(|| raw.properties());
                Ok(Some(BaselineData::Raw(raw)))
            }
        }
    }
}

/// What to measure.
pub(crate) struct Plan<'a> {
    /// Seconds per timed iteration.
    pub(crate) seconds: f64,
    /// Timed iterations per op.
    pub(crate) iterations: usize,
    /// Untimed warm-up runs of `seconds` per subject, before the timed ones.
    pub(crate) warmup: usize,
    /// Only these ops; all when empty.
    pub(crate) only: &'a [String],
    /// Also with TTL.
    pub(crate) ttl: bool,
    /// Also with keys prefetched ahead.
    pub(crate) prefetch: bool,
    /// Also with the `u64`s stored by [`FixedIntegerSerializer`].
    ///
    /// [`FixedIntegerSerializer`]: flowstate_core::serializer::FixedIntegerSerializer
    pub(crate) fixed: bool,
}

/// Runs the ops of `plan` on backends from `f`.
pub(crate) fn state_bench<F: KeyedBackendFactory>(
    f: &F,
    d: &Data,
    plan: &Plan<'_>,
    baseline: &Baseline<'_>,
) -> Result<Vec<OpResult>>
where
    F::Backend<u64>: CompactState,
{
    let Plan {
        seconds,
        iterations,
        warmup,
        only,
        ttl: with_ttl,
        prefetch: with_prefetch,
        fixed: with_fixed,
    } = *plan;
    let mut out = Vec::new();
    let ttl_config = bench_ttl()?;
    for (state, op) in OPS {
        if !only.is_empty() && !only.iter().any(|o| o == op) {
            continue;
        }
        let kind = Kind::of(state);
        // The op plain, with TTL, prefetched and with fixed-width integers, and its
        // baseline, each set up on its own, then timed in turn, one run of each per
        // round: the machine's load drifts over seconds, and the figures compared are
        // each round's. Each timed run waits for every subject's background work first.
        let plain = Variant::default();
        let mut variants = vec![plain];
        if with_ttl {
            variants.push(Variant { ttl: true, ..plain });
        }
        if with_prefetch {
            variants.push(Variant {
                prefetch: true,
                ..plain
            });
        }
        if with_fixed {
            variants.push(Variant {
                fixed: true,
                ..plain
            });
        }
        // Time spent settling every subject before each timed run (`measure`).
        let waited = &Cell::new(Duration::ZERO);
        // Time spent compacting each timed subject's state before its runs (`compacts`).
        let compacting = &Cell::new(Duration::ZERO);
        let timed = |f: &dyn Fn() -> Result<()>| {
            let t = Instant::now();
            let r = f();
            compacting.set(compacting.get() + t.elapsed());
            r
        };
        let mut runs: Vec<Run<'_>> = Vec::with_capacity(variants.len() + 1);
        for &v in &variants {
            let shape = Shape {
                ttl: v.ttl.then_some(&ttl_config),
                fixed: v.fixed,
            };
            let set_up = move || {
                eprintln!(
                    "[state] {op}: setting up {SETUP_KEYS} keys (TTL {}, prefetch {}, fixed {})",
                    v.ttl, v.prefetch, v.fixed
                );
                fresh(f, d, kind, shape)
            };
            runs.push(subject(
                set_up()?,
                set_up,
                move |b, start| run_op(b, d, op, start, BATCH, shape, v.prefetch),
                Upkeep {
                    settle: |b: &F::Backend<u64>| {
                        waited.set(waited.get() + wait_idle(|| b.properties()))
                    },
                    compact: move |b: &F::Backend<u64>| {
                        timed(&|| b.compact_state(list_desc(shape).name()))
                    },
                },
            ));
        }
        if let Some(base) = baseline.set_up(d, kind, op)? {
            let set_up = move || {
                baseline
                    .set_up(d, kind, op)?
                    .ok_or_else(|| anyhow::anyhow!("{op}: no baseline"))
            };
            runs.push(subject(
                base,
                set_up,
                move |base, start| base.run(d, op, start, BATCH),
                Upkeep {
                    settle: |base: &BaselineData| waited.set(waited.get() + base.wait_idle()),
                    compact: move |base: &BaselineData| timed(&|| base.compact()),
                },
            ));
        }
        let reset = resets(op);
        let mut samples = measure(
            seconds,
            warmup,
            iterations,
            reset,
            compacts(kind),
            &mut runs,
        )?
        .into_iter();
        drop(runs);
        // Only a subject with a database waits (the heap backend and the bare maps
        // return at once), and only such a subject has anything to compact.
        if !waited.get().is_zero() {
            eprintln!(
                "[state] {op}: {:.1} s waiting for background work and {:.1} s compacting \
                 before the timed runs",
                waited.get().as_secs_f64(),
                compacting.get().as_secs_f64()
            );
        }
        let firsts: Vec<Vec<f64>> = samples.by_ref().take(variants.len()).collect();
        // Every variant is compared with the one baseline.
        let baseline = samples.next();
        for (variant, samples) in variants.into_iter().zip(firsts) {
            out.push(OpResult {
                state,
                variant,
                op,
                samples,
                baseline: (variant == plain).then(|| baseline.clone()).flatten(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use flowstate_core::keygroup::KeyGroupRange;
    use flowstate_heap::HeapBackendFactory;
    use setup::setup;

    /// Each baseline must do the op's work: from a fresh set-up, the same invocations
    /// count the same ops and read the same values as Flowstate's heap backend does.
    #[test]
    fn baselines_read_and_count_what_the_ops_do() {
        let d = Data::with_keys(300, 300);
        let dir = tempfile::tempdir().unwrap();
        let options = RocksDbOptions::new(dir.path());
        for (state, op) in OPS.iter().filter(|(_, op)| *op != "setCurrentKey") {
            let kind = Kind::of(state);
            // 700 invocations: every set-up key twice and some a third time, so reads
            // see the op's own earlier writes.
            let b = HeapBackendFactory
                .create(config(128, KeyGroupRange::all(128).unwrap()))
                .unwrap();
            setup(&b, &d, kind, Shape::default()).unwrap();
            let ours = run_op(&b, &d, op, 0, 700, Shape::default(), false).unwrap();
            // Prefetching changes what is read and counted in nothing.
            let b = HeapBackendFactory
                .create(config(128, KeyGroupRange::all(128).unwrap()))
                .unwrap();
            setup(&b, &d, kind, Shape::default()).unwrap();
            let prefetched = run_op(&b, &d, op, 0, 700, Shape::default(), true).unwrap();
            assert_eq!(prefetched, ours, "{op}: prefetched");
            // Nor do fixed-width integers, on the backend whose bytes they change.
            let fixed = Shape {
                fixed: true,
                ..Shape::default()
            };
            let b = options
                .create(config(128, KeyGroupRange::all(128).unwrap()))
                .unwrap();
            setup(&b, &d, kind, fixed).unwrap();
            let on_rocksdb = run_op(&b, &d, op, 0, 700, fixed, false).unwrap();
            assert_eq!(on_rocksdb, ours, "{op}: fixed-width on RocksDB");
            drop(b);
            let bare = bare::BareMaps::new(&d, kind).run(&d, op, 0, 700);
            let db = flowstate_rocksdb::PlainDb::open(
                &options,
                op,
                kind.state_kind(),
                raw::MAX_PARALLELISM,
            )
            .unwrap();
            let raw = raw::RawDb::new(db, &d, kind)
                .unwrap()
                .run(&d, op, 0, 700)
                .unwrap();
            assert_eq!(bare, Some(ours), "{op}: bare maps");
            assert_eq!(raw, Some(ours), "{op}: raw RocksDB");
            assert!(ours.0 >= 700, "{op}: {} ops", ours.0);
        }
    }

    /// The compaction before a list op's timed runs (`compacts`) leaves both the
    /// backend's state and the raw baseline's database in sorted files below level 0,
    /// their writes out of the memtable, and changes nothing that is read.
    #[test]
    fn compacting_moves_the_writes_below_level_0_and_keeps_what_is_read() {
        let figure = |figures: &[(&'static str, u64)], name: &str| {
            figures.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        };
        let d = Data::with_keys(300, 300);
        let dir = tempfile::tempdir().unwrap();
        let options = RocksDbOptions::new(dir.path());
        let b = options
            .create(config(128, KeyGroupRange::all(128).unwrap()))
            .unwrap();
        setup(&b, &d, Kind::List, Shape::default()).unwrap();
        run_op(&b, &d, "listUpdate", 0, 700, Shape::default(), false).unwrap();
        let db = flowstate_rocksdb::PlainDb::open(
            &options,
            "listUpdate",
            StateKind::List,
            raw::MAX_PARALLELISM,
        )
        .unwrap();
        let raw = raw::RawDb::new(db, &d, Kind::List).unwrap();
        raw.run(&d, "listUpdate", 0, 700).unwrap();
        // Everything is still in the memtables.
        assert_eq!(figure(&b.properties(), "live_sst_bytes"), Some(0));
        assert_eq!(figure(&raw.properties(), "live_sst_bytes"), Some(0));
        let before = run_op(&b, &d, "listGetAndIterate", 0, 700, Shape::default(), false);
        let raw_before = raw.run(&d, "listGetAndIterate", 0, 700).unwrap();

        CompactState::compact_state(&b, list_desc(Shape::default()).name()).unwrap();
        raw.compact().unwrap();

        for figures in [b.properties(), raw.properties()] {
            assert_eq!(figure(&figures, "level0_files"), Some(0), "{figures:?}");
            assert!(figure(&figures, "live_sst_bytes") > Some(0), "{figures:?}");
        }
        let after = run_op(&b, &d, "listGetAndIterate", 0, 700, Shape::default(), false);
        assert_eq!(after.unwrap(), before.unwrap());
        assert_eq!(
            raw.run(&d, "listGetAndIterate", 0, 700).unwrap(),
            raw_before
        );
    }
}

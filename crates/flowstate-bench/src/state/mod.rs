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
//! moved by a third between runs).

use std::time::{Duration, Instant};

use anyhow::Result;
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::serializer::{FixedIntegerSerializer, SerdeSerializer};
use flowstate_core::state::{StateKind, VoidNamespace};
use flowstate_core::ttl::StateTtlConfig;
use flowstate_rocksdb::RocksDbOptions;

use flowstate_core::backend::KeyedBackendFactory;

use crate::config;

mod bare;
mod raw;
mod select;

use select::Select;

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

/// The TTL of `--ttl` runs: long enough that nothing expires while measuring, with
/// every default (OnCreateAndWrite, NeverReturnExpired, background cleanups on,
/// system clock), so the figures are the cost of TTL's bookkeeping.
fn bench_ttl() -> Result<StateTtlConfig> {
    Ok(StateTtlConfig::new(Duration::from_secs(3600))?)
}

/// How a variant declares its state: with or without TTL, and with the default
/// serializer for the `u64`s it stores (postcard varints: 9 or 10 bytes for the random
/// full-range values here) or [`FixedIntegerSerializer`] (8 bytes, as Flink's
/// `LongSerializer` and the raw baseline write them).
#[derive(Clone, Copy, Default)]
struct Shape<'a> {
    ttl: Option<&'a StateTtlConfig>,
    fixed: bool,
}

fn value_desc(shape: Shape<'_>) -> ValueStateDescriptor<u64> {
    let d = if shape.fixed {
        ValueStateDescriptor::with_serializer("valueState", FixedIntegerSerializer::arc())
    } else {
        ValueStateDescriptor::new("valueState")
    };
    match shape.ttl {
        Some(t) => d.with_ttl(t.clone()),
        None => d,
    }
}
fn list_desc(shape: Shape<'_>) -> ListStateDescriptor<u64> {
    let d = if shape.fixed {
        ListStateDescriptor::with_serializer("listState", FixedIntegerSerializer::arc())
    } else {
        ListStateDescriptor::new("listState")
    };
    match shape.ttl {
        Some(t) => d.with_ttl(t.clone()),
        None => d,
    }
}
fn map_desc(shape: Shape<'_>) -> MapStateDescriptor<u64, f64> {
    let d = if shape.fixed {
        MapStateDescriptor::with_serializers(
            "mapState",
            FixedIntegerSerializer::arc(),
            SerdeSerializer::arc(),
        )
    } else {
        MapStateDescriptor::new("mapState")
    };
    match shape.ttl {
        Some(t) => d.with_ttl(t.clone()),
        None => d,
    }
}

/// Whether op `op`'s state grows with every invocation, so that each timed run starts
/// from a freshly set-up state: otherwise the faster of two subjects works on longer
/// lists than the other, and the longer the suite has run, the longer all of them
/// (`listAddAll` adds 100 elements a call: its figure moved threefold with the order
/// of the runs).
fn resets(op: &str) -> bool {
    matches!(op, "listAdd" | "listAppend" | "listAddAll")
}

/// A backend from `f` with `setup`'s state for `kind`.
fn fresh<F: KeyedBackendFactory>(
    f: &F,
    d: &Data,
    kind: Kind,
    shape: Shape<'_>,
) -> Result<F::Backend<u64>> {
    let b = f.create(config(128, KeyGroupRange::all(128)?))?;
    setup(&b, d, kind, shape)?;
    settle(|| b.properties());
    Ok(b)
}

/// Waits (at most five minutes) until RocksDB has no flush or compaction running or
/// pending, by `properties` (a backend's, or the raw baseline's database's; the heap
/// backend has none and returns at once). Each subject is set up and settled before
/// the next is set up: otherwise whichever subject is timed while its own or another
/// set-up's compactions still run (5,000,000 map entries take seconds) loses a
/// third to a half on the map scans, and which one that is changed from run to run.
/// Flink's benchmark does not wait; its warm-up iterations run during them.
fn settle(properties: impl Fn() -> Vec<(&'static str, u64)>) {
    let started = Instant::now();
    // Idle three polls in a row: a flush that ends can schedule a compaction.
    let mut idle = 0;
    while idle < 3 && started.elapsed() < Duration::from_secs(300) {
        if flowstate_rocksdb::background_idle(&properties()) {
            idle += 1;
        } else {
            idle = 0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let figures = properties();
    if let Some((_, files)) = figures.iter().find(|(n, _)| *n == "level0_files") {
        eprintln!(
            "[state] background work settled after {:.1} s; {files} level-0 files",
            started.elapsed().as_secs_f64()
        );
    }
}

fn setup<B: KeyedStateBackend<u64>>(b: &B, d: &Data, kind: Kind, shape: Shape<'_>) -> Result<()> {
    match kind {
        Kind::Value => {
            let s = b.value_state::<VoidNamespace, u64>(&value_desc(shape))?;
            for (i, k) in d.setup_keys.iter().enumerate() {
                b.set_current_key(*k)?;
                s.update(d.value(i))?;
            }
        }
        Kind::List => {
            let s = b.list_state::<VoidNamespace, u64>(&list_desc(shape))?;
            for (i, k) in d.setup_keys.iter().enumerate() {
                b.set_current_key(*k)?;
                s.add(d.value(i))?;
            }
        }
        Kind::Map => {
            let s = b.map_state::<VoidNamespace, u64, f64>(&map_desc(shape))?;
            for k in &d.setup_keys {
                b.set_current_key(*k)?;
                for (mk, mv) in d.map_keys.iter().zip(&d.map_values) {
                    s.put(*mk, *mv)?;
                }
            }
        }
    }
    Ok(())
}

/// Runs op `name` `n` times from invocation `start`; returns the ops counted and a
/// fold of what was read (the baselines fold the same values the same way).
fn run_op<B: KeyedStateBackend<u64>>(
    b: &B,
    d: &Data,
    name: &str,
    start: usize,
    n: usize,
    shape: Shape<'_>,
    prefetch: bool,
) -> Result<(u64, u64)> {
    let mut ops = 0u64;
    let mut sink = 0u64;
    let mut keys = Select::new(d, name, prefetch);
    match &name[..3] {
        "val" | "set" => {
            let s = b.value_state::<VoidNamespace, u64>(&value_desc(shape))?;
            for i in start..start + n {
                match name {
                    "valueUpdate" => {
                        keys.select(b, i)?;
                        s.update(d.value(i))?;
                    }
                    "valueAdd" => {
                        keys.select(b, i)?;
                        s.update(d.value(i))?;
                    }
                    "setCurrentKey" => keys.select(b, i)?,
                    _ => {
                        keys.select(b, i)?;
                        sink ^= s.value()?.unwrap_or(0);
                    }
                }
                ops += 1;
            }
        }
        "lis" => {
            let s = b.list_state::<VoidNamespace, u64>(&list_desc(shape))?;
            for i in start..start + n {
                match name {
                    "listUpdate" => {
                        keys.select(b, i)?;
                        s.update(d.list.clone())?;
                    }
                    "listAdd" => {
                        keys.select(b, i)?;
                        s.add(d.value(i))?;
                    }
                    "listAppend" => {
                        keys.select(b, i)?;
                        s.add(d.value(i))?;
                    }
                    "listGet" => {
                        keys.select(b, i)?;
                        s.view(&mut |l| sink ^= l.len() as u64)?;
                    }
                    "listGetAndIterate" => {
                        keys.select(b, i)?;
                        s.view(&mut |l| {
                            for v in l {
                                sink ^= v;
                            }
                        })?;
                    }
                    _ => {
                        keys.select(b, i)?;
                        s.add_all(d.list.clone())?;
                    }
                }
                ops += 1;
            }
        }
        _ => {
            let s = b.map_state::<VoidNamespace, u64, f64>(&map_desc(shape))?;
            for i in start..start + n {
                let mk = d.map_keys[i % MAP_KEYS];
                let mv = d.map_values[i % MAP_KEYS];
                match name {
                    "mapUpdate" => {
                        keys.select(b, i)?;
                        s.put(mk, mv + 1.0)?;
                    }
                    "mapAdd" => {
                        keys.select(b, i)?;
                        s.put(mk, mv)?;
                    }
                    "mapGet" => {
                        keys.select(b, i)?;
                        sink ^= s.get(&mk)?.map_or(0, f64::to_bits);
                    }
                    "mapContains" => {
                        keys.select(b, i)?;
                        sink ^= u64::from(s.contains(&mk)?);
                    }
                    "mapIsEmpty" => {
                        keys.select(b, i)?;
                        sink ^= u64::from(s.is_empty()?);
                    }
                    "mapKeys" => {
                        keys.select(b, i)?;
                        let keys = s.keys()?;
                        ops += keys.len() as u64;
                        sink ^= keys.into_iter().fold(0, |a, k| a ^ fold_entry(name, k, 0));
                        continue;
                    }
                    "mapValues" => {
                        keys.select(b, i)?;
                        let values = s.values()?;
                        ops += values.len() as u64;
                        sink ^= values
                            .into_iter()
                            .fold(0, |a, v| a ^ fold_entry(name, 0, v.to_bits()));
                        continue;
                    }
                    "mapEntries" | "mapIterator" => {
                        keys.select(b, i)?;
                        let entries = s.entries()?;
                        ops += entries.len() as u64;
                        sink ^= entries
                            .into_iter()
                            .fold(0, |a, (k, v)| a ^ fold_entry(name, k, v.to_bits()));
                        continue;
                    }
                    "mapRemove" => {
                        keys.select(b, i)?;
                        s.remove(&mk)?;
                    }
                    _ => {
                        keys.select(b, i)?;
                        s.put_all(
                            d.map_keys
                                .iter()
                                .copied()
                                .zip(d.map_values.iter().copied())
                                .collect(),
                        )?;
                    }
                }
                ops += 1;
            }
        }
    }
    Ok((ops, sink))
}

/// What the map iteration ops fold per entry (user key, value bits), the same in the
/// op and its baselines.
fn fold_entry(op: &str, key: u64, value_bits: u64) -> u64 {
    match op {
        "mapKeys" => key.rotate_left(1),
        "mapValues" => value_bits,
        _ => key ^ value_bits,
    }
}

/// Which of an op's runs a figure is of: the plain op, or one changed in one way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Variant {
    /// With a TTL on the state.
    pub(crate) ttl: bool,
    /// With keys prefetched ahead, as the keyed operator runs records.
    pub(crate) prefetch: bool,
    /// With the state's `u64`s (values, list elements, map user keys) stored at their
    /// full width by [`FixedIntegerSerializer`] instead of as postcard varints.
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
    pub(crate) fixed: bool,
}

/// Runs the ops of `plan` on backends from `f`.
pub(crate) fn state_bench<F: KeyedBackendFactory>(
    f: &F,
    d: &Data,
    plan: &Plan<'_>,
    baseline: &Baseline<'_>,
) -> Result<Vec<OpResult>> {
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
        // each round's.
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
            runs.push(subject(set_up()?, set_up, move |b, start| {
                run_op(b, d, op, start, BATCH, shape, v.prefetch)
            }));
        }
        if let Some(base) = baseline.set_up(d, kind, op)? {
            let set_up = move || {
                baseline
                    .set_up(d, kind, op)?
                    .ok_or_else(|| anyhow::anyhow!("{op}: no baseline"))
            };
            runs.push(subject(base, set_up, move |base, start| {
                base.run(d, op, start, BATCH)
            }));
        }
        let reset = resets(op);
        let mut samples = measure(seconds, warmup, iterations, reset, &mut runs)?.into_iter();
        drop(runs);
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

/// What [`measure`] asks of a subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Run [`BATCH`] invocations from this index; returns the ops they count and the
    /// fold of what they read.
    Run(usize),
    /// Put the state back as freshly set up (returns zeros).
    Reset,
}

/// One timed subject: a variant of an op, or its baseline.
type Run<'a> = Box<dyn FnMut(Step) -> Result<(u64, u64)> + 'a>;

/// A timed subject over `state`, run by `run`; a reset drops the state before `set_up`
/// makes it afresh, so that the two are never in memory at once.
fn subject<'a, T: 'a>(
    state: T,
    mut set_up: impl FnMut() -> Result<T> + 'a,
    mut run: impl FnMut(&mut T, usize) -> Result<(u64, u64)> + 'a,
) -> Run<'a> {
    // `None` only after a reset whose set-up failed (the error went to `measure`).
    let mut state = Some(state);
    Box::new(move |step| match (step, state.as_mut()) {
        (Step::Run(start), Some(s)) => run(s, start),
        (Step::Run(_), None) => Err(anyhow::anyhow!("no state: its reset failed")),
        (Step::Reset, _) => {
            state = None;
            state = Some(set_up()?);
            Ok((0, 0))
        }
    })
}

/// Invocations per timing check.
const BATCH: usize = 1024;

/// Warms each of `runs` up for `warmup` runs of `seconds` (at least one batch), as the
/// Flink anchor warms up before its timed iterations (RocksDB's compactions of a large
/// set-up can outlast it: the map scans still vary run to run), then runs `iterations` rounds,
/// each timing one run of `seconds` of every one of `runs` in turn; returns ops/s per
/// timed run, per subject. The invocation indexes of each subject continue from
/// round to round, as one uninterrupted run's would; a timed run runs at least one
/// batch. With `reset`, each subject's state is set up afresh before each of its timed
/// runs, outside the timing.
fn measure(
    seconds: f64,
    warmup: usize,
    iterations: usize,
    reset: bool,
    runs: &mut [Run<'_>],
) -> Result<Vec<Vec<f64>>> {
    let mut next = vec![0usize; runs.len()];
    for (run, next) in runs.iter_mut().zip(&mut next) {
        let warm = Instant::now();
        loop {
            std::hint::black_box(run(Step::Run(*next))?);
            *next += BATCH;
            if warm.elapsed() >= Duration::from_secs_f64(seconds * warmup as f64) {
                break;
            }
        }
    }
    let mut samples = vec![Vec::with_capacity(iterations); runs.len()];
    for _ in 0..iterations {
        for ((run, next), samples) in runs.iter_mut().zip(&mut next).zip(&mut samples) {
            if reset {
                run(Step::Reset)?;
            }
            let t = Instant::now();
            let mut ops = 0u64;
            // At least one batch, however short `seconds` (as Flink's harness does).
            loop {
                let (counted, sink) = run(Step::Run(*next))?;
                std::hint::black_box(sink);
                ops += counted;
                *next += BATCH;
                if t.elapsed() >= Duration::from_secs_f64(seconds) {
                    break;
                }
            }
            samples.push(ops as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowstate_heap::HeapBackendFactory;
    use std::cell::RefCell;

    /// With `reset`, every subject is set up afresh before each of its timed runs (and
    /// only then); without, never; either way each subject's invocations continue
    /// from run to run, one batch after another.
    #[test]
    fn measure_resets_each_subject_before_each_timed_run_when_asked() {
        for reset in [false, true] {
            let logs: Vec<RefCell<Vec<Step>>> = (0..3).map(|_| RefCell::default()).collect();
            let mut runs: Vec<Run<'_>> = logs
                .iter()
                .map(|log| {
                    Box::new(move |step| {
                        log.borrow_mut().push(step);
                        Ok((1u64, 0u64))
                    }) as Run<'_>
                })
                .collect();
            let samples = measure(0.001, 1, 4, reset, &mut runs).unwrap();
            drop(runs);
            assert_eq!(samples.len(), 3);
            for log in &logs {
                let log = log.borrow();
                let resets = log.iter().filter(|s| **s == Step::Reset).count();
                assert_eq!(resets, if reset { 4 } else { 0 }, "{log:?}");
                // A reset never comes twice in a row or last: a timed run follows.
                assert!(log.windows(2).all(|w| w != [Step::Reset, Step::Reset]));
                assert_ne!(log.last(), Some(&Step::Reset));
                let starts: Vec<usize> = log
                    .iter()
                    .filter_map(|s| match s {
                        Step::Run(i) => Some(*i),
                        Step::Reset => None,
                    })
                    .collect();
                assert!(starts.iter().enumerate().all(|(j, i)| *i == j * BATCH));
            }
        }
    }

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
}

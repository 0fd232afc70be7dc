//! A known job for the state processor's tests: per key, every keyed state kind and a
//! processing-time timer that never fires (the clock stands still), written from a
//! vector source with uids `events` and `stats`; and a running sum per key (`sums`)
//! whose output shows where a restored job continues from.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use flowstate_core::state::{AggregatingState, ListState, MapState, ReducingState, ValueState};
use flowstate_runtime::{
    BackendChoice, CheckpointConfig, JobConfig, KeyedProcessFunction, ManualClock, OpenContext,
    ProcessContext, RestoreFrom, RocksDbOptions, RuntimeError, WatermarkStrategy, execute, opened,
};

/// Timers are registered at `TIMER_BASE + value`.
pub const TIMER_BASE: i64 = 1_000_000_000;

/// Count and sum.
pub struct CountSum;

impl AggregateFunction<u64, (u64, u64), u64> for CountSum {
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: u64, acc: &mut (u64, u64)) {
        acc.0 += 1;
        acc.1 += value;
    }
    fn get_result(&self, acc: &(u64, u64)) -> u64 {
        acc.1
    }
    fn merge(&self, acc: &mut (u64, u64), other: (u64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

/// Every keyed state kind, per key.
#[derive(Default)]
pub struct Stats {
    max: Option<Rc<dyn ValueState<u64>>>,
    seen: Option<Rc<dyn ListState<u64>>>,
    by_parity: Option<Rc<dyn MapState<u8, u64>>>,
    sum: Option<Rc<dyn ReducingState<u64>>>,
    count_sum: Option<Rc<dyn AggregatingState<u64, u64>>>,
}

impl KeyedProcessFunction<String, (String, u64), (String, u64)> for Stats {
    fn open(&mut self, ctx: &OpenContext<'_, String>) -> Result<(), RuntimeError> {
        self.max = Some(ctx.value_state(&ValueStateDescriptor::new("max"))?);
        self.seen = Some(ctx.list_state(&ListStateDescriptor::new("seen"))?);
        self.by_parity = Some(ctx.map_state(&MapStateDescriptor::new("by-parity"))?);
        self.sum = Some(ctx.reducing_state(&ReducingStateDescriptor::new("sum", |a, b| a + b))?);
        self.count_sum =
            Some(ctx.aggregating_state(&AggregatingStateDescriptor::new("count-sum", CountSum))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        (key, v): (String, u64),
        ctx: &mut ProcessContext<'_, String, (String, u64)>,
    ) -> Result<(), RuntimeError> {
        let max = opened(&self.max)?;
        max.update(max.value()?.unwrap_or(0).max(v))?;
        opened(&self.seen)?.add(v)?;
        let parity = opened(&self.by_parity)?;
        let p = (v % 2) as u8;
        parity.put(p, parity.get(&p)?.unwrap_or(0) + 1)?;
        opened(&self.sum)?.add(v)?;
        opened(&self.count_sum)?.add(v)?;
        ctx.timer_service()
            .register_processing_time_timer(TIMER_BASE + v as i64)?;
        ctx.collect((key, v));
        Ok(())
    }
}

/// What [`Stats`] holds per key after `input`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Expected {
    pub max: u64,
    pub seen: Vec<u64>,
    pub by_parity: BTreeMap<u8, u64>,
    pub sum: u64,
    pub count_sum: (u64, u64),
    pub timers: Vec<i64>,
}

pub fn model(input: &[(String, u64)]) -> BTreeMap<String, Expected> {
    let mut m: BTreeMap<String, Expected> = BTreeMap::new();
    for (k, v) in input {
        let e = m.entry(k.clone()).or_default();
        e.max = e.max.max(*v);
        e.seen.push(*v);
        *e.by_parity.entry((v % 2) as u8).or_default() += 1;
        e.sum += v;
        e.count_sum.0 += 1;
        e.count_sum.1 += v;
        e.timers.push(TIMER_BASE + *v as i64);
    }
    for e in m.values_mut() {
        e.seen.sort_unstable();
        e.timers.sort_unstable();
        e.timers.dedup();
    }
    m
}

pub fn input(keys: u64, events: u64) -> Vec<(String, u64)> {
    (0..events)
        .map(|i| (format!("k{}", (i * 7919) % keys), i % 97))
        .collect()
}

pub fn backend(dir: &Path, rocksdb: bool) -> BackendChoice {
    if rocksdb {
        BackendChoice::RocksDb(RocksDbOptions::new(dir.join(format!(
            "rocks-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ))))
    } else {
        BackendChoice::Heap
    }
}

/// Runs the [`Stats`] job to the end with checkpoints in `dir/ck`; returns the
/// checkpoint directory.
pub fn run_stats(dir: &Path, rocksdb: bool, workers: usize, input: Vec<(String, u64)>) -> PathBuf {
    let ck = dir.join("ck");
    let config = JobConfig::default()
        .workers(workers)
        .backend(backend(dir, rocksdb))
        .clock(Arc::new(ManualClock::new(0)))
        .checkpointing(CheckpointConfig::local(&ck, Duration::from_millis(20)).unwrap());
    execute(config, move |job| {
        job.source_vec(input.clone(), |_| 0, WatermarkStrategy::None)
            .uid("events")
            .key_by(|(k, _): &(String, u64)| k.clone())
            .process(Stats::default())
            .uid("stats")
            .collect()
    })
    .unwrap();
    ck
}

/// A running sum per key, emitted per record as `(key, sum)`.
#[derive(Default)]
pub struct Sums(Option<Rc<dyn ValueState<u64>>>);

impl KeyedProcessFunction<String, (String, u64), (String, u64)> for Sums {
    fn open(&mut self, ctx: &OpenContext<'_, String>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("sum"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        (key, v): (String, u64),
        ctx: &mut ProcessContext<'_, String, (String, u64)>,
    ) -> Result<(), RuntimeError> {
        let s = opened(&self.0)?;
        let sum = s.value()?.unwrap_or(0) + v;
        s.update(sum)?;
        ctx.collect((key, sum));
        Ok(())
    }
}

/// How a [`Sums`] run restores.
pub struct SumsRun<'a> {
    pub dir: &'a Path,
    pub ck: &'a str,
    pub rocksdb: bool,
    pub workers: usize,
    pub max_parallelism: u32,
    pub from: Option<PathBuf>,
    pub uid: &'a str,
    pub allow_non_restored: bool,
}

impl SumsRun<'_> {
    /// Runs the sums job over `input`; its output sorted, or the job's error.
    pub fn run(&self, input: Vec<(String, u64)>) -> Result<Vec<(String, u64)>, RuntimeError> {
        let restore = self
            .from
            .clone()
            .map_or(RestoreFrom::Nothing, |p| RestoreFrom::Path(p.into()));
        let config = JobConfig::default()
            .workers(self.workers)
            .max_parallelism(self.max_parallelism)
            .backend(backend(self.dir, self.rocksdb))
            .checkpointing(
                CheckpointConfig::local(self.dir.join(self.ck), Duration::from_millis(20))?
                    .restore(restore)
                    .allow_non_restored_state(self.allow_non_restored),
            );
        let uid = self.uid.to_string();
        let out = execute(config, move |job| {
            job.source_vec(input.clone(), |_| 0, WatermarkStrategy::None)
                .uid("events")
                .key_by(|(k, _): &(String, u64)| k.clone())
                .process(Sums::default())
                .uid(uid.clone())
                .collect()
        })?;
        let mut all: Vec<(String, u64)> = out.into_iter().flatten().collect();
        all.sort();
        Ok(all)
    }
}

/// Every record `filter` selects.
pub fn dump_all(
    snapshot: &flowstate_state_processor::Snapshot,
    filter: &flowstate_state_processor::DumpFilter,
) -> Vec<flowstate_state_processor::Record> {
    let mut out = Vec::new();
    flowstate_state_processor::records(
        snapshot,
        filter,
        |r| {
            out.push(r);
            Ok(())
        },
        |_| {},
    )
    .unwrap();
    out
}

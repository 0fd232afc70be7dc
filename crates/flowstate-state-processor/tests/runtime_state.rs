//! The runtime's own state through the state processor: broadcast state dumps as the
//! job left it, and timers bootstrapped into a savepoint fire in the job that restores
//! it, once each, on both backends; sliced windows leave no slice behind.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

mod common;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use flowstate_core::descriptor::{MapStateDescriptor, ValueStateDescriptor};
use flowstate_core::state::{MapState, ValueState};
use flowstate_runtime::{
    BroadcastContext, CheckpointConfig, JobConfig, KeyedBroadcastProcessFunction,
    KeyedProcessFunction, OpenContext, ProcessContext, ReadOnlyContext, RestoreFrom, RuntimeError,
    TimerContext, WatermarkStrategy, WindowAssigner, execute, opened,
};
use flowstate_state_processor::{Bootstrap, DumpFilter, Snapshot, records};

/// Keeps the latest limit per rule name in broadcast state; emits the whole of it for
/// every keyed record.
struct Limits;

impl KeyedBroadcastProcessFunction<u32, u32, (String, i64), String> for Limits {
    fn process_element(
        &mut self,
        _: u32,
        ctx: &mut ReadOnlyContext<'_, u32, String>,
    ) -> Result<(), RuntimeError> {
        let mut all = ctx
            .broadcast_state(&MapStateDescriptor::<String, i64>::new("limits"))?
            .entries()?;
        all.sort();
        ctx.collect(format!("{all:?}"));
        Ok(())
    }
    fn process_broadcast_element(
        &mut self,
        (name, limit): (String, i64),
        ctx: &mut BroadcastContext<'_, String>,
    ) -> Result<(), RuntimeError> {
        let state = ctx.broadcast_state(&MapStateDescriptor::<String, i64>::new("limits"))?;
        MapState::put(&*state, name, limit)?;
        Ok(())
    }
}

/// The rules job: `rules` broadcast (read by worker 0), `accounts` keyed.
fn run_limits(config: JobConfig, rules: Vec<(String, i64)>, accounts: Vec<u32>) -> Vec<String> {
    let out = execute(config, move |job| {
        let rules = job
            .source_vec_unsplit(rules.clone(), |_| 0, WatermarkStrategy::None)
            .uid("rules");
        job.source_vec(accounts.clone(), |_| 0, WatermarkStrategy::None)
            .uid("accounts")
            .key_by(|a: &u32| *a)
            .connect(rules.broadcast())
            .process(Limits)
            .uid("limits")
            .collect()
    })
    .unwrap();
    out.into_iter().flatten().collect()
}

#[test]
fn bootstrapped_broadcast_state_is_on_every_instance() {
    let dir = tempfile::tempdir().unwrap();
    let limits: Vec<(String, i64)> = vec![("a".into(), 1), ("b".into(), 2), ("a".into(), 3)];
    let mut b = Bootstrap::new(128, 2).unwrap();
    b.broadcast_state("limits", "limits", limits).unwrap();
    let sp = b.write(&dir.path().join("boot")).unwrap().path;
    let config = JobConfig::default().workers(3).checkpointing(
        CheckpointConfig::local(dir.path().join("ck"), Duration::from_millis(20))
            .unwrap()
            .restore(RestoreFrom::Path(sp.into())),
    );
    let out = run_limits(config, vec![], (0..30).collect());
    assert_eq!(out.len(), 30);
    let expect = format!("{:?}", vec![("a".to_string(), 3i64), ("b".to_string(), 2)]);
    assert!(out.iter().all(|o| *o == expect), "{out:?}");
}

#[test]
fn broadcast_state_dumps_as_the_job_left_it() {
    for rocksdb in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let rules: Vec<(String, i64)> = (0..40).map(|i| (format!("r{}", i % 7), i)).collect();
        let config = JobConfig::default()
            .workers(2)
            .backend(common::backend(dir.path(), rocksdb))
            .checkpointing(
                CheckpointConfig::local(dir.path().join("ck"), Duration::from_millis(20)).unwrap(),
            );
        let r = rules.clone();
        run_limits(config, r, vec![1, 2, 3]);
        let expect: BTreeMap<String, i64> = rules.into_iter().collect();
        let snapshot = Snapshot::open(dir.path().join("ck")).unwrap();
        let mut got = BTreeMap::new();
        records(
            &snapshot,
            &DumpFilter {
                uid: Some("limits".into()),
                state: Some("limits".into()),
                ..DumpFilter::default()
            },
            |r| {
                assert_eq!(r.mode.as_deref(), Some("broadcast"));
                let k = r.key.unwrap().as_str().unwrap().to_string();
                assert!(got.insert(k, r.value.unwrap().as_i64().unwrap()).is_none());
                Ok(())
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(got, expect, "rocksdb: {rocksdb}");
    }
}

/// Emits `(key, timestamp)` when a timer fires; counts records in `seen`.
#[derive(Default)]
struct Fires(Option<Rc<dyn ValueState<u64>>>);

impl KeyedProcessFunction<String, (String, i64), (String, i64)> for Fires {
    fn open(&mut self, ctx: &OpenContext<'_, String>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("seen"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        _: (String, i64),
        _: &mut ProcessContext<'_, String, (String, i64)>,
    ) -> Result<(), RuntimeError> {
        let s = opened(&self.0)?;
        s.update(s.value()?.unwrap_or(0) + 1)?;
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut TimerContext<'_, String, (String, i64)>,
    ) -> Result<(), RuntimeError> {
        let key = ctx.current_key().clone();
        ctx.collect((key, ts));
        Ok(())
    }
}

#[test]
fn bootstrapped_timers_fire_in_the_restored_job() {
    for rocksdb in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<String> = (0..25).map(|i| format!("k{i}")).collect();
        let mut b = Bootstrap::new(128, 2).unwrap();
        b.value_state("fires", "seen", keys.iter().map(|k| (k.clone(), 0u64)))
            .unwrap();
        b.timers(
            "fires",
            true,
            keys.iter()
                .enumerate()
                .flat_map(|(i, k)| [(k.clone(), 100 + i as i64), (k.clone(), 5000)]),
        )
        .unwrap();
        let sp = b.write(&dir.path().join("boot")).unwrap().path;
        let config = JobConfig::default()
            .workers(3)
            .backend(common::backend(dir.path(), rocksdb))
            .checkpointing(
                CheckpointConfig::local(dir.path().join("ck"), Duration::from_millis(20))
                    .unwrap()
                    .restore(RestoreFrom::Path(sp.into())),
            );
        let input: Vec<(String, i64)> = (0..200).map(|i| (format!("k{}", i % 30), i)).collect();
        let out = execute(config, move |job| {
            job.source_vec(
                input.clone(),
                |(_, t)| *t,
                WatermarkStrategy::BoundedOutOfOrderness(0),
            )
            .uid("events")
            .key_by(|(k, _): &(String, i64)| k.clone())
            .process(Fires::default())
            .uid("fires")
            .collect()
        })
        .unwrap();
        let mut fired: Vec<(String, i64)> = out.into_iter().flatten().collect();
        fired.sort();
        let mut expect: Vec<(String, i64)> = keys
            .iter()
            .enumerate()
            .flat_map(|(i, k)| [(k.clone(), 100 + i as i64), (k.clone(), 5000)])
            .collect();
        expect.sort();
        assert_eq!(
            fired, expect,
            "rocksdb: {rocksdb}: each bootstrapped timer fires once"
        );
    }
}

/// A sliced sliding window leaves no slice behind: each slice is cleared with the
/// last window it is in, so the final checkpoint (taken after the end of input fired
/// and cleaned up every window) holds no `_window_slices` entry, on both backends.
#[test]
fn sliced_windows_leave_no_slices_behind() {
    for rocksdb in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = JobConfig::default()
            .workers(2)
            .backend(common::backend(dir.path(), rocksdb))
            .checkpointing(
                CheckpointConfig::local(dir.path().join("ck"), Duration::from_millis(20)).unwrap(),
            );
        let input: Vec<(String, i64)> = (0..400)
            .map(|i| (format!("k{}", i % 5), (i * 7) % 300))
            .collect();
        let out = execute(config, move |job| {
            job.source_vec(
                input.clone(),
                |r: &(String, i64)| r.1,
                WatermarkStrategy::BoundedOutOfOrderness(50),
            )
            .key_by(|r: &(String, i64)| r.0.clone())
            .window(WindowAssigner::sliding(20, 5))
            .allowed_lateness(10)
            .sliced()
            .reduce(|a, b| (a.0.clone(), a.1.max(b.1)))
            .uid("slices")
            .collect()
        })
        .unwrap();
        assert!(out.into_iter().flatten().count() > 0, "windows fired");
        let snapshot = Snapshot::open(dir.path().join("ck")).unwrap();
        let mut left: BTreeMap<String, usize> = BTreeMap::new();
        snapshot
            .for_each_entry("slices", None, |meta, _, _| {
                *left.entry(meta.name.clone()).or_default() += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(
            left.get("_window_slices"),
            None,
            "rocksdb: {rocksdb}: {left:?}"
        );
    }
}

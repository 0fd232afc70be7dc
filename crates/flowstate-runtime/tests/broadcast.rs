//! The broadcast pattern: every worker ends with the same broadcast state and keyed
//! records see it; broadcast records of a watermark epoch apply before keyed records of
//! that epoch on every worker, so results repeat across worker counts and backends.
//! (That the keyed side cannot write is a `compile_fail` doctest in `broadcast/mod.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use flowstate_core::descriptor::{MapStateDescriptor, ValueStateDescriptor};
use flowstate_core::state::ValueState;
use flowstate_runtime::checkpoint::{SavepointFormat, read_metadata, request_savepoint};
use flowstate_runtime::{
    BroadcastContext, CheckpointConfig, JobConfig, KeyedBroadcastProcessFunction, OpenContext,
    ReadOnlyContext, RestoreFrom, RuntimeError, WatermarkStrategy, execute, opened,
};

/// A rule update: set `limit` for a rule name, or remove it when negative.
type Rule = (String, i64, i64); // name, limit, event time
type Tx = (u32, i64, i64); // account, amount, event time

fn rules_desc() -> MapStateDescriptor<String, i64> {
    MapStateDescriptor::new("rules")
}

/// Alerts when an amount exceeds a rule's limit; "probe" accounts (>= 1000) emit the
/// whole rule set instead. Keeps a per-account count in keyed state.
#[derive(Default)]
struct Rules {
    count: Option<Rc<dyn ValueState<u64>>>,
}

impl KeyedBroadcastProcessFunction<u32, Tx, Rule, String> for Rules {
    fn open(&mut self, ctx: &OpenContext<'_, u32>) -> Result<(), RuntimeError> {
        self.count = Some(ctx.value_state(&ValueStateDescriptor::new("count"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        (account, amount, ts): Tx,
        ctx: &mut ReadOnlyContext<'_, u32, String>,
    ) -> Result<(), RuntimeError> {
        let count = opened(&self.count)?;
        let n = count.value()?.unwrap_or(0) + 1;
        count.update(n)?;
        let mut rules = ctx.broadcast_state(&rules_desc())?.entries()?;
        rules.sort();
        if account >= 1000 {
            ctx.collect(format!("{rules:?}"));
            return Ok(());
        }
        for (name, limit) in rules {
            if amount > limit {
                ctx.collect(format!(
                    "alert {account} #{n} {amount}@{ts} > {name}={limit}"
                ));
            }
        }
        Ok(())
    }
    fn process_broadcast_element(
        &mut self,
        (name, limit, _): Rule,
        ctx: &mut BroadcastContext<'_, String>,
    ) -> Result<(), RuntimeError> {
        let state = ctx.broadcast_state(&rules_desc())?;
        if limit < 0 {
            flowstate_core::state::MapState::remove(&*state, &name)?;
        } else {
            flowstate_core::state::MapState::put(&*state, name, limit)?;
        }
        Ok(())
    }
}

/// Rules and transactions are read split across workers (`split`) or by worker 0 alone.
fn run(
    config: JobConfig,
    rules: Vec<Rule>,
    txs: Vec<Tx>,
    strategy: WatermarkStrategy,
    split: bool,
) -> Vec<Vec<String>> {
    execute(config, move |job| {
        let (rules, txs) = if split {
            (
                job.source_vec(rules.clone(), |r: &Rule| r.2, strategy),
                job.source_vec(txs.clone(), |t: &Tx| t.2, strategy),
            )
        } else {
            (
                job.source_vec_unsplit(rules.clone(), |r: &Rule| r.2, strategy),
                job.source_vec_unsplit(txs.clone(), |t: &Tx| t.2, strategy),
            )
        };
        txs.key_by(|t: &Tx| t.0)
            .connect(rules.broadcast())
            .process(Rules::default())
            .collect()
    })
    .unwrap()
}

#[test]
fn every_worker_sees_the_same_broadcast_state() {
    let rules: Vec<Rule> = vec![
        ("small".into(), 10, 0),
        ("big".into(), 1000, 0),
        ("small".into(), 20, 0), // update
        ("tmp".into(), 5, 0),
        ("tmp".into(), -1, 0), // removal
    ];
    let probes: Vec<Tx> = (1000..1060).map(|a| (a, 0, 0)).collect();
    let dir = tempfile::tempdir().unwrap();
    for backend in common::backends(dir.path()) {
        let per_worker = run(
            JobConfig::default().workers(3).backend(backend),
            rules.clone(),
            probes.clone(),
            WatermarkStrategy::None,
            true,
        );
        let expect = format!(
            "{:?}",
            vec![("big".to_string(), 1000), ("small".to_string(), 20)]
        );
        assert_eq!(per_worker.len(), 3);
        for (w, outputs) in per_worker.iter().enumerate() {
            assert!(!outputs.is_empty(), "worker {w} got no probe");
            for o in outputs {
                assert_eq!(o, &expect, "worker {w}");
            }
        }
        assert_eq!(per_worker.iter().map(Vec::len).sum::<usize>(), probes.len());
    }
}

#[test]
fn broadcast_epochs_apply_before_keyed_records_of_the_same_epoch() {
    // Rules: limit 100, then limit 10 at event time 40 (sent after watermark 4, in
    // effect from epoch 40). Transactions are sent in epochs 0, 10, 20, 50: only the
    // last sees limit 10, whichever worker holds its key.
    let rules: Vec<Rule> = vec![
        ("limit".into(), 100, 0),
        ("limit".into(), 100, 5),
        ("limit".into(), 10, 40),
    ];
    let txs: Vec<Tx> = vec![(1, 50, 10), (1, 50, 20), (2, 50, 50), (1, 50, 60)];
    let expect: Vec<String> = vec!["alert 1 #3 50@60 > limit=10".into()];
    let dir = tempfile::tempdir().unwrap();
    for workers in [1, 3] {
        for backend in common::backends(dir.path()) {
            let mut got: Vec<String> = run(
                JobConfig::default().workers(workers).backend(backend),
                rules.clone(),
                txs.clone(),
                WatermarkStrategy::BoundedOutOfOrderness(0),
                false,
            )
            .concat();
            got.sort();
            assert_eq!(got, expect, "{workers} workers");
        }
    }
}

/// The rules job with checkpoints, throttled so that a stop lands mid-run: 24,000
/// transactions of 40 accounts (split across workers) against a limit that changes
/// every 100 ms of event time (read on worker 0), alerts committed to `out`.
fn checkpointed(ck: &Path, out: &Path, workers: usize, restore: RestoreFrom) {
    let checkpoints = CheckpointConfig::local(ck, Duration::from_millis(20))
        .unwrap()
        .restore(restore);
    let out = out.to_path_buf();
    execute(
        JobConfig::default()
            .workers(workers)
            .checkpointing(checkpoints),
        move |job| {
            let rules: Vec<Rule> = (0..60)
                .map(|j| ("limit".to_string(), 10 + (j * 13) % 80, j * 100))
                .collect();
            let txs: Vec<Tx> = (0..24_000)
                .map(|i| ((i % 40) as u32, (i * 37) % 100, i))
                .collect();
            let strategy = WatermarkStrategy::BoundedOutOfOrderness(0);
            let rules = job.source_vec_unsplit(rules, |r: &Rule| r.2, strategy);
            let mut n = 0u64;
            let txs = job.source_vec(txs, |t: &Tx| t.2, strategy).map(move |t| {
                n += 1;
                if n.is_multiple_of(4) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                t
            });
            txs.key_by(|t: &Tx| t.0)
                .connect(rules.broadcast())
                .process(Rules::default())
                .write_text_files(&out, |l: &String| l.clone());
        },
    )
    .unwrap();
}

fn committed(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(out).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("part-") {
            lines.extend(
                std::fs::read_to_string(e.path())
                    .unwrap()
                    .lines()
                    .map(String::from),
            );
        }
    }
    lines.sort();
    lines
}

/// Runs the job for a while, then stops it with a savepoint; returns the savepoint.
fn stop_midway(ck: &Path, out: &Path, workers: usize, restore: RestoreFrom) -> PathBuf {
    let before: usize = std::fs::read_dir(ck.join("savepoints")).map_or(0, |d| d.count());
    let watcher = {
        let ck = ck.to_path_buf();
        std::thread::spawn(move || {
            // The run takes seconds (throttled); its sources stop reading at the
            // savepoint's cut, so the savepoint completes whenever it is taken.
            std::thread::sleep(Duration::from_millis(300));
            request_savepoint(&ck, SavepointFormat::Canonical, true).unwrap();
        })
    };
    checkpointed(ck, out, workers, restore);
    watcher.join().unwrap();
    let mut sps: Vec<PathBuf> = std::fs::read_dir(ck.join("savepoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("_metadata").exists())
        .collect();
    assert_eq!(
        sps.len(),
        before + 1,
        "the job ended before the stop: {:?} {:?}",
        std::fs::read_dir(ck)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>(),
        sps
    );
    sps.sort_by_key(|p| read_metadata(p).unwrap().id);
    sps.pop().unwrap()
}

#[test]
fn broadcast_state_survives_stops_and_rescaling_exactly_once() {
    let reference_dir = tempfile::tempdir().unwrap();
    checkpointed(
        &reference_dir.path().join("ck"),
        &reference_dir.path().join("out"),
        2,
        RestoreFrom::Latest,
    );
    let expected = committed(&reference_dir.path().join("out"));
    assert!(expected.len() > 1000, "{} alerts", expected.len());

    let dir = tempfile::tempdir().unwrap();
    let (ck, out) = (dir.path().join("ck"), dir.path().join("out"));
    // Stop, resume at the same parallelism (each instance its own copy) and stop
    // again, then resume rescaled 2 -> 3 (every instance the lowest-watermark copy).
    let first = stop_midway(&ck, &out, 2, RestoreFrom::Latest);
    let partial = committed(&out).len();
    assert!(
        partial < expected.len(),
        "{partial} lines at the first stop"
    );
    let second = stop_midway(&ck, &out, 2, RestoreFrom::Path(first.into()));
    assert!(committed(&out).len() < expected.len());
    checkpointed(&ck, &out, 3, RestoreFrom::Path(second.into()));
    assert_eq!(committed(&out), expected);
}

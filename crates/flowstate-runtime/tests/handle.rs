//! The job handle: savepoints from code while the job runs, stop with a savepoint,
//! resume from it at another parallelism with exact output, cancel, status.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
use flowstate_runtime::checkpoint::{SavepointFormat, read_metadata};
use flowstate_runtime::{
    BackendChoice, CheckpointConfig, JobConfig, JobStatus, KeyedProcessFunction, OpenContext,
    ProcessContext, RestoreFrom, RuntimeError, SnapshotKind, WatermarkStrategy, execute, opened,
    spawn,
};

/// Running sum per key, written as `key event sum` (the order of a key's events
/// depends on the parallelism, so the check is on events and final sums).
#[derive(Default)]
struct Sum(Option<Rc<dyn ValueState<u64>>>);

impl KeyedProcessFunction<u64, (u64, u64), String> for Sum {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("sum"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        (key, v): (u64, u64),
        ctx: &mut ProcessContext<'_, u64, String>,
    ) -> Result<(), RuntimeError> {
        let s = opened(&self.0)?;
        let sum = s.value()?.unwrap_or(0) + v;
        s.update(sum)?;
        ctx.collect(format!("{key} {v} {sum}"));
        Ok(())
    }
}

/// RocksDB (its databases under `dir`, per worker count) or the heap.
fn backend(dir: &Path, workers: usize, rocksdb: bool) -> BackendChoice {
    #[cfg(feature = "rocksdb")]
    if rocksdb {
        let local = dir.join(format!("rocks-{workers}"));
        return BackendChoice::RocksDb(flowstate_runtime::RocksDbOptions::new(local));
    }
    assert!(!rocksdb, "a RocksDB run in a build without RocksDB");
    let _ = (dir, workers);
    BackendChoice::Heap
}

const EVENTS: u64 = 20_000;
const KEYS: u64 = 13;

fn config(dir: &Path, workers: usize, restore: RestoreFrom, rocksdb: bool) -> JobConfig {
    let backend = backend(dir, workers, rocksdb);
    JobConfig::default()
        .workers(workers)
        .backend(backend)
        .checkpointing(
            CheckpointConfig::local(dir.join("ck"), Duration::from_millis(50))
                .unwrap()
                .restore(restore),
        )
}

/// The job: a throttled source (1 ms every 20 events per worker), a running sum per
/// key, the file sink.
fn build(out: std::path::PathBuf) -> impl Fn(&mut flowstate_runtime::Job<'_>) + Send + Sync {
    move |job| {
        let events: Vec<(u64, u64)> = (0..EVENTS).map(|i| (i % KEYS, i)).collect();
        let mut seen = 0u64;
        job.source_vec(events, |e| e.1 as i64, WatermarkStrategy::None)
            .uid("events")
            .map(move |e| {
                seen += 1;
                if seen.is_multiple_of(20) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                e
            })
            .key_by(|e| e.0)
            .process(Sum::default())
            .uid("sums")
            .write_text_files(&out, |l: &String| l.clone())
            .uid("out");
    }
}

fn committed(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(out).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("part-") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            lines.extend(text.lines().map(String::from));
        }
    }
    lines.sort();
    lines
}

/// `got` equals `want` as multisets; on failure says what is missing and extra.
fn assert_exact(got: Vec<String>, want: Vec<String>) {
    if got == want {
        return;
    }
    let mut missing = want.clone();
    for g in &got {
        if let Some(i) = missing.iter().position(|w| w == g) {
            missing.swap_remove(i);
        }
    }
    let mut extra = got.clone();
    for w in &want {
        if let Some(i) = extra.iter().position(|g| g == w) {
            extra.swap_remove(i);
        }
    }
    missing.truncate(5);
    extra.truncate(5);
    panic!(
        "{} lines, expected {}; missing e.g. {missing:?}; extra e.g. {extra:?}",
        got.len(),
        want.len()
    );
}

/// Every event once, and per key the largest running sum is the key's total.
fn assert_complete(lines: Vec<String>) {
    let mut events = Vec::new();
    let mut max = [0u64; KEYS as usize];
    for l in &lines {
        let f: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
        events.push(format!("{} {}", f[0], f[1]));
        max[f[0] as usize] = max[f[0] as usize].max(f[2]);
    }
    events.sort();
    let mut want: Vec<String> = (0..EVENTS).map(|i| format!("{} {i}", i % KEYS)).collect();
    want.sort();
    assert_exact(events, want);
    for k in 0..KEYS {
        let total: u64 = (0..EVENTS).filter(|i| i % KEYS == k).sum();
        assert_eq!(max[k as usize], total, "key {k}");
    }
}

fn savepoint_stop_and_resume(rocksdb: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let job = spawn(
        config(tmp.path(), 2, RestoreFrom::Latest, rocksdb),
        build(out.clone()),
    )
    .unwrap();
    let h = job.handle.clone();
    let running = h.wait_for(Duration::from_secs(60), |s| {
        matches!(s, JobStatus::Running { .. })
    });
    assert_eq!(running, JobStatus::Running { restored: None });
    // A savepoint while the job goes on.
    let sp = h.trigger_savepoint(SavepointFormat::Canonical).unwrap();
    let path = sp.path.clone().unwrap();
    assert_eq!(sp.location, format!("savepoints/sp-{}", sp.id));
    let meta = read_metadata(&path).unwrap();
    assert_eq!(meta.kind, SnapshotKind::Savepoint);
    assert!(meta.operators["sums"].user_uid);
    assert!(!meta.finished);
    // Then stop with another.
    let stop = h.stop_with_savepoint(SavepointFormat::Canonical).unwrap();
    assert!(stop.id > sp.id);
    job.join().unwrap();
    assert_eq!(h.status(), JobStatus::Stopped);
    let partial = committed(&out);
    assert!(
        !partial.is_empty() && partial.len() < EVENTS as usize,
        "stopped mid-run: {} lines",
        partial.len()
    );
    // Resume from the stop savepoint at another parallelism: exact output.
    execute(
        config(
            tmp.path(),
            3,
            RestoreFrom::Path(stop.path.unwrap().into()),
            rocksdb,
        ),
        build(out.clone()),
    )
    .unwrap();
    assert_complete(committed(&out));
    // A finished job takes no savepoint.
    assert!(h.trigger_savepoint(SavepointFormat::Canonical).is_err());
}

#[test]
fn savepoint_stop_and_resume_at_another_parallelism_heap() {
    savepoint_stop_and_resume(false);
}

#[cfg(feature = "rocksdb")]
#[test]
fn savepoint_stop_and_resume_at_another_parallelism_rocksdb() {
    savepoint_stop_and_resume(true);
}

#[test]
fn cancel_stops_the_job_and_keeps_committed_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let job = spawn(
        config(tmp.path(), 2, RestoreFrom::Latest, false),
        build(out.clone()),
    )
    .unwrap();
    let h = job.handle.clone();
    h.wait_for(Duration::from_secs(60), |s| {
        matches!(s, JobStatus::Running { .. })
    });
    h.cancel();
    assert!(matches!(job.join(), Err(RuntimeError::Cancelled)));
    assert_eq!(h.status(), JobStatus::Cancelled);
    // Resuming from the last checkpoint completes the output exactly.
    execute(
        config(tmp.path(), 1, RestoreFrom::Latest, false),
        build(out.clone()),
    )
    .unwrap();
    assert_complete(committed(&out));
}

#[test]
fn spawning_needs_checkpointing() {
    let r = spawn(JobConfig::default(), |_job| {});
    assert!(matches!(r, Err(RuntimeError::Config(_))));
}

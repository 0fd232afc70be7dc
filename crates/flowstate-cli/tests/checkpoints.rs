//! Checkpoint retention, fallback from a damaged newest checkpoint, and savepoints,
//! through the `flowstate` binary on real directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use flowstate_runtime::checkpoint::list_checkpoints;
use flowstate_storage::ObjectCheckpointStorage;

mod common;
use common::committed;

const EVENTS: u64 = 40_000;

fn job(dir: &Path, workers: usize, backend: &str, interval_ms: u64) -> Command {
    slow_job(dir, workers, backend, interval_ms, 100)
}

/// The job, sleeping 1 ms every `throttle` events per worker.
fn slow_job(dir: &Path, workers: usize, backend: &str, interval_ms: u64, throttle: u64) -> Command {
    common::job(dir, workers, backend, interval_ms, EVENTS, throttle)
}

/// `flowstate savepoint CK ARGS`: the savepoint's directory, once written.
fn savepoint(ck: &Path, args: &[&str]) -> PathBuf {
    let sp = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .arg("savepoint")
        .arg(ck)
        .args(args)
        .output()
        .unwrap();
    assert!(
        sp.status.success(),
        "{}",
        String::from_utf8_lossy(&sp.stderr)
    );
    PathBuf::from(String::from_utf8(sp.stdout).unwrap().trim())
}

/// Runs the job to its end from the snapshot at `from`, on `workers` and `backend`.
fn resume_from(dir: &Path, workers: usize, backend: &str, from: &Path) {
    let mut c = job(dir, workers, backend, 50);
    c.arg("--from").arg(from);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn reference() -> Vec<String> {
    common::reference(EVENTS)
}

/// Complete checkpoints' directories.
fn complete(ck: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(ck)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().unwrap().to_string_lossy().starts_with("chk-")
                        && p.join("_metadata").exists()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|p| {
        p.file_name().unwrap().to_string_lossy()[4..]
            .parse::<u64>()
            .unwrap()
    });
    v
}

/// Runs until `ready` holds, then SIGKILLs the job.
fn kill_when(mut child: Child, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "job never got there");
        if let Some(status) = child.try_wait().unwrap() {
            let mut log = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut log);
            }
            panic!("job ended too early ({status}):\n{log}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn retention_keeps_two_checkpoints_and_only_their_shared_files() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    // Run to the end: retention after the final checkpoint is done before the job
    // exits (a kill during retention would see three checkpoints for a moment).
    let mut c = slow_job(dir.path(), 2, "rocksdb", 30, 10);
    c.args(["--retained", "2"]);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let storage = ObjectCheckpointStorage::local(&ck).unwrap();
    let listed: Vec<_> = list_checkpoints(&storage)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(listed.len() <= 2, "{} checkpoints kept", listed.len());
    assert!(listed[0].id >= 4);
    // Older chk- directories are gone. A kill in the middle of retention may leave one
    // whose `_metadata` was already deleted (metadata goes first): that is not a
    // checkpoint, and the next start removes it.
    let oldest = listed.iter().map(|m| m.id).min().unwrap();
    for e in std::fs::read_dir(&ck).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(id) = name.strip_prefix("chk-") {
            assert!(
                id.parse::<u64>().unwrap() >= oldest || !e.path().join("_metadata").exists(),
                "{name} survived retention"
            );
        }
    }
    // Every shared file is referenced by a kept checkpoint, and every reference exists.
    let referenced: BTreeSet<String> = listed
        .iter()
        .flat_map(|m| m.keyed_handles())
        .flat_map(|h| h.shared_files.into_iter().map(|f| f.path))
        .collect();
    assert!(
        !referenced.is_empty(),
        "incremental checkpoints share files"
    );
    let present: BTreeSet<String> = std::fs::read_dir(ck.join("shared"))
        .unwrap()
        .flatten()
        .map(|e| format!("shared/{}", e.file_name().to_string_lossy()))
        .collect();
    assert_eq!(present, referenced);
}

fn fallback(damage: impl Fn(&Path)) {
    let expected = reference();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let mut c = job(dir.path(), 2, "heap", 30);
    c.args(["--retained", "2"]);
    kill_when(c.spawn().unwrap(), || complete(&ck).len() >= 2);
    let newest = complete(&ck).pop().unwrap();
    damage(&newest);
    let mut c = job(dir.path(), 2, "heap", 30);
    c.args(["--retained", "2"]);
    let out = c.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("falling back"),
        "no fallback in the log:\n{log}"
    );
    // Falling back behind a checkpoint whose output was committed repeats that
    // interval's output (as in Flink); nothing may be lost.
    let got: BTreeSet<String> = committed(&dir.path().join("out")).into_iter().collect();
    let want: BTreeSet<String> = expected.into_iter().collect();
    assert_eq!(got, want);
}

fn keyed_file(chk: &Path) -> PathBuf {
    std::fs::read_dir(chk)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "kgs"))
        .unwrap()
}

#[test]
fn truncated_newest_checkpoint_falls_back_to_the_previous() {
    fallback(|chk| {
        let f = keyed_file(chk);
        let len = std::fs::metadata(&f).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    });
}

#[test]
fn corrupted_newest_checkpoint_falls_back_to_the_previous() {
    fallback(|chk| {
        // Same size, flipped bytes: only the format's checksums can tell.
        let f = keyed_file(chk);
        let mut bytes = std::fs::read(&f).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0xa5;
        }
        std::fs::write(&f, bytes).unwrap();
    });
}

#[test]
fn savepoint_by_cli_then_restore_at_another_parallelism() {
    let expected = reference();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    // No periodic checkpoint in this run: the savepoint is the only snapshot.
    let mut child = slow_job(dir.path(), 4, "rocksdb", 1_000_000, 5)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let path = savepoint(&ck, &[]);
    assert!(path.join("_metadata").exists());
    assert!(
        child.try_wait().unwrap().is_none(),
        "the job ended before the kill"
    );
    kill_when(child, || true);
    let meta = flowstate_runtime::checkpoint::read_metadata(&path).unwrap();
    assert_eq!(meta.kind, flowstate_runtime::SnapshotKind::Savepoint);
    // Restore on the heap backend at 3 workers: savepoints are canonical.
    resume_from(dir.path(), 3, "heap", &path);
    assert_eq!(committed(&dir.path().join("out")), expected);
    // Savepoints are never deleted by the job's retention.
    assert!(path.join("_metadata").exists());
}

#[test]
fn stop_with_savepoint_then_resume_rescaled() {
    let expected = reference();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let mut child = slow_job(dir.path(), 2, "heap", 100, 5).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let path = savepoint(&ck, &["--stop"]);
    // The job stops by itself, successfully, without finishing its input.
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let meta = flowstate_runtime::checkpoint::read_metadata(&path).unwrap();
    assert_eq!(meta.kind, flowstate_runtime::SnapshotKind::Savepoint);
    assert!(!meta.finished);
    let stopped = committed(&dir.path().join("out"));
    assert!(
        !stopped.is_empty() && stopped.len() < expected.len(),
        "{} of {} lines at the stop",
        stopped.len(),
        expected.len()
    );
    // Everything committed at the stop is output of the uninterrupted run.
    assert!(stopped.iter().all(|l| expected.binary_search(l).is_ok()));
    // Resume from the savepoint at 3 workers: the rest, exactly once.
    resume_from(dir.path(), 3, "heap", &path);
    assert_eq!(committed(&dir.path().join("out")), expected);
}

#[test]
fn native_savepoint_restores_rescaled_on_rocksdb() {
    let expected = reference();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let mut child = slow_job(dir.path(), 4, "rocksdb", 1_000_000, 5)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let path = savepoint(&ck, &["--native", "--stop"]);
    assert!(child.wait().unwrap().success());
    let meta = flowstate_runtime::checkpoint::read_metadata(&path).unwrap();
    assert_eq!(meta.kind, flowstate_runtime::SnapshotKind::NativeSavepoint);
    // Self-contained: every RocksDB file the keyed state needs is under the savepoint.
    let keyed: Vec<_> = meta.operators.values().flat_map(|o| &o.keyed).collect();
    assert!(!keyed.is_empty());
    for h in &keyed {
        assert_eq!(
            h.format,
            flowstate_core::snapshot::SnapshotFormat::RocksDbNative
        );
        for f in &h.shared_files {
            assert!(f.path.starts_with(&meta.location), "{}", f.path);
        }
    }
    // Restore at 2 workers (RocksDB clips and merges the native files).
    resume_from(dir.path(), 2, "rocksdb", &path);
    assert_eq!(committed(&dir.path().join("out")), expected);
    assert!(path.join("_metadata").exists());
}

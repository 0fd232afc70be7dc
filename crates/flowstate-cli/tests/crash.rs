//! Crash tests of the checkpointing runtime through the `flowstate` binary: a job with
//! keyed state, event-time timers and the transactional file sink is killed with
//! SIGKILL at many moments (random ones, and chosen points inside checkpoints) and
//! restarted, also with other worker counts; its committed output must equal a run
//! that never failed, line for line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod common;
use common::committed;

const EVENTS: u64 = 60_000;

fn job(dir: &Path, workers: usize, backend: &str, interval_ms: u64) -> Command {
    common::job(dir, workers, backend, interval_ms, EVENTS, 150)
}

fn reference() -> Vec<String> {
    common::reference(EVENTS)
}

/// A tiny deterministic generator for kill delays.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn wait_or_kill(mut child: Child, after: Duration) -> bool {
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success() || status.code().is_none(),
                "job failed: {status}"
            );
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    false
}

/// Kills the job at least `kills` times: at random moments, and at chosen points of
/// the checkpoint protocol (a task's files written but not acknowledged, before and
/// after `_metadata`, between a sink's commit renames); then lets it finish.
fn crash_many_times(backend: &str, kills: usize, workers: &[usize]) -> (usize, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let points = [
        "snapshot-written:3",
        "before-metadata:2",
        "after-metadata:2",
        "sink-commit:3",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut killed = 0;
    let mut run = 0;
    loop {
        let w = workers[run % workers.len()];
        let mut cmd = job(dir.path(), w, backend, 40);
        let done = if killed >= kills {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "final run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            true
        } else if run % 3 == 2 {
            // A chosen point: the process kills itself there with SIGKILL.
            cmd.env("FLOWSTATE_FAILPOINT", points[(run / 3) % points.len()]);
            let out = cmd.output().unwrap();
            if out.status.success() {
                true
            } else {
                killed += 1;
                false
            }
        } else {
            let after = Duration::from_millis(80 + next(&mut seed) % 400);
            let finished = wait_or_kill(cmd.spawn().unwrap(), after);
            if !finished {
                killed += 1;
            }
            finished
        };
        run += 1;
        if done && killed >= kills {
            break;
        }
        if done {
            // It finished before the kill: start over on fresh directories so every
            // kill lands in a running job.
            std::fs::remove_dir_all(dir.path().join("ck")).unwrap();
            std::fs::remove_dir_all(dir.path().join("out")).unwrap();
        }
    }
    // Retention kept exactly the final checkpoint (retained: 1), also of the
    // checkpoints earlier runs completed but were killed before retiring.
    let ck = dir.path().join("ck");
    let chk: Vec<String> = std::fs::read_dir(&ck)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    let contents: Vec<Vec<String>> = chk
        .iter()
        .map(|c| {
            std::fs::read_dir(ck.join(c))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .collect();
    assert_eq!(chk.len(), 1, "checkpoints left: {chk:?} {contents:?}");
    (killed, committed(&dir.path().join("out")))
}

fn check(backend: &str, workers: &[usize]) {
    let expected = reference();
    let (kills, got) = crash_many_times(backend, 20, workers);
    assert!(kills >= 20);
    let missing = expected
        .iter()
        .filter(|l| got.binary_search(l).is_err())
        .count();
    let extra = got.len() as i64 - expected.len() as i64;
    eprintln!(
        "{backend}: {kills} kills, {} lines, {missing} missing, {extra} extra",
        got.len()
    );
    assert_eq!(
        got, expected,
        "committed output differs after {kills} kills"
    );
}

#[test]
fn exactly_once_under_sigkill_heap() {
    check("heap", &[2]);
}

#[test]
fn exactly_once_under_sigkill_rocksdb() {
    check("rocksdb", &[2]);
}

#[test]
fn rescale_on_restart_4_2_3_keeps_every_key_and_timer_once() {
    // Each restart takes another worker count; kills land mid-run.
    check("rocksdb", &[4, 2, 3]);
    check("heap", &[4, 2, 3]);
}

//! Fault injection: the built-in job runs on checkpoint storage that fails or delays
//! every k-th call (`--inject-storage-faults seed:every:delay_ms`, seeded), on both
//! backends. After every run:
//! - every complete checkpoint left in the directory has all its files, with their
//!   recorded sizes (`flowstate checkpoints` lists none as unusable): 0 files deleted
//!   that a complete checkpoint references;
//! - the job failed exactly when it had to: it succeeded only if no more than the
//!   tolerated 3 checkpoints failed in a row (a failed final checkpoint within the
//!   tolerance restarts the job from its latest checkpoint), and when it failed, it
//!   said why (more failures in a row than tolerated, or storage kept failing where
//!   nothing can be tolerated: listing or reading checkpoints at start, after the
//!   retries) — never a silent fresh start, never a fallback past a checkpoint that
//!   only could not be read for a moment;
//! - resumed without faults, the committed output equals an uninterrupted run's.
//!
//! CI runs a few seeds per backend; `FLOWSTATE_FAULT_RUNS=200` runs that many seeds
//! (the soak) and prints the totals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;

use common::{committed, job, reference};

const EVENTS: u64 = 300_000;
const TOLERABLE: usize = 3;

#[derive(Debug, Default)]
struct Totals {
    runs: usize,
    succeeded: usize,
    failed_in_a_row: usize,
    final_restarts: usize,
    failed_on_storage: usize,
    faults_failed: usize,
    faults_delayed: usize,
    checkpoints_completed: usize,
    checkpoints_failed: usize,
    resumed_from_checkpoint: usize,
    output_differences: usize,
}

/// Checkpoint outcomes in log order: `true` complete, `false` failed (declined,
/// timed out, or failed to complete).
fn outcomes(log: &str) -> Vec<(u64, bool)> {
    let mut out = Vec::new();
    // The coordinator's own lines only (a restart's message repeats the failure).
    for line in log
        .lines()
        .filter(|l| l.contains("checkpoint::coordinator"))
    {
        let id = |rest: &str| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse::<u64>().ok())
        };
        if let Some(rest) = line
            .split("checkpoint ")
            .nth(1)
            .or(line.split("savepoint ").nth(1))
        {
            let Some(id) = id(rest) else { continue };
            if line.contains(&format!("{id} complete")) {
                out.push((id, true));
            } else if line.contains(&format!("{id} declined"))
                || line.contains(&format!("{id} failed"))
                || line.contains(&format!("{id} timed out"))
            {
                out.push((id, false));
            }
        }
    }
    out
}

fn max_failures_in_a_row(outcomes: &[(u64, bool)]) -> usize {
    let (mut run, mut max) = (0, 0);
    for (_, ok) in outcomes {
        run = if *ok { 0 } else { run + 1 };
        max = max.max(run);
    }
    max
}

/// One seeded run with faults, then (if it failed) a resume without faults.
fn one(seed: u64, backend: &str, expected: &[String], t: &mut Totals) {
    let tmp = tempfile::tempdir().unwrap();
    let every = 6 + seed % 11;
    let mut c = job(tmp.path(), 2, backend, 20, EVENTS, 0);
    c.args(["--inject-storage-faults", &format!("{seed}:{every}:40")])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    let o = c.output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    t.runs += 1;
    t.faults_failed += log.matches("injected storage fault: failure").count();
    t.faults_delayed += log.matches("injected storage fault: delay").count();
    let seen = outcomes(&log);
    t.checkpoints_completed += seen.iter().filter(|(_, ok)| *ok).count();
    t.checkpoints_failed += seen.iter().filter(|(_, ok)| !*ok).count();
    let in_a_row = max_failures_in_a_row(&seen);
    // A failed final checkpoint within the tolerance restarts the job in-process.
    t.final_restarts += log.matches("restarting from the latest checkpoint").count();
    let ctx = || format!("seed {seed} every {every} {backend}:\n{log}");
    if o.status.success() {
        t.succeeded += 1;
        assert!(
            in_a_row <= TOLERABLE,
            "succeeded after {in_a_row} failures in a row: {}",
            ctx()
        );
    } else if log.contains("checkpoints in a row failed") {
        t.failed_in_a_row += 1;
        assert!(
            in_a_row > TOLERABLE,
            "failed after only {in_a_row} in a row: {}",
            ctx()
        );
    } else {
        assert!(
            log.contains("injected fault"),
            "failed without an injected fault to blame: {}",
            ctx()
        );
        t.failed_on_storage += 1;
    }
    // Every complete checkpoint left is whole.
    let listing = std::process::Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .arg("checkpoints")
        .arg(tmp.path().join("ck"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.status.success(), "{}", ctx());
    assert!(!table.contains("unusable"), "{table}\n{}", ctx());
    let mut resumed = String::new();
    if !o.status.success() {
        let had_checkpoint = seen.iter().any(|(_, ok)| *ok);
        let o = job(tmp.path(), 2, backend, 20, EVENTS, 0)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        resumed = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "resume failed: {resumed}\n{}", ctx());
        if had_checkpoint {
            assert!(
                resumed.contains("restoring from checkpoint"),
                "a fresh start after checkpoints: {resumed}\n{}",
                ctx()
            );
            t.resumed_from_checkpoint += 1;
        }
    }
    let got = committed(&tmp.path().join("out"));
    if got != expected {
        t.output_differences += 1;
        // Kept for a post-mortem.
        let kept = tmp.keep();
        panic!(
            "committed output differs ({} lines, {} expected; kept in {}): {}\nresumed:\n{resumed}",
            got.len(),
            expected.len(),
            kept.display(),
            ctx()
        );
    }
}

#[test]
fn storage_faults_never_lose_a_checkpoint() {
    let first: u64 = std::env::var("FLOWSTATE_FAULT_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let runs: u64 = std::env::var("FLOWSTATE_FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let expected = reference(EVENTS);
    let mut totals = Totals::default();
    for seed in first..first + runs {
        let backend = if seed % 2 == 0 { "heap" } else { "rocksdb" };
        one(seed, backend, &expected, &mut totals);
    }
    println!("fault injection, {runs} seeded runs: {totals:#?}");
    assert!(totals.faults_failed > 0, "no fault was injected");
}

/// Errors in the synchronous part of a snapshot (e.g. RocksDB cannot write its local
/// checkpoint: a full disk) decline that checkpoint like a failed upload: within the
/// tolerance the job goes on and finishes exact; beyond it, it fails and resumes.
#[test]
fn synchronous_snapshot_errors_count_against_the_tolerance() {
    let expected = reference(EVENTS);
    for backend in ["rocksdb", "heap"] {
        // Hits 3 and 6 fail (of 2 workers' snapshots): two checkpoints in a row.
        let tmp = tempfile::tempdir().unwrap();
        let o = job(tmp.path(), 2, backend, 20, EVENTS, 0)
            .env("FLOWSTATE_ERRORPOINT", "sync-snapshot:3:6")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{backend}: {log}");
        assert_eq!(
            log.matches("synchronous part of the snapshot failed")
                .count(),
            2,
            "{backend}: {log}"
        );
        assert_eq!(committed(&tmp.path().join("out")), expected, "{backend}");

        // Every hit fails: the fourth failure in a row fails the job.
        let tmp = tempfile::tempdir().unwrap();
        let o = job(tmp.path(), 2, backend, 20, EVENTS, 0)
            .env("FLOWSTATE_ERRORPOINT", "sync-snapshot:1")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{backend}: {log}");
        assert!(
            log.contains("4 checkpoints in a row failed (tolerable: 3)"),
            "{log}"
        );
        let o = job(tmp.path(), 2, backend, 20, EVENTS, 0).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(committed(&tmp.path().join("out")), expected, "{backend}");
    }
}

/// A failed final checkpoint counts like any other: within the tolerance the job
/// restarts from its latest checkpoint (here: none yet, so from the start) and
/// finishes exact; every final checkpoint failing fails the job at the fourth.
#[test]
fn failed_final_checkpoint_restarts_within_the_tolerance() {
    let events = 3000;
    let expected = reference(events);
    for backend in ["heap", "rocksdb"] {
        let tmp = tempfile::tempdir().unwrap();
        // One checkpoint only: the final one (the interval is an hour).
        let o = job(tmp.path(), 2, backend, 3_600_000, events, 0)
            .env("FLOWSTATE_ERRORPOINT", "sync-snapshot:1:1")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{backend}: {log}");
        assert_eq!(
            log.matches("restarting from the latest checkpoint").count(),
            1,
            "{log}"
        );
        assert_eq!(committed(&tmp.path().join("out")), expected, "{backend}");

        let tmp = tempfile::tempdir().unwrap();
        let o = job(tmp.path(), 2, backend, 3_600_000, events, 0)
            .env("FLOWSTATE_ERRORPOINT", "sync-snapshot:1")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{backend}: {log}");
        assert_eq!(
            log.matches("restarting from the latest checkpoint").count(),
            3,
            "{log}"
        );
        assert!(
            log.contains("4 checkpoints in a row failed (tolerable: 3)"),
            "{log}"
        );
    }
}

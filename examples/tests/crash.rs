//! Crash test of `user-job`, a job written only against the public API (a
//! user-defined source, the file sink and the SQLite sink, the job harness): killed
//! with SIGKILL at random moments and at chosen points of the checkpoint protocol,
//! restarted each time at a random worker count, on both backends, with checkpoints
//! in a local directory and on a real S3-compatible server (`s3s-fs` on 127.0.0.1).
//! The committed output of both sinks must be exactly that of a run that never
//! failed: every line and every row once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::{Ck, harness_run_at, next, s3_server, wait_or_kill};

const SENSORS: u64 = 24;
const READINGS: u64 = 3000;

/// What an uninterrupted run commits: per sensor, (sensor, count, sum) after each
/// reading (the job's values, recomputed here).
fn expected() -> Vec<(u64, u64, u64)> {
    let mut rows = Vec::new();
    for s in 0..SENSORS {
        let mut sum = 0;
        for seq in 0..READINGS {
            sum += (s * 31 + seq * 7) % 100;
            rows.push((s, seq + 1, sum));
        }
    }
    rows.sort();
    rows
}

fn job(dir: &Path, ck: &Ck<'_>, workers: usize, backend: &str) -> Command {
    let mut c = harness_run_at(
        env!("CARGO_BIN_EXE_user-job"),
        dir,
        ck,
        workers,
        backend,
        40,
    );
    c.arg("--db")
        .arg(dir.join("out.db"))
        .args(["--sensors", &SENSORS.to_string()])
        .args(["--readings", &READINGS.to_string()])
        .args(["--throttle-every", "5"]);
    c
}

/// Committed lines of the file sink, parsed back into rows.
fn file_rows(out: &Path) -> Vec<(u64, u64, u64)> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(out).unwrap().flatten() {
        if !e.file_name().to_string_lossy().starts_with("part-") {
            continue;
        }
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            let mut f = line.split(' ');
            let s = f.next().unwrap().trim_start_matches('s').parse().unwrap();
            let n = f.next().unwrap().trim_start_matches("n=").parse().unwrap();
            let sum = f
                .next()
                .unwrap()
                .trim_start_matches("sum=")
                .parse()
                .unwrap();
            rows.push((s, n, sum));
        }
    }
    rows.sort();
    rows
}

/// Committed rows of the SQLite table.
fn db_rows(db: &Path) -> Vec<(u64, u64, u64)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut q = c.prepare("SELECT sensor, n, sum FROM totals").unwrap();
    let mut rows: Vec<(u64, u64, u64)> = q
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.sort();
    rows
}

/// `got` equals `want` (both sorted); on failure says what is missing and extra.
fn assert_exact(what: &str, got: &[(u64, u64, u64)], want: &[(u64, u64, u64)]) {
    if got == want {
        return;
    }
    let (mut i, mut j) = (0, 0);
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    while i < got.len() || j < want.len() {
        match (got.get(i), want.get(j)) {
            (Some(g), Some(w)) if g == w => {
                i += 1;
                j += 1;
            }
            (Some(g), Some(w)) if g < w => {
                extra.push(*g);
                i += 1;
            }
            (Some(_), Some(w)) | (None, Some(w)) => {
                missing.push(*w);
                j += 1;
            }
            (Some(g), None) => {
                extra.push(*g);
                i += 1;
            }
            (None, None) => break,
        }
    }
    panic!(
        "{what}: {} rows, expected {}; {} missing, e.g. {:?}; {} extra, e.g. {:?}",
        got.len(),
        want.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    );
}

fn crash_many_times(backend: &str, seed: u64, mut ck: Ck<'_>) {
    const KILLS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    // Chosen points: a snapshot written but not acknowledged, just before and after
    // `_metadata`, between the sinks' commits.
    let points = [
        "snapshot-written:3",
        "before-metadata:2",
        "after-metadata:2",
        "sink-commit:2",
        "sink-commit:5",
    ];
    let mut seed = seed;
    let mut killed = 0;
    let mut run = 0usize;
    let mut worker_counts = Vec::new();
    let (mut resets, mut since_reset) = (0, 0);
    // Runs that started from a complete checkpoint: the storage really held them.
    let mut restored = 0;
    loop {
        let workers = 1 + (next(&mut seed) % 4) as usize;
        worker_counts.push(workers);
        let mut cmd = job(dir.path(), &ck, workers, backend);
        restored += usize::from(ck.newest(dir.path()) > 0);
        if killed >= KILLS {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "final run failed ({}): {}",
                ck.storage_state(),
                String::from_utf8_lossy(&out.stderr)
            );
            break;
        }
        let finished = if run % 4 == 3 {
            // The process kills itself with SIGKILL at a chosen point.
            cmd.env("FLOWSTATE_FAILPOINT", points[(run / 4) % points.len()]);
            let out = cmd.output().unwrap();
            assert!(
                out.status.success() || out.status.code().is_none(),
                "job failed ({}): {}",
                ck.storage_state(),
                String::from_utf8_lossy(&out.stderr)
            );
            out.status.success()
        } else {
            let delay = Duration::from_millis(150 + next(&mut seed) % 900);
            wait_or_kill(cmd.spawn().unwrap(), delay)
        };
        if finished {
            resets += 1;
            since_reset = 0;
            // Finished before the kill: start over on a fresh directory so every kill
            // lands in an unfinished job.
            match &mut ck {
                Ck::Local => std::fs::remove_dir_all(dir.path().join("ck")).unwrap(),
                Ck::S3 { prefix, .. } => *prefix = format!("crash-{resets}"),
            }
            let _ = std::fs::remove_dir_all(dir.path().join("ck.rocksdb-local"));
            std::fs::remove_dir_all(dir.path().join("out")).unwrap();
            std::fs::remove_file(dir.path().join("out.db")).unwrap();
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(dir.path().join(format!("out.db{suffix}")));
            }
        } else {
            killed += 1;
            since_reset += 1;
        }
        run += 1;
        assert!(run < 200, "the job finished before every kill ({run} runs)");
    }
    eprintln!(
        "{backend} on {}: {run} runs, {killed} killed, {resets} finished early (started over), \
         {since_reset} kills in the checked run; workers {worker_counts:?}",
        ck.arg(dir.path())
    );
    assert!(since_reset >= 1);
    assert!(
        restored >= KILLS / 2,
        "only {restored} runs started from a checkpoint"
    );
    let expected = expected();
    assert_exact(
        &format!("{backend} file sink"),
        &file_rows(&dir.path().join("out")),
        &expected,
    );
    assert_exact(
        &format!("{backend} sqlite sink"),
        &db_rows(&dir.path().join("out.db")),
        &expected,
    );
}

#[test]
fn user_job_is_exact_after_sigkills_heap() {
    crash_many_times("heap", 0x9e37_79b9_7f4a_7c15, Ck::Local);
}

#[test]
fn user_job_is_exact_after_sigkills_rocksdb() {
    crash_many_times("rocksdb", 0x2545_f491_4f6c_dd1d, Ck::Local);
}

#[test]
fn user_job_is_exact_after_sigkills_on_s3_heap() {
    let server = s3_server();
    let ck = Ck::S3 {
        server: &server,
        prefix: "crash".into(),
    };
    crash_many_times("heap", 0x6a09_e667_f3bc_c908, ck);
}

#[test]
fn user_job_is_exact_after_sigkills_on_s3_rocksdb() {
    let server = s3_server();
    let ck = Ck::S3 {
        server: &server,
        prefix: "crash".into(),
    };
    crash_many_times("rocksdb", 0xbb67_ae85_84ca_a73b, ck);
}

//! The `counts` job as two processes on 127.0.0.1 (`flowstate run --processes 2`):
//! one process is SIGKILLed mid-run (first a follower, then the leader that coordinates
//! checkpoints), the supervisor restarts both from the last complete checkpoint, and
//! the committed output equals an uninterrupted run line for line; with checkpoints
//! in a shared local directory and on a real S3-compatible server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod common;
use common::{committed, newest_complete};

const EVENTS: u64 = 60_000;

/// The pid of the running child of `parent` that is job process `index`.
fn job_process(parent: u32, index: usize) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, so split after `)`.
        let mut fields = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace())?;
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) || state == Some("Z") {
            continue;
        }
        // The supervisor tells each child its index in its environment.
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let wanted = format!("FLOWSTATE_PROCESS={index}");
        if environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

fn wait_until(supervisor: &mut Child, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ok() {
        if Instant::now() > deadline || supervisor.try_wait().unwrap().is_some() {
            let _ = supervisor.kill();
            panic!("gave up waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sigkill(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn kill_one_then_the_leader(backend: &str, s3: bool) {
    let expected = common::reference(EVENTS);
    let dir = tempfile::tempdir().unwrap();
    let server = s3.then(common::s3_server);
    // 2 processes × 2 workers, throttled so that the kills land mid-run.
    let (mut job, ck) = match &server {
        None => (
            common::job(dir.path(), 2, backend, 50, EVENTS, 5),
            dir.path().join("ck"),
        ),
        Some(s) => (
            common::job_on_s3(dir.path(), s, "multi", 2, backend, 5),
            s.root().join("checkpoints/multi"),
        ),
    };
    let mut supervisor = job.args(["--processes", "2"]).spawn().unwrap();
    let pid = supervisor.id();
    for victim in [1, 0] {
        let seen = newest_complete(&ck);
        wait_until(&mut supervisor, "a checkpoint", || {
            newest_complete(&ck) > seen
        });
        let mut target = None;
        wait_until(&mut supervisor, "the process", || {
            target = job_process(pid, victim);
            target.is_some()
        });
        let target = target.unwrap();
        sigkill(target);
        // The supervisor restarts both: a new process `victim` appears.
        wait_until(&mut supervisor, "the restart", || {
            job_process(pid, victim).is_some_and(|p| p != target)
        });
    }
    let out = supervisor.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "supervisor failed: {log}");
    assert_eq!(
        log.matches("restarting all 2 processes").count(),
        2,
        "{log}"
    );
    let got = committed(&dir.path().join("out"));
    let missing = expected
        .iter()
        .filter(|l| got.binary_search(l).is_err())
        .count();
    eprintln!(
        "{backend}: 2 processes, 2 kills, {} lines, {missing} missing, {} extra",
        got.len(),
        got.len() as i64 - expected.len() as i64
    );
    assert_eq!(got, expected, "committed output differs after the kills");
}

#[test]
fn two_processes_one_killed_resume_exactly_once_heap() {
    kill_one_then_the_leader("heap", false);
}

#[test]
fn two_processes_one_killed_resume_exactly_once_rocksdb() {
    kill_one_then_the_leader("rocksdb", false);
}

#[test]
fn two_processes_on_s3_one_killed_resume_exactly_once_heap() {
    kill_one_then_the_leader("heap", true);
}

#[test]
fn two_processes_on_s3_one_killed_resume_exactly_once_rocksdb() {
    kill_one_then_the_leader("rocksdb", true);
}

/// A damaged newest checkpoint where only one process notices (the file of a worker of
/// process 1): every process falls back to the same older checkpoint together, and
/// the job finishes with nothing lost.
#[test]
fn two_processes_fall_back_together_from_a_damaged_checkpoint() {
    let expected: std::collections::BTreeSet<String> =
        common::reference(EVENTS).into_iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let mut supervisor = common::job(dir.path(), 2, "heap", 30, EVENTS, 5)
        .args(["--processes", "2", "--retained", "2"])
        .spawn()
        .unwrap();
    let pid = supervisor.id();
    let complete = |ck: &Path| {
        std::fs::read_dir(ck)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("_metadata").exists())
                    .count()
            })
            .unwrap_or(0)
    };
    wait_until(&mut supervisor, "two checkpoints", || complete(&ck) >= 2);
    // Everything stops at once: the supervisor first, so it restarts nothing.
    let children: Vec<u32> = [0, 1].iter().filter_map(|i| job_process(pid, *i)).collect();
    sigkill(pid);
    let _ = supervisor.wait();
    for c in &children {
        sigkill(*c);
    }
    for c in &children {
        while Path::new(&format!("/proc/{c}")).exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let newest = newest_complete(&ck);
    let victim = ck.join(format!("chk-{newest}/counts-3.kgs"));
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8] {
        *b ^= 0x5a;
    }
    std::fs::write(&victim, bytes).unwrap();
    // A process that never hears of the other's failure would wait on checkpoints
    // that cannot complete: a short timeout makes that a failure in minutes, not 40.
    let out = common::job(dir.path(), 2, "heap", 30, EVENTS, 0)
        .args(["--processes", "2", "--retained", "2", "--max-restarts", "0"])
        .args(["--checkpoint-timeout", "20000"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.matches(&format!("checkpoint {newest} could not be restored"))
            .count()
            >= 2,
        "both processes fall back: {log}"
    );
    let got: std::collections::BTreeSet<String> =
        committed(&dir.path().join("out")).into_iter().collect();
    assert_eq!(got, expected);
}

//! Hostile directories: the job must never change a file it did not write. Each case
//! surrounds the job with sentinel files, runs `flowstate run counts` as a child
//! process, and checks the sentinels' checksums afterwards (0 changed) and that every
//! refused case ended with a clear error naming the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{committed, job, reference};

/// Every file under `root` (not following links) with a checksum of its contents.
fn sentinels(root: &Path) -> BTreeMap<PathBuf, u64> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, u64>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(&e.path(), out);
            } else if t.is_file() {
                let data = std::fs::read(e.path()).unwrap();
                // FNV-1a: enough to see any change of a sentinel.
                let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
                });
                out.insert(e.path(), h ^ data.len() as u64);
            } else {
                out.insert(e.path(), 0);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &mut out);
    out
}

/// A directory of sentinel files (some nested, one named like a staging file).
fn plant(dir: &Path) {
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::write(dir.join("notes.txt"), b"the user's notes").unwrap();
    std::fs::write(dir.join("nested/data.bin"), [7u8; 100]).unwrap();
    std::fs::write(dir.join("report#123"), b"looks like a staging file").unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
}

fn flowstate(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .current_dir(cwd)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn run_args<'a>(ck: &'a str, out: &'a str, backend: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "counts",
        "--workers",
        "2",
        "--backend",
        backend,
        "--checkpoint-dir",
        ck,
        "--out",
        out,
        "--events",
        "3000",
        "--keys",
        "1200",
        "--checkpoint-interval",
        "50",
    ]
}

fn refused(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "expected a refusal, got success: {err}"
    );
    assert!(err.contains(needle), "expected `{needle}` in:\n{err}");
}

#[test]
fn current_and_parent_directory_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let cwd = home.join("work");
    plant(&home);
    plant(&cwd);
    let out = tmp.path().join("out");
    let before = sentinels(&home);
    for backend in ["rocksdb", "heap"] {
        for ck in [".", ".."] {
            let o = flowstate(&cwd, &run_args(ck, out.to_str().unwrap(), backend));
            refused(&o, "refusing to use");
        }
    }
    assert_eq!(
        sentinels(&home),
        before,
        "0 files changed outside the job's paths"
    );
    // Even an empty current directory is not taken by accident: `.` names no job.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = flowstate(&empty, &run_args(".", out.to_str().unwrap(), "heap"));
    refused(&o, "the current directory");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

#[test]
fn foreign_directories_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("foreign");
    plant(&foreign);
    let before = sentinels(&foreign);
    let out = tmp.path().join("out");
    // As the checkpoint directory.
    let o = flowstate(
        tmp.path(),
        &run_args(foreign.to_str().unwrap(), out.to_str().unwrap(), "heap"),
    );
    refused(&o, "holds files Flowstate did not write");
    // As RocksDB's working directory; and `.` as one.
    for local in [foreign.to_str().unwrap(), "."] {
        let mut args = run_args("ck", out.to_str().unwrap(), "rocksdb");
        args.extend(["--local-dir", local]);
        let o = flowstate(&foreign, &args);
        refused(&o, "refusing to use");
    }
    // The refused runs may have made `ck` in the foreign dir's cwd? Only where they
    // ran: `foreign` itself, as a new directory of the job's own.
    let mut after = sentinels(&foreign);
    after.retain(|p, _| !p.starts_with(foreign.join("ck")));
    assert_eq!(after, before);
}

#[test]
fn symlinked_checkpoint_entry_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    plant(&victim);
    // What a checkpoint directory would hold, as a link to someone else's files.
    std::fs::create_dir_all(victim.join("keyed-2-0.kgs")).unwrap();
    let before = sentinels(&victim);
    let ck = tmp.path().join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    std::os::unix::fs::symlink(&victim, ck.join("chk-99")).unwrap();
    let o = flowstate(
        tmp.path(),
        &run_args("ck", tmp.path().join("out").to_str().unwrap(), "heap"),
    );
    refused(&o, "symbolic link");
    assert_eq!(sentinels(&victim), before);
}

#[test]
fn two_jobs_on_one_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut first = job(tmp.path(), 2, "heap", 50, 200_000, 10).spawn().unwrap();
    // The first holds the lock once its `_lock` names it.
    let lock = tmp.path().join("ck/_lock");
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("pid")) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = job(tmp.path(), 2, "heap", 50, 3000, 0).output().unwrap();
    let _ = first.kill();
    let _ = first.wait();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        err.contains("in use by another job") && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
}

#[test]
fn two_versions_of_a_job_side_by_side() {
    // `x.v1` and `x.v2` once shared RocksDB's working directory (`x.rocksdb-local`),
    // each wiping the other's. Run at once; both must finish exact.
    let events = 6000;
    let expected = reference(events);
    let tmp = tempfile::tempdir().unwrap();
    let spawn = |v: &str| {
        let ck = tmp.path().join(format!("x.{v}"));
        let out = tmp.path().join(format!("out.{v}"));
        let mut args = run_args(ck.to_str().unwrap(), out.to_str().unwrap(), "rocksdb");
        args[11] = "6000";
        args.extend(["--throttle-every", "20"]);
        Command::new(env!("CARGO_BIN_EXE_flowstate"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("v1"), spawn("v2"));
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    for v in ["v1", "v2"] {
        assert_eq!(
            committed(&tmp.path().join(format!("out.{v}"))),
            expected,
            "{v}"
        );
        assert!(tmp.path().join(format!("x.{v}.rocksdb-local")).is_dir());
    }
}

#[test]
fn snapshot_paths_pointing_elsewhere_refused() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(
        job(tmp.path(), 2, "heap", 50, 3000, 0)
            .status()
            .unwrap()
            .success()
    );
    let victim = tmp.path().join("victim");
    plant(&victim);
    let before = sentinels(&victim);
    let ck = tmp.path().join("ck");
    let chk = std::fs::read_dir(&ck)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("chk-"))
        .unwrap();
    // A copy of the checkpoint whose metadata names a file outside it.
    let meta = std::fs::read_to_string(chk.join("_metadata")).unwrap();
    let name = chk.file_name().unwrap().to_string_lossy().to_string();
    let evil = meta.replacen(
        &format!("\"{name}/counts-0.kgs\""),
        &format!("\"{name}/../victim/notes.txt\""),
        1,
    );
    assert_ne!(evil, meta);
    std::fs::write(chk.join("_metadata"), evil).unwrap();
    let listing = sentinels(&ck);
    let mut resume = job(tmp.path(), 2, "heap", 50, 3000, 0);
    resume.arg("--from").arg(&chk);
    let o = resume.output().unwrap();
    refused(&o, "escapes");
    // And resuming from the directory itself: no silent fresh start.
    let o = job(tmp.path(), 2, "heap", 50, 3000, 0).output().unwrap();
    refused(&o, "none can be restored");
    assert_eq!(sentinels(&victim), before);
    let mut now = sentinels(&ck);
    now.remove(&ck.join("_lock"));
    let mut was = listing;
    was.remove(&ck.join("_lock"));
    assert_eq!(now, was, "nothing in the checkpoint directory changed");
}

#[test]
fn stale_requests_missing_directories_and_huge_timeouts() {
    let tmp = tempfile::tempdir().unwrap();
    // `checkpoints DIR` reads; it never creates DIR.
    let missing = tmp.path().join("nothing-here");
    let o = flowstate(tmp.path(), &["checkpoints", missing.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(!missing.exists(), "`checkpoints` created the directory");
    // A savepoint with no job running fails at once (it would leave a request behind).
    let ck = tmp.path().join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let o = flowstate(tmp.path(), &["savepoint", ck.to_str().unwrap()]);
    refused(&o, "no job is running");
    assert!(!ck.join("_savepoint_request").exists());
    // A request left by a killed `savepoint --stop` does not stop the next run.
    std::fs::write(ck.join("_savepoint_request"), "stop").unwrap();
    let o = job(tmp.path(), 2, "heap", 50, 3000, 0).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("ignored a savepoint request"), "{err}");
    assert!(!ck.join("_savepoint_request").exists());
    assert!(
        !ck.join("savepoints").exists(),
        "the stale request was taken"
    );
    // A huge timeout is no panic (it once overflowed an Instant).
    let mut running = job(tmp.path(), 2, "heap", 50, 400_000, 5).spawn().unwrap();
    let lock = ck.join("_lock");
    while flowstate_runtime::ownership::DirLock::holder(&lock).is_none() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let o = flowstate(
        tmp.path(),
        &[
            "savepoint",
            ck.to_str().unwrap(),
            "--timeout",
            &u64::MAX.to_string(),
        ],
    );
    let _ = running.kill();
    let _ = running.wait();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

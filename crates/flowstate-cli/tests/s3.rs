//! A job whose checkpoint directory is `s3://...` on a real S3-compatible server
//! (`s3s-fs` on 127.0.0.1), driven only through the command line: `checkpoints`
//! lists what the bucket holds, retention keeps `--retained` checkpoints in the
//! bucket, `savepoint --stop` stops the job with a savepoint written to the bucket
//! (no local checkpoint directory exists at any point), and a run from that
//! savepoint at another worker count finishes with the output of an uninterrupted
//! run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

mod common;
use common::{committed, newest_complete};

const EVENTS: u64 = 60_000;

fn flowstate(server: &flowstate_storage::s3_test_server::S3TestServer) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowstate"));
    c.envs(server.env()).env("RUST_LOG", "warn");
    c
}

/// The complete checkpoints in the bucket's directory `files`.
fn complete(files: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(files)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("_metadata").is_file())
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn savepoint_stop_and_rescale(backend: &str) {
    let expected = common::reference(EVENTS);
    let server = common::s3_server();
    let dir = tempfile::tempdir().unwrap();
    let files = server.root().join("checkpoints/job");
    // Slow enough (about 30 s) that the savepoint lands mid-run.
    let mut job = common::job_on_s3(dir.path(), &server, "job", 2, backend, 1)
        .args(["--retained", "2"])
        .spawn()
        .unwrap();
    common::wait_for_checkpoint(&files, 3, &mut job);
    // `checkpoints` reads the bucket: the newest id it lists is one the bucket holds.
    let out = flowstate(&server)
        .args(["checkpoints", "s3://checkpoints/job"])
        .output()
        .unwrap();
    common::assert_success(&out);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let listed: Vec<u64> = listing
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!listed.is_empty() && listed.len() <= 3, "{listing}");
    assert!(listed.iter().max().is_some_and(|id| *id >= 3), "{listing}");
    // Stop with a savepoint, asked through the bucket.
    let out = flowstate(&server)
        .args([
            "savepoint",
            "s3://checkpoints/job",
            "--stop",
            "--timeout",
            "120",
        ])
        .output()
        .unwrap();
    common::assert_success(&out);
    let savepoint = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        savepoint.starts_with("s3://checkpoints/job/savepoints/sp-"),
        "{savepoint}"
    );
    let stopped = job.wait_with_output().unwrap();
    common::assert_success(&stopped);
    let in_bucket = server
        .root()
        .join(savepoint.trim_start_matches("s3://"))
        .join("_metadata");
    assert!(in_bucket.is_file(), "{} missing", in_bucket.display());
    // Retention kept at most two complete checkpoints in the bucket; no request is
    // left behind; nothing was written to a local checkpoint directory.
    let kept = complete(&files);
    assert!(!kept.is_empty() && kept.len() <= 2, "kept {kept:?}");
    assert!(!files.join("_savepoint_request").exists());
    assert!(!dir.path().join("ck").exists());
    // The rest of the job from the savepoint, on three workers.
    let out = common::job_on_s3(dir.path(), &server, "job", 3, backend, 5)
        .arg("--from")
        .arg(&savepoint)
        .output()
        .unwrap();
    common::assert_success(&out);
    let got = committed(&dir.path().join("out"));
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected, "committed output differs");
    // Asking a finished job for a savepoint fails at once (its final checkpoint says
    // it finished), and leaves no request behind for a next run.
    let out = flowstate(&server)
        .args(["savepoint", "s3://checkpoints/job", "--timeout", "120"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has finished"), "{err}");
    assert!(!files.join("_savepoint_request").exists());
}

#[test]
fn savepoint_stop_and_rescale_on_s3_heap() {
    savepoint_stop_and_rescale("heap");
}

#[test]
fn savepoint_stop_and_rescale_on_s3_rocksdb() {
    savepoint_stop_and_rescale("rocksdb");
}

/// A prefix holding objects Flowstate did not write is refused, and left as it was.
#[test]
fn a_foreign_prefix_is_refused() {
    let server = common::s3_server();
    let dir = tempfile::tempdir().unwrap();
    let theirs = server.root().join("checkpoints/data/report.csv");
    std::fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    std::fs::write(&theirs, "a,b\n").unwrap();
    let out = common::job_on_s3(dir.path(), &server, "data", 1, "heap", 5)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("report.csv"), "{err}");
    assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "a,b\n");
    assert_eq!(
        std::fs::read_dir(theirs.parent().unwrap()).unwrap().count(),
        1
    );
}

/// The shape of a job on several machines, on loopback: each process started by a
/// command of its own (`--process I --addresses ...`), with its own RocksDB directory
/// and output directory, all checkpointing to one S3 prefix. One is SIGKILLed; the
/// other fails by itself; both are started again (as a service manager would) and
/// resume from the newest checkpoint on S3; the union of their output is exact.
#[test]
fn one_process_per_machine_on_s3() {
    let expected = common::reference(EVENTS);
    let server = common::s3_server();
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let addresses = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let machine = |i: usize| {
        let mut c = flowstate(&server);
        c.args(["run", "counts", "--workers", "2", "--backend", "rocksdb"])
            .args(["--checkpoint-dir", "s3://checkpoints/cluster"])
            .args(["--checkpoint-interval", "50"])
            .args(["--events", &EVENTS.to_string(), "--keys", "1200"])
            .args(["--throttle-every", "5", "--timer-window", "256"])
            .args(["--process", &i.to_string(), "--addresses", &addresses])
            .arg("--local-dir")
            .arg(dir.path().join(format!("machine-{i}/rocks")))
            .arg("--out")
            .arg(dir.path().join(format!("machine-{i}/out")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c
    };
    let files = server.root().join("checkpoints/cluster");
    let mut p0 = machine(0).spawn().unwrap();
    let mut p1 = machine(1).spawn().unwrap();
    common::wait_for_checkpoint(&files, 2, &mut p0);
    p1.kill().unwrap(); // SIGKILL
    p1.wait().unwrap();
    let survivor = p0.wait().unwrap();
    assert!(
        !survivor.success(),
        "process 0 must fail when its peer dies"
    );
    // Restarted in the other order: process 1 waits for process 0's connection.
    let p1 = machine(1).spawn().unwrap();
    let p0 = machine(0).spawn().unwrap();
    for (i, p) in [p0, p1].into_iter().enumerate() {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "process {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut got = committed(&dir.path().join("machine-0/out"));
    got.extend(committed(&dir.path().join("machine-1/out")));
    got.sort();
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected, "committed output differs");
}

/// Local recovery on S3: the job keeps a copy of its checkpoint files on local disk
/// (`--local-recovery`); after a SIGKILL the restart restores from that copy, and a
/// damaged copied file is read from S3 instead. The output stays exact.
#[test]
fn local_recovery_restores_from_the_copy_and_falls_back_to_s3() {
    let expected = common::reference(EVENTS);
    let server = common::s3_server();
    let dir = tempfile::tempdir().unwrap();
    let files = server.root().join("checkpoints/lr");
    let copy = dir.path().join("copy");
    let job = |throttle| {
        let mut c = common::job_on_s3(dir.path(), &server, "lr", 2, "rocksdb", throttle);
        c.arg("--local-recovery").arg(&copy);
        c
    };
    let mut first = job(2).spawn().unwrap();
    common::wait_for_checkpoint(&files, 3, &mut first);
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    // Damage one copied file of the checkpoint the restart restores.
    let newest = newest_complete(&files);
    let victim = std::fs::read_dir(copy.join(format!("chk-{newest}")))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "kgs"))
        .expect("a copied keyed snapshot");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&victim, bytes).unwrap();
    let out = job(5).env("RUST_LOG", "info").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let counts = log
        .lines()
        .find_map(|l| {
            let rest = &l[l.find("local recovery: ")? + "local recovery: ".len()..];
            let mut n = rest.split_whitespace();
            let local: u64 = n.next()?.parse().ok()?;
            let remote: u64 = rest
                .split(", ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((local, remote))
        })
        .unwrap_or_else(|| panic!("no local recovery line in {log}"));
    assert!(
        counts.0 >= 1,
        "nothing read from the local copy: {counts:?}"
    );
    assert!(
        counts.1 >= 1,
        "the damaged copy was not read from S3: {counts:?}"
    );
    assert!(log.contains("is damaged"), "{log}");
    let got = committed(&dir.path().join("out"));
    assert_eq!(got, expected, "committed output differs");
}

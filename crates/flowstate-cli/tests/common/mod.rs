//! Shared by the CLI's integration tests: the `counts` job as a child process, and its
//! committed output.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use flowstate_storage::s3_test_server::S3TestServer;

/// `flowstate run counts` on `dir/ck` and `dir/out` over `events` events of 1200 keys
/// (a multiple of every worker count the tests use), sleeping 1 ms every `throttle`
/// events per worker so kills land mid-run. On RocksDB only 256 timers stay in memory
/// per keyed operator (a job holds a few thousand), so every crash, rescale and
/// multi-process test also runs the timers' spill to disk and its rebuild on restore.
pub fn job(
    dir: &Path,
    workers: usize,
    backend: &str,
    interval_ms: u64,
    events: u64,
    throttle: u64,
) -> Command {
    let mut c = job_at(dir, workers, backend, interval_ms, events, throttle);
    c.arg("--checkpoint-dir").arg(dir.join("ck"));
    c
}

/// Fails the test with the command's error output unless it succeeded.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test S3 server with the bucket `checkpoints`.
pub fn s3_server() -> S3TestServer {
    S3TestServer::start_with_bucket("checkpoints").expect("s3s-fs (scripts/setup.sh installs it)")
}

/// [`job`] with its checkpoints in `s3://checkpoints/<prefix>` on `server` (RocksDB
/// working in `dir/rocks`), over 60,000 events.
pub fn job_on_s3(
    dir: &Path,
    server: &S3TestServer,
    prefix: &str,
    workers: usize,
    backend: &str,
    throttle: u64,
) -> Command {
    let mut c = job_at(dir, workers, backend, 50, 60_000, throttle);
    c.arg("--checkpoint-dir")
        .arg(format!("s3://checkpoints/{prefix}"))
        .arg("--local-dir")
        .arg(dir.join("rocks"))
        .envs(server.env());
    c
}

/// The newest complete checkpoint in the directory `ck` of checkpoint files (0: none).
pub fn newest_complete(ck: &Path) -> u64 {
    std::fs::read_dir(ck)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("_metadata").exists())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("chk-")?.parse::<u64>().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Waits until the checkpoint files in `ck` hold complete checkpoint `n` (bounded),
/// failing if `job` ends first.
pub fn wait_for_checkpoint(ck: &Path, n: u64, job: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while newest_complete(ck) < n {
        assert!(job.try_wait().unwrap().is_none(), "the job ended early");
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint {n} in {}",
            ck.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// [`job`] without its `--checkpoint-dir`.
fn job_at(
    dir: &Path,
    workers: usize,
    backend: &str,
    interval_ms: u64,
    events: u64,
    throttle: u64,
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowstate"));
    c.args(["run", "counts", "--workers", &workers.to_string()])
        .args(["--backend", backend])
        .arg("--out")
        .arg(dir.join("out"))
        .args(["--checkpoint-interval", &interval_ms.to_string()])
        .args(["--events", &events.to_string(), "--keys", "1200"])
        .args(["--throttle-every", &throttle.to_string()])
        .args(["--timer-window", "256"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Every committed line, sorted (part files only; in-progress files are hidden).
pub fn committed(out: &Path) -> Vec<String> {
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

/// The committed output of an uninterrupted one-worker heap run.
pub fn reference(events: u64) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let status = job(dir.path(), 1, "heap", 1000, events, 150)
        .status()
        .unwrap();
    assert!(status.success());
    let lines = committed(&dir.path().join("out"));
    assert!(lines.len() as u64 > events, "{} lines", lines.len());
    lines
}

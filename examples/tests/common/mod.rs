//! Helpers the SIGKILL tests of the example jobs share: the harness command line, a
//! deterministic generator for kill delays and worker counts, and waiting for a job
//! or killing it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `bin run --workers W --backend B --checkpoint-dir DIR/ck --checkpoint-interval MS
/// --out DIR/out`, logging warnings only, stderr kept for a failure's message; the
/// caller adds the job's own options.
pub fn harness_run(
    bin: &str,
    dir: &Path,
    workers: usize,
    backend: &str,
    interval_ms: u64,
) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "run",
        "--workers",
        &workers.to_string(),
        "--backend",
        backend,
    ])
    .arg("--checkpoint-dir")
    .arg(dir.join("ck"))
    .args(["--checkpoint-interval", &interval_ms.to_string()])
    .arg("--out")
    .arg(dir.join("out"))
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

/// A tiny deterministic generator for kill delays and worker counts.
pub fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Waits for the job up to `after`, then SIGKILLs it; whether it finished.
pub fn wait_or_kill(mut child: Child, after: Duration) -> bool {
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            if !status.success() && status.code().is_some() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("job failed: {status}: {err}");
            }
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    false
}

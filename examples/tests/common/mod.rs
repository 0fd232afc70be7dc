//! Helpers the SIGKILL tests of the example jobs share: a deterministic generator
//! for kill delays and worker counts, and waiting for a job or killing it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::process::Child;
use std::time::{Duration, Instant};

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

//! Helpers the SIGKILL tests of the example jobs share: the harness command line
//! (checkpoints in a local directory or on a test S3 server), a deterministic
//! generator for kill delays and worker counts, and waiting for a job or killing it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowstate_storage::s3_test_server::S3TestServer;

/// Where a test job checkpoints.
pub enum Ck<'a> {
    /// `DIR/ck`.
    Local,
    /// `s3://checkpoints/<prefix>` on a test server (RocksDB works in `DIR/ck.rocksdb-local`).
    S3 {
        /// The server.
        server: &'a S3TestServer,
        /// The prefix in its `checkpoints` bucket.
        prefix: String,
    },
}

impl Ck<'_> {
    /// The `--checkpoint-dir` argument.
    pub fn arg(&self, dir: &Path) -> String {
        match self {
            Ck::Local => dir.join("ck").display().to_string(),
            Ck::S3 { prefix, .. } => format!("s3://checkpoints/{prefix}"),
        }
    }

    /// The directory holding the checkpoints' files (for S3: the server's own).
    pub fn files(&self, dir: &Path) -> std::path::PathBuf {
        match self {
            Ck::Local => dir.join("ck"),
            Ck::S3 { server, prefix } => server.root().join("checkpoints").join(prefix),
        }
    }

    /// For a failure's message: whether the S3 server still runs (a job's failed
    /// request then is the job's, not a dead server's).
    pub fn storage_state(&self) -> String {
        match self {
            Ck::Local => "local checkpoints".into(),
            Ck::S3 { server, .. } => match server.check_running() {
                Ok(()) => format!("s3s-fs at {} still running", server.endpoint()),
                Err(e) => format!("s3s-fs at {}: {e}", server.endpoint()),
            },
        }
    }

    /// The newest complete checkpoint's id (0: none), read from the files.
    pub fn newest(&self, dir: &Path) -> u64 {
        std::fs::read_dir(self.files(dir))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("_metadata").is_file())
                    .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// Points `c` at the checkpoints (its environment, RocksDB's directory).
    pub fn apply(&self, c: &mut Command, dir: &Path) {
        c.arg("--checkpoint-dir").arg(self.arg(dir));
        if let Ck::S3 { server, .. } = self {
            c.envs(server.env())
                .arg("--local-dir")
                .arg(dir.join("ck.rocksdb-local"));
        }
    }
}

/// A test S3 server with the bucket `checkpoints`.
pub fn s3_server() -> S3TestServer {
    S3TestServer::start_with_bucket("checkpoints").expect("s3s-fs (scripts/setup.sh installs it)")
}

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
    harness_run_at(bin, dir, &Ck::Local, workers, backend, interval_ms)
}

/// [`harness_run`] with the checkpoints at `ck`.
pub fn harness_run_at(
    bin: &str,
    dir: &Path,
    ck: &Ck<'_>,
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
    .args(["--checkpoint-interval", &interval_ms.to_string()])
    .arg("--out")
    .arg(dir.join("out"))
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    ck.apply(&mut c, dir);
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

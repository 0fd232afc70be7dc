//! A real S3-compatible server on 127.0.0.1 for tests: `s3s-fs` (installed by
//! `scripts/setup.sh` with `cargo install`), serving a fresh directory of its own.
//!
//! Tests start one with [`S3TestServer::start`], make buckets with
//! [`S3TestServer::create_bucket`], and reach it through [`S3TestServer::settings`]
//! (in-process storage) or [`S3TestServer::env`] (child processes, as the AWS tools
//! read it). The server is killed and its directory removed when the value drops.
//! A missing `s3s-fs` is an error, never a skipped test.

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use crate::S3Settings;

/// The access key id every test server accepts.
pub const ACCESS_KEY_ID: &str = "flowstate-test";
/// Its secret.
pub const SECRET_ACCESS_KEY: &str = "flowstate-test-secret";

/// A running `s3s-fs` on a free port of 127.0.0.1.
#[derive(Debug)]
pub struct S3TestServer {
    /// Behind a lock so [`S3TestServer::check_running`] takes `&self`: tests hand
    /// the server around by shared reference.
    child: Mutex<Child>,
    root: PathBuf,
    endpoint: String,
}

/// The `s3s-fs` binary: `$S3S_FS`, else on `PATH`, else in Cargo's bin directory.
fn binary() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("S3S_FS") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect()
        })
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    candidates.extend(cargo_home.map(|c| c.join("bin/s3s-fs")));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "s3s-fs not found (scripts/setup.sh installs it: \
             cargo install s3s-fs@0.14.1 --features binary --locked)",
        )
    })
}

/// How long `s3s-fs` may take to say where it listens. It says so at once; if it
/// neither says so nor exits, a test should fail, not hang its CI run.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A lock poisoned by a panicking test thread, as an I/O error.
fn poisoned<T>(_: std::sync::PoisonError<T>) -> io::Error {
    io::Error::other("s3s-fs handle poisoned by a panic")
}

/// Reads `s3s-fs`'s log up to the line `server is running at http://ADDR` and returns
/// `http://ADDR`; then keeps draining the log on a thread of its own so the server
/// never blocks writing to a full pipe.
fn listening_address(out: impl io::Read + Send + 'static) -> io::Result<String> {
    const MARK: &str = "server is running at ";
    let mut lines = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "log ended before the server listened",
            ));
        }
        if let Some(at) = line.find(MARK) {
            let endpoint = line[at + MARK.len()..].trim().to_owned();
            if !endpoint.starts_with("http://127.0.0.1:") {
                return Err(io::Error::other(format!("unexpected address {endpoint}")));
            }
            std::thread::spawn(move || io::copy(&mut lines, &mut io::sink()));
            return Ok(endpoint);
        }
    }
}

/// [`listening_address`], given up after `timeout` (a `TimedOut` error). The reading
/// thread ends when the log does, which killing the server ends.
fn listening_address_within(
    out: impl io::Read + Send + 'static,
    timeout: Duration,
) -> io::Result<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(listening_address(out)));
    rx.recv_timeout(timeout).map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no address in its log within {timeout:?}"),
        )
    })?
}

impl S3TestServer {
    /// Starts a server on a fresh directory and waits until it listens.
    ///
    /// The server binds port 0 itself and its log says which port it got. Choosing a
    /// free port here and passing it on would leave a moment in which another
    /// process could take it, and a readiness probe by `connect` could then reach
    /// that process, or (on an ephemeral port) connect to itself, while `s3s-fs`
    /// failed to bind: a CI run once saw every request to such a server refused.
    pub fn start() -> io::Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "flowstate-s3-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // Ours alone: a leftover of the same name (an earlier process with this pid)
        // is not removed but refused.
        std::fs::create_dir(&root)?;
        let mut child = Command::new(binary()?)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args([
                "--access-key",
                ACCESS_KEY_ID,
                "--secret-key",
                SECRET_ACCESS_KEY,
            ])
            .arg(&root)
            // Its own log at `info` carries the bound address; nothing else logs at
            // that level but its start and stop.
            .env("RUST_LOG", "s3s_fs=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let found = child
            .stdout
            .take()
            .map(|out| listening_address_within(out, START_TIMEOUT));
        let mut server = S3TestServer {
            child: Mutex::new(child),
            root,
            endpoint: String::new(),
        };
        match found {
            Some(Ok(endpoint)) => {
                server.endpoint = endpoint;
                Ok(server)
            }
            Some(Err(e)) => {
                let status = server.child.get_mut().map_err(poisoned)?.try_wait()?;
                Err(io::Error::other(format!(
                    "s3s-fs did not say where it listens ({e}); exit status: {status:?}"
                )))
            }
            None => Err(io::Error::other("s3s-fs: no stdout")),
        }
    }

    /// An error if the server process has exited: a test whose request failed
    /// tells a dead server from a failure of its own.
    pub fn check_running(&self) -> io::Result<()> {
        match self.child.lock().map_err(poisoned)?.try_wait()? {
            None => Ok(()),
            Some(status) => Err(io::Error::other(format!("s3s-fs exited: {status}"))),
        }
    }

    /// [`S3TestServer::start`] with the bucket `bucket` made.
    pub fn start_with_bucket(bucket: &str) -> io::Result<Self> {
        let server = Self::start()?;
        server.create_bucket(bucket)?;
        Ok(server)
    }

    /// Makes bucket `name` (a directory of the server's root).
    pub fn create_bucket(&self, name: &str) -> io::Result<()> {
        std::fs::create_dir(self.root.join(name))
    }

    /// The endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The directory the server stores its buckets in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How to reach the server from this process.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            credentials: Some((ACCESS_KEY_ID.into(), SECRET_ACCESS_KEY.into())),
        }
    }

    /// The environment that points the AWS tools (and a Flowstate job) at the server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into()),
        ]
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Created by `start` under a name of its own: ours to remove.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::{listening_address, listening_address_within};
    use std::io::{Cursor, ErrorKind};
    use std::time::Duration;

    #[test]
    fn the_address_is_read_from_the_servers_log() {
        // As `s3s-fs` 0.14.1 logs with RUST_LOG=s3s_fs=info to a pipe.
        let log = "  2026-11-30T01:18:55.230159Z  INFO s3s_fs: authentication is enabled\n    \
                   at src/main.rs:100\n\n  2026-11-30T01:18:55.230239Z  INFO s3s_fs: server \
                   is running at http://127.0.0.1:37277\n    at src/main.rs:121\n\n";
        assert_eq!(
            listening_address(Cursor::new(log.to_owned())).unwrap(),
            "http://127.0.0.1:37277"
        );
    }

    #[test]
    fn a_log_that_ends_before_the_address_is_an_error() {
        let log = "  INFO s3s_fs: authentication is enabled\n";
        let e = listening_address(Cursor::new(log.to_owned())).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
        let elsewhere = "INFO s3s_fs: server is running at http://0.0.0.0:8014\n";
        assert!(listening_address(Cursor::new(elsewhere.to_owned())).is_err());
    }

    #[test]
    fn a_server_that_never_says_where_it_listens_is_given_up() {
        // A log that stays open and silent: the writer is kept, nothing written.
        let (silent, _writer) = std::io::pipe().unwrap();
        let e = listening_address_within(silent, Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        let log = "INFO s3s_fs: server is running at http://127.0.0.1:9\n";
        assert_eq!(
            listening_address_within(Cursor::new(log.to_owned()), Duration::from_secs(60)).unwrap(),
            "http://127.0.0.1:9"
        );
    }
}

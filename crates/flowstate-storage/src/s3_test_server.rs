//! A real S3-compatible server on 127.0.0.1 for tests: `s3s-fs` (installed by
//! `scripts/setup.sh` with `cargo install`), serving a fresh directory of its own.
//!
//! Tests start one with [`S3TestServer::start`], make buckets with
//! [`S3TestServer::create_bucket`], and reach it through [`S3TestServer::settings`]
//! (in-process storage) or [`S3TestServer::env`] (child processes, as the AWS tools
//! read it). The server is killed and its directory removed when the value drops.
//! A missing `s3s-fs` is an error, never a skipped test.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::S3Settings;

/// The access key id every test server accepts.
pub const ACCESS_KEY_ID: &str = "flowstate-test";
/// Its secret.
pub const SECRET_ACCESS_KEY: &str = "flowstate-test-secret";

/// A running `s3s-fs` on a free port of 127.0.0.1.
#[derive(Debug)]
pub struct S3TestServer {
    child: Child,
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

impl S3TestServer {
    /// Starts a server on a fresh directory and waits until it accepts connections.
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
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let child = Command::new(binary()?)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--access-key",
                ACCESS_KEY_ID,
                "--secret-key",
                SECRET_ACCESS_KEY,
            ])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = S3TestServer {
            child,
            root,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        for _ in 0..200 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "s3s-fs exited at start: {status}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("s3s-fs did not listen on {addr}"),
        ))
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
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Created by `start` under a name of its own: ours to remove.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

//! `flowstate query` against the demo's `counts` job run with `--query-addr`: the
//! list of queryable states, a live and a committed look-up of one key, a batch, and
//! the messages of failed look-ups; the job's counts only grow between look-ups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn query(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .arg("query")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn query_the_counts_job_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut job = Running(
        Command::new(env!("CARGO_BIN_EXE_flowstate"))
            .args(["run", "counts", "--backend", "heap", "--workers", "2"])
            .arg("--checkpoint-dir")
            .arg(dir.path().join("ck"))
            .arg("--out")
            .arg(dir.path().join("out"))
            .args([
                "--events",
                "400000",
                "--keys",
                "100",
                "--throttle-every",
                "20",
            ])
            .args(["--checkpoint-interval", "200", "--query-addr", &addr])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Until it answers a committed look-up (it has restored and checkpointed).
    let deadline = Instant::now() + Duration::from_secs(120);
    let committed = loop {
        let out = query(&[&addr, "counts", "7", "--consistency", "committed"]);
        if out.status.success() {
            break json(&out);
        }
        assert!(job.0.try_wait().unwrap().is_none(), "the job ended");
        assert!(
            Instant::now() < deadline,
            "no answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(committed["key"], 7);
    assert_eq!(committed["consistency"], "committed");
    assert!(committed["checkpoint"].as_u64().unwrap() >= 1);
    let live = json(&query(&[&addr, "counts", "7"]));
    assert_eq!(live["consistency"], "live");
    // (count, sum): live is at least what the checkpoint holds.
    let count = |v: &Value| v["value"][0].as_u64().unwrap();
    assert!(count(&live) >= count(&committed), "{live} vs {committed}");
    let states = json(&query(&[&addr]));
    let names: Vec<&str> = states["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["counts"]);
    assert_eq!(states["states"][0]["operator"], "counts");
    let batch = json(&query(&[&addr, "counts", "1", "2", "3"]));
    let keys: Vec<u64> = batch["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_u64().unwrap())
        .collect();
    assert_eq!(keys, [1, 2, 3]);
    // Failures say why and fail the command.
    for (args, says) in [
        (
            vec![addr.as_str(), "nope", "1"],
            "no queryable state `nope`",
        ),
        (vec![addr.as_str(), "counts", "not-a-number"], "key"),
        (vec![addr.as_str(), "counts", "100000"], "no value stored"),
        (
            vec![addr.as_str(), "counts", "1", "--consistency", "eventual"],
            "consistency",
        ),
    ] {
        let out = query(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(
        job.0.try_wait().unwrap().is_none(),
        "the job survived every look-up"
    );
}

//! The multi-process supervisor behind `flowstate run --processes N`: starts the job as
//! N child processes of this binary connected over 127.0.0.1 (timely's cluster mode),
//! and when any of them fails, kills the others and starts all N again, which then
//! restore the job's newest complete checkpoint (Flink's restart-all failover).
//!
//! Each generation gets fresh ports, so a restart never waits for the old sockets.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flowstate_runtime::checkpoint::list_checkpoints;
use flowstate_storage::ObjectCheckpointStorage;

use crate::{Backend, RunArgs};

/// The newest complete checkpoint or savepoint id of `dir` (0: none).
pub(crate) fn newest_complete(dir: &Path) -> u64 {
    ObjectCheckpointStorage::local(dir)
        .ok()
        .and_then(|s| list_checkpoints(&s).ok())
        .and_then(|l| l.into_iter().filter_map(|c| c.ok()).map(|m| m.id).max())
        .unwrap_or(0)
}

/// `n` ports on 127.0.0.1 that were free a moment ago.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free ports on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

impl RunArgs {
    /// The command line of process `process` of a generation. `first`: the job's first
    /// start, which honours `--fresh` and `--from`; restarts resume from the newest
    /// checkpoint instead, once this job has completed one.
    fn child(&self, process: usize, addresses: &[String], first: bool) -> Result<Command> {
        let exe = std::env::current_exe().context("locating the flowstate binary")?;
        let mut c = Command::new(exe);
        c.args(["run", "counts", "--workers", &self.workers.to_string()])
            .args([
                "--backend",
                match self.backend {
                    Backend::Heap => "heap",
                    Backend::Rocksdb => "rocksdb",
                },
            ])
            .arg("--checkpoint-dir")
            .arg(&self.checkpoint_dir)
            .args([
                "--checkpoint-interval",
                &self.checkpoint_interval.to_string(),
            ])
            .args(["--retained", &self.retained.to_string()])
            .arg("--out")
            .arg(&self.out)
            .args(["--events", &self.events.to_string()])
            .args(["--keys", &self.keys.to_string()])
            .args(["--throttle-every", &self.throttle_every.to_string()])
            .args(["--process", &process.to_string()])
            .args(["--addresses", &addresses.join(",")]);
        if self.allow_non_restored_state {
            c.arg("--allow-non-restored-state");
        }
        if let Some(d) = &self.local_dir {
            c.arg("--local-dir").arg(d);
        }
        if let Some(f) = &self.inject_storage_faults {
            c.arg("--inject-storage-faults").arg(f.to_string());
        }
        if first {
            if let Some(from) = &self.from {
                c.arg("--from").arg(from);
            }
            if self.claim {
                c.arg("--claim");
            }
            if self.fresh {
                c.arg("--fresh");
            }
        }
        Ok(c)
    }
}

fn stop_all(children: &mut [Option<Child>]) {
    for c in children.iter_mut().flatten() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Runs the job as `args.processes` processes until all of them finish.
pub(crate) fn supervise(args: &RunArgs) -> Result<()> {
    let n = args.processes;
    let baseline = newest_complete(&args.checkpoint_dir);
    let mut restarts = 0;
    loop {
        // Until this job completes a checkpoint of its own, a restart starts the way
        // the job first did.
        let first = newest_complete(&args.checkpoint_dir) <= baseline;
        let addresses: Vec<String> = free_ports(n)?
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut children: Vec<Option<Child>> = Vec::with_capacity(n);
        for i in 0..n {
            let spawned = args.child(i, &addresses, first)?.spawn();
            match spawned {
                Ok(c) => {
                    tracing::info!("process {i} of {n} started (pid {})", c.id());
                    children.push(Some(c));
                }
                Err(e) => {
                    stop_all(&mut children);
                    return Err(e).context(format!("starting process {i}"));
                }
            }
        }
        let failed = loop {
            let mut running = 0;
            let mut failed = None;
            for (i, slot) in children.iter_mut().enumerate() {
                let Some(c) = slot else { continue };
                match c.try_wait() {
                    Ok(None) => running += 1,
                    Ok(Some(status)) if status.success() => *slot = None,
                    Ok(Some(status)) => {
                        *slot = None;
                        failed = Some(format!("process {i} failed ({status})"));
                    }
                    Err(e) => failed = Some(format!("process {i}: {e}")),
                }
            }
            if failed.is_some() || running == 0 {
                break failed;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let Some(why) = failed else {
            println!("all {n} processes ended");
            return Ok(());
        };
        stop_all(&mut children);
        if restarts >= args.max_restarts {
            bail!("{why}; gave up after {restarts} restarts");
        }
        restarts += 1;
        tracing::warn!(
            "{why}; restarting all {n} processes from the last checkpoint (restart {restarts} of at most {})",
            args.max_restarts
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

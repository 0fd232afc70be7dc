//! The multi-process supervisor behind `run --processes N`: starts the job as N child
//! processes of this same binary with the same command line, connected over
//! 127.0.0.1 (timely's cluster mode), and when any of them fails, kills the others and
//! starts all N again, which then restore the job's newest complete checkpoint
//! (Flink's restart-all failover).
//!
//! A child learns its place from the environment (`FLOWSTATE_PROCESS`,
//! `FLOWSTATE_ADDRESSES`; `FLOWSTATE_RESUME` on restarts, which makes it resume from
//! the newest checkpoint whatever `--from`/`--fresh` said). Each generation gets fresh
//! ports, so a restart never waits for the old sockets.

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::Duration;

use crate::AppError;
use crate::cli::RunOptions;
use crate::inspect::newest_complete;

/// `n` ports on 127.0.0.1 that were free a moment ago.
fn free_ports(n: usize) -> Result<Vec<u16>, AppError> {
    let what = "finding free ports on 127.0.0.1";
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(AppError::io(what))?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().map_err(AppError::io(what))?.port()))
        .collect()
}

/// Process `process` of a generation: this binary with this command line. `first`:
/// the job's first start, which honours `--fresh` and `--from`; restarts resume from
/// the newest checkpoint instead, once this job has completed one.
fn child(process: usize, addresses: &[String], first: bool) -> Result<Command, AppError> {
    let exe = std::env::current_exe().map_err(AppError::io("locating this binary"))?;
    let mut c = Command::new(exe);
    c.args(std::env::args_os().skip(1))
        .env("FLOWSTATE_PROCESS", process.to_string())
        .env("FLOWSTATE_ADDRESSES", addresses.join(","));
    if first {
        c.env_remove("FLOWSTATE_RESUME");
    } else {
        c.env("FLOWSTATE_RESUME", "true");
    }
    Ok(c)
}

fn stop_all(children: &mut [Option<Child>]) {
    for c in children.iter_mut().flatten() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Runs the job as `opts.processes` processes until all of them finish.
pub(crate) fn supervise(opts: &RunOptions) -> Result<(), AppError> {
    let n = opts.processes;
    let baseline = newest_complete(&opts.checkpoint_dir);
    let mut restarts = 0;
    loop {
        // Until this job completes a checkpoint of its own, a restart starts the way
        // the job first did.
        let first = newest_complete(&opts.checkpoint_dir) <= baseline;
        let addresses: Vec<String> = free_ports(n)?
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut children: Vec<Option<Child>> = Vec::with_capacity(n);
        for i in 0..n {
            match child(i, &addresses, first)?.spawn() {
                Ok(c) => {
                    tracing::info!("process {i} of {n} started (pid {})", c.id());
                    children.push(Some(c));
                }
                Err(e) => {
                    stop_all(&mut children);
                    return Err(AppError::io(format!("starting process {i}"))(e));
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
        if restarts >= opts.max_restarts {
            return Err(AppError::Failed(format!(
                "{why}; gave up after {restarts} restarts"
            )));
        }
        restarts += 1;
        tracing::warn!(
            "{why}; restarting all {n} processes from the last checkpoint (restart {restarts} of at most {})",
            opts.max_restarts
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

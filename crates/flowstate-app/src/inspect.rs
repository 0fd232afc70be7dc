//! `checkpoints` and `savepoint`: reading a checkpoint directory (local or `s3://`)
//! and asking the job running on it for a savepoint.

use std::io::Write;
use std::time::{Duration, Instant};

use flowstate_core::checkpoint_metadata::sp_id;
use flowstate_core::storage::CheckpointStorage;
use flowstate_runtime::checkpoint::{
    SavepointFormat, list_checkpoints, request_savepoint, withdraw_savepoint_request,
};
use flowstate_runtime::ownership::{DirLock, LOCK_FILE};
use flowstate_storage::CheckpointLocation;

use flowstate_web::page::utc;

use crate::AppError;

/// The newest complete checkpoint id of the checkpoint directory `dir` (0: none, or
/// unreadable).
pub fn newest_complete(dir: &CheckpointLocation) -> u64 {
    dir.open_existing()
        .ok()
        .and_then(|s| list_checkpoints(&s).ok())
        .and_then(|l| l.into_iter().filter_map(|c| c.ok()).map(|m| m.id).max())
        .unwrap_or(0)
}

/// The complete savepoints (`savepoints/sp-<id>` with a `_metadata`) of `dir`, by
/// id (none when it cannot be read).
pub fn savepoints(dir: &CheckpointLocation) -> Vec<(u64, CheckpointLocation)> {
    let Ok(storage) = dir.open_existing() else {
        return Vec::new();
    };
    let mut out: Vec<(u64, CheckpointLocation)> = storage
        .list("savepoints/")
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            let name = p.strip_prefix("savepoints/")?.strip_suffix("/_metadata")?;
            Some((sp_id(name)?, dir.join(&format!("savepoints/{name}"))))
        })
        .collect();
    out.sort_by_key(|(id, _)| *id);
    out
}

/// Whether the newest complete checkpoint of `dir` is a finished job's final one.
fn newest_is_final(dir: &CheckpointLocation) -> bool {
    dir.open_existing()
        .ok()
        .and_then(|s| list_checkpoints(&s).ok())
        .and_then(|l| l.into_iter().find_map(Result::ok))
        .is_some_and(|m| m.finished)
}

/// Prints the complete checkpoints of `dir`, newest first. A closed standard output
/// (`| head`) ends the listing quietly.
pub(crate) fn checkpoints_table(dir: &CheckpointLocation) -> Result<(), AppError> {
    match write_checkpoints_table(dir, &mut std::io::stdout().lock()) {
        Err(AppError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        other => other,
    }
}

fn write_checkpoints_table(dir: &CheckpointLocation, out: &mut impl Write) -> Result<(), AppError> {
    let io = |e| AppError::io("writing the listing".to_string())(e);
    // Reading only: a missing directory is an error, never created.
    let storage = dir
        .open_existing()
        .map_err(|e| AppError::Failed(format!("opening {dir}: {e}")))?;
    writeln!(
        out,
        "{:>6}  {:<19}  {:>9}  {:>9}  {:>10}  {:>12}  {:>12}  {:>8}  state per operator",
        "id",
        "time (UTC)",
        "duration",
        "alignment",
        "in-flight",
        "full size",
        "incremental",
        "workers"
    )
    .map_err(io)?;
    for c in list_checkpoints(&storage)? {
        match c {
            Ok(m) => {
                let ops: Vec<String> = m
                    .operators
                    .iter()
                    .map(|(uid, o)| format!("{uid}={}", o.full_size()))
                    .collect();
                writeln!(
                    out,
                    "{:>6}  {:<19}  {:>7}ms  {:>7}ms  {:>10}  {:>12}  {:>12}  {:>8}  {}{}",
                    m.id,
                    utc(m.triggered_at_ms),
                    m.duration_ms,
                    m.alignment_ms().round() as u64,
                    m.inflight_bytes(),
                    m.full_size(),
                    m.uploaded_size(),
                    m.parallelism,
                    ops.join(" "),
                    if m.finished { "  (final)" } else { "" }
                )
                .map_err(io)?;
            }
            Err((id, why)) => writeln!(out, "{id:>6}  unusable: {why}").map_err(io)?,
        }
    }
    Ok(())
}

/// Asks the job running on `dir` for a savepoint and waits up to `timeout` seconds
/// for it; prints its directory.
pub(crate) fn savepoint(
    dir: &CheckpointLocation,
    native: bool,
    stop: bool,
    timeout: u64,
) -> Result<(), AppError> {
    // Only a running job reads requests: without one, a request would stop the next
    // run that starts on the directory. A local directory's lock says whether one
    // runs; an object store has no lock, so there the request is withdrawn if no
    // savepoint comes (and a starting job drops any left over).
    let lock = dir.local_dir().map(|d| d.join(LOCK_FILE));
    if let Some(lock) = &lock
        && DirLock::holder(lock).is_none()
    {
        return Err(AppError::Failed(format!("no job is running on {dir}")));
    }
    if dir.local_dir().is_none() {
        dir.open_existing()
            .and_then(|s| s.size(flowstate_runtime::ownership::CHECKPOINT_DIR_MARKER))
            .map_err(|e| {
                AppError::Failed(format!("{dir} is no job's checkpoint directory: {e}"))
            })?;
        if newest_is_final(dir) {
            return Err(AppError::Failed(format!("the job on {dir} has finished")));
        }
    }
    let before = savepoints(dir);
    let format = if native {
        SavepointFormat::Native
    } else {
        SavepointFormat::Canonical
    };
    request_savepoint(dir, format, stop)
        .map_err(|e| AppError::Failed(format!("writing the request into {dir}: {e}")))?;
    let withdraw = || {
        if let Err(e) = withdraw_savepoint_request(dir) {
            tracing::warn!("could not withdraw the savepoint request: {e}");
        }
    };
    let started = Instant::now();
    let timeout = Duration::from_secs(timeout);
    // An object store is asked less often (each look is a request).
    let every = Duration::from_millis(if lock.is_some() { 50 } else { 500 });
    while started.elapsed() < timeout {
        if let Some((_, new)) = savepoints(dir).into_iter().find(|s| !before.contains(s)) {
            println!("{new}");
            return Ok(());
        }
        let ended = match &lock {
            Some(lock) => DirLock::holder(lock).is_none(),
            // No lock on an object store: a job that finished says so in its final
            // checkpoint.
            None => newest_is_final(dir),
        };
        if ended {
            withdraw();
            return Err(AppError::Failed(format!(
                "the job on {dir} ended before taking the savepoint"
            )));
        }
        std::thread::sleep(every);
    }
    withdraw();
    Err(AppError::Failed(format!(
        "no savepoint within {} s: is a job running on {dir}?",
        timeout.as_secs()
    )))
}

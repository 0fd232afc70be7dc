//! `checkpoints` and `savepoint`: reading a checkpoint directory and asking the job
//! running on it for a savepoint.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowstate_runtime::checkpoint::{
    SAVEPOINT_REQUEST, SavepointFormat, list_checkpoints, request_savepoint,
};
use flowstate_runtime::ownership::{DirLock, LOCK_FILE};
use flowstate_storage::ObjectCheckpointStorage;

use crate::AppError;

/// The newest complete checkpoint or savepoint id of the local checkpoint directory
/// `dir` (0: none, or unreadable).
pub fn newest_complete(dir: &Path) -> u64 {
    ObjectCheckpointStorage::existing_local(dir)
        .ok()
        .and_then(|s| list_checkpoints(&s).ok())
        .and_then(|l| l.into_iter().filter_map(|c| c.ok()).map(|m| m.id).max())
        .unwrap_or(0)
}

/// The complete savepoints (`savepoints/sp-<id>` with a `_metadata`) of `dir`.
pub fn savepoints(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("savepoints"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("_metadata").exists())
                .collect()
        })
        .unwrap_or_default()
}

/// Prints the complete checkpoints of `dir`, newest first. A closed standard output
/// (`| head`) ends the listing quietly.
pub(crate) fn checkpoints_table(dir: &Path) -> Result<(), AppError> {
    match write_checkpoints_table(dir, &mut std::io::stdout().lock()) {
        Err(AppError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        other => other,
    }
}

fn write_checkpoints_table(dir: &Path, out: &mut impl Write) -> Result<(), AppError> {
    let io = |e| AppError::io("writing the listing".to_string())(e);
    // Reading only: a missing directory is an error, never created.
    let storage = ObjectCheckpointStorage::existing_local(dir)
        .map_err(|e| AppError::Failed(format!("opening {}: {e}", dir.display())))?;
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

/// `YYYY-MM-DD hh:mm:ss` of a Unix time in milliseconds.
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Asks the job running on `dir` for a savepoint and waits up to `timeout` seconds
/// for it; prints its directory.
pub(crate) fn savepoint(
    dir: &Path,
    native: bool,
    stop: bool,
    timeout: u64,
) -> Result<(), AppError> {
    // Only a running job reads requests: without one, a request file would stop the
    // next run that starts on the directory.
    let lock = dir.join(LOCK_FILE);
    if DirLock::holder(&lock).is_none() {
        return Err(AppError::Failed(format!(
            "no job is running on {}",
            dir.display()
        )));
    }
    let before = savepoints(dir);
    let format = if native {
        SavepointFormat::Native
    } else {
        SavepointFormat::Canonical
    };
    request_savepoint(dir, format, stop).map_err(AppError::io(format!(
        "writing the request into {}",
        dir.display()
    )))?;
    let started = Instant::now();
    let timeout = Duration::from_secs(timeout);
    while started.elapsed() < timeout {
        if let Some(new) = savepoints(dir).into_iter().find(|s| !before.contains(s)) {
            println!("{}", new.display());
            return Ok(());
        }
        if DirLock::holder(&lock).is_none() {
            let _ = std::fs::remove_file(dir.join(SAVEPOINT_REQUEST));
            return Err(AppError::Failed(format!(
                "the job on {} ended before taking the savepoint",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(dir.join(SAVEPOINT_REQUEST));
    Err(AppError::Failed(format!(
        "no savepoint within {} s: is a job running on {}?",
        timeout.as_secs(),
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_renders_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_798_761_599_000), "2026-12-31 23:59:59");
    }
}

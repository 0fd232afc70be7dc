//! Savepoint requests left in the checkpoint directory by `flowstate savepoint DIR`:
//! writing one ([`request_savepoint`]), and the leader's watch that takes them
//! ([`RequestWatch`]).
//!
//! A request is the object [`SAVEPOINT_REQUEST`] at the directory's root, its words
//! `native` and `stop` saying what is wanted. The job takes it by deleting it. A local
//! directory is looked at every 100 ms on the coordinator's own call (a file read).
//! An object store is looked at every second by a thread of its own, so a slow
//! request never holds up the coordinator (and costs one request a second).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowstate_core::StorageError;
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::CheckpointLocation;

use super::{SAVEPOINT_REQUEST, SavepointFormat};
use crate::handle::SavepointRequest;

/// How often a local directory is looked at.
const LOCAL_EVERY: Duration = Duration::from_millis(100);
/// How often an object store is looked at.
const REMOTE_EVERY: Duration = Duration::from_secs(1);

/// The request's text.
fn render(format: SavepointFormat, stop: bool) -> String {
    let mut words = Vec::new();
    if format == SavepointFormat::Native {
        words.push("native");
    }
    if stop {
        words.push("stop");
    }
    words.join(" ")
}

/// A request's text read back (unknown words are ignored).
fn parse(text: &str) -> SavepointRequest {
    let words: Vec<&str> = text.split_whitespace().collect();
    SavepointRequest {
        format: if words.contains(&"native") {
            SavepointFormat::Native
        } else {
            SavepointFormat::Canonical
        },
        stop: words.contains(&"stop"),
        ticket: None,
    }
}

/// Asks the job running on the checkpoint directory `dir` (local or `s3://`) for a
/// savepoint of `format` (what `flowstate savepoint DIR` does); with `stop`, the job
/// stops once the savepoint is complete (Flink's stop-with-savepoint): its sources
/// read nothing after the savepoint's cut, the sinks commit through it, and every
/// worker returns.
///
/// The savepoint appears as `dir/savepoints/sp-<id>/_metadata`.
pub fn request_savepoint(
    dir: impl Into<CheckpointLocation>,
    format: SavepointFormat,
    stop: bool,
) -> Result<(), StorageError> {
    let text = render(format, stop);
    match dir.into() {
        CheckpointLocation::Local(d) => {
            let path = d.join(SAVEPOINT_REQUEST);
            std::fs::write(&path, text).map_err(|e| StorageError::Io {
                op: "write",
                path: path.display().to_string(),
                message: e.to_string(),
            })
        }
        remote => remote
            .open_existing()?
            .put(SAVEPOINT_REQUEST, bytes::Bytes::from(text)),
    }
}

/// Withdraws a request nobody took (the asking command gave up).
pub fn withdraw_savepoint_request(dir: impl Into<CheckpointLocation>) -> Result<(), StorageError> {
    match dir.into() {
        CheckpointLocation::Local(d) => match std::fs::remove_file(d.join(SAVEPOINT_REQUEST)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::Io {
                op: "delete",
                path: d.join(SAVEPOINT_REQUEST).display().to_string(),
                message: e.to_string(),
            }),
            _ => Ok(()),
        },
        remote => remote.open_existing()?.delete(SAVEPOINT_REQUEST),
    }
}

/// The leader's watch for requests in its checkpoint directory.
pub(crate) enum RequestWatch {
    /// No directory named: requests come through a job handle only.
    None,
    /// A local directory, read on the coordinator's call.
    Local {
        dir: std::path::PathBuf,
        last: Mutex<Instant>,
    },
    /// An object store, read by a thread of its own.
    Remote {
        found: Arc<Mutex<Option<SavepointRequest>>>,
        stop: Arc<AtomicBool>,
    },
}

impl RequestWatch {
    /// Watches `location` (through `storage`, the job's storage on it).
    pub(crate) fn start(
        location: Option<&CheckpointLocation>,
        storage: &Arc<dyn CheckpointStorage>,
    ) -> Self {
        match location {
            None => RequestWatch::None,
            Some(CheckpointLocation::Local(dir)) => RequestWatch::Local {
                dir: dir.clone(),
                last: Mutex::new(Instant::now()),
            },
            Some(CheckpointLocation::S3 { .. }) => {
                let found = Arc::new(Mutex::new(None));
                let stop = Arc::new(AtomicBool::new(false));
                let (f, s, storage) = (found.clone(), stop.clone(), storage.clone());
                let spawned = std::thread::Builder::new()
                    .name("flowstate-savepoint-requests".into())
                    .spawn(move || watch_remote(storage.as_ref(), &f, &s));
                if let Err(e) = spawned {
                    tracing::warn!("savepoint requests through the directory are off: {e}");
                }
                RequestWatch::Remote { found, stop }
            }
        }
    }

    /// A request taken from the directory since the last call, if any.
    pub(crate) fn take(&self, now: Instant) -> Option<SavepointRequest> {
        match self {
            RequestWatch::None => None,
            RequestWatch::Local { dir, last } => {
                let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                if now.duration_since(*last) < LOCAL_EVERY {
                    return None;
                }
                *last = now;
                let request = dir.join(SAVEPOINT_REQUEST);
                // Whoever removes the file took the request.
                let text = std::fs::read_to_string(&request).ok()?;
                std::fs::remove_file(&request).ok()?;
                Some(parse(&text))
            }
            RequestWatch::Remote { found, .. } => {
                found.lock().unwrap_or_else(|p| p.into_inner()).take()
            }
        }
    }
}

impl Drop for RequestWatch {
    fn drop(&mut self) {
        if let RequestWatch::Remote { stop, .. } = self {
            stop.store(true, Ordering::Release);
        }
    }
}

/// The remote watch's loop: every second, take a request (read, then delete) unless
/// one taken before is still waiting.
fn watch_remote(
    storage: &dyn CheckpointStorage,
    found: &Mutex<Option<SavepointRequest>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Acquire) {
        let waiting = found.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if !waiting && let Ok(text) = storage.get(SAVEPOINT_REQUEST) {
            match storage.delete(SAVEPOINT_REQUEST) {
                Ok(()) => {
                    *found.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(parse(&String::from_utf8_lossy(&text)));
                }
                Err(e) => tracing::warn!("could not take the savepoint request: {e}"),
            }
        }
        // Sleep in short steps so the job's end is not held up by a second.
        let until = Instant::now() + REMOTE_EVERY;
        while Instant::now() < until && !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for format in [SavepointFormat::Canonical, SavepointFormat::Native] {
            for stop in [false, true] {
                let r = parse(&render(format, stop));
                assert_eq!((r.format, r.stop, r.ticket), (format, stop, None));
            }
        }
        let r = parse("  stop\nnative extra ");
        assert_eq!((r.format, r.stop), (SavepointFormat::Native, true));
    }

    #[test]
    fn a_local_request_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn CheckpointStorage> =
            Arc::new(flowstate_storage::ObjectCheckpointStorage::local(dir.path()).unwrap());
        let watch = RequestWatch::start(Some(&dir.path().into()), &storage);
        request_savepoint(dir.path(), SavepointFormat::Native, true).unwrap();
        let later = Instant::now() + LOCAL_EVERY;
        let r = watch.take(later).expect("taken");
        assert_eq!((r.format, r.stop), (SavepointFormat::Native, true));
        assert!(!dir.path().join(SAVEPOINT_REQUEST).exists());
        assert!(watch.take(later + LOCAL_EVERY).is_none());
    }
}

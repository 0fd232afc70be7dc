//! A running job seen from code ([`JobHandle`], [`spawn`]): trigger a savepoint and
//! get its location, stop with a savepoint, cancel, and wait for or read the job's
//! status, all in memory (no file polling; the `savepoint` command of the harness
//! still asks through a file, since it runs in another process).
//!
//! The handle talks to the checkpoint coordinator of the job's leading process: a
//! request is queued here, picked up at the coordinator's next poll (it goes ahead of
//! the checkpoint interval, as a savepoint does in Flink), and answered when the
//! savepoint completes or fails.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::checkpoint::SavepointFormat;
use crate::stream::JobResult;
use crate::{Job, JobConfig, RuntimeError};

/// Where a job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobStatus {
    /// Starting: claiming directories, choosing and restoring a snapshot.
    Starting,
    /// Running; `restored` is the checkpoint or savepoint it started from.
    Running {
        /// The snapshot id it restored (`None`: it started empty).
        restored: Option<u64>,
    },
    /// Every source ended and the final checkpoint committed the output.
    Finished,
    /// Stopped by a savepoint (`stop_with_savepoint`, or a stop request).
    Stopped,
    /// Cancelled from code: no savepoint, the output committed up to the last
    /// checkpoint.
    Cancelled,
    /// Failed (the message of the error [`crate::execute`] returned).
    Failed(String),
}

impl JobStatus {
    /// The job no longer runs.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, JobStatus::Starting | JobStatus::Running { .. })
    }
}

/// A completed savepoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Savepoint {
    /// Its id (shared with the checkpoints' sequence).
    pub id: u64,
    /// Its directory relative to the checkpoint storage root (`savepoints/sp-<id>`).
    pub location: String,
    /// Its local directory, when the checkpoint storage is a local directory (what
    /// `RestoreFrom::Path` takes).
    pub path: Option<PathBuf>,
}

/// A savepoint asked for, as the coordinator takes it: from code through a
/// [`JobHandle`], or through the request file of the checkpoint directory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SavepointRequest {
    pub(crate) format: SavepointFormat,
    /// The job stops once it completes.
    pub(crate) stop: bool,
    /// The handle's ticket for the answer (`None`: asked through the file).
    pub(crate) ticket: Option<u64>,
}

#[derive(Default)]
struct State {
    status: Option<JobStatus>,
    requests: VecDeque<SavepointRequest>,
    next_ticket: u64,
    /// Triggered savepoints: checkpoint id → ticket.
    triggered: BTreeMap<u64, u64>,
    /// Answers by ticket.
    answers: BTreeMap<u64, Result<Savepoint, String>>,
    /// The local checkpoint directory (savepoint paths are below it).
    dir: Option<PathBuf>,
}

/// A handle on a job running in this process (see the module docs). Cloning it
/// gives another handle on the same job.
#[derive(Clone, Default)]
pub struct JobHandle {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Apart from `state`: every worker reads it at every step.
    cancelled: AtomicBool,
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("status", &self.status())
            .finish()
    }
}

impl JobHandle {
    /// A handle for a job not started yet: give it to
    /// [`crate::CheckpointConfig::handle`] (or use [`spawn`]).
    pub fn new() -> Self {
        JobHandle::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it cannot leave the state inconsistent (every update
        // is a single assignment or insert), so a poisoned lock is still usable.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.shared.changed.notify_all();
    }

    /// The job's status now.
    pub fn status(&self) -> JobStatus {
        self.lock().status.clone().unwrap_or(JobStatus::Starting)
    }

    /// Waits until `done` holds for the status, or the job ends, or `timeout`
    /// passes; returns the status then.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&JobStatus) -> bool) -> JobStatus {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            let status = s.status.clone().unwrap_or(JobStatus::Starting);
            let now = Instant::now();
            if done(&status) || status.is_terminal() || now >= deadline {
                return status;
            }
            s = self
                .shared
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until the job no longer runs; returns how it ended.
    pub fn wait(&self) -> JobStatus {
        self.wait_for(Duration::MAX / 4, JobStatus::is_terminal)
    }

    /// Takes a savepoint of `format` while the job runs on; returns it once complete.
    pub fn trigger_savepoint(&self, format: SavepointFormat) -> Result<Savepoint, RuntimeError> {
        self.savepoint(format, false)
    }

    /// Takes a savepoint of `format` and stops the job there (Flink's
    /// stop-with-savepoint): nothing after its cut is read, the sinks commit through
    /// it, and the job ends with [`JobStatus::Stopped`]. Resume with
    /// `RestoreFrom::Path(savepoint.path)`, at any parallelism.
    pub fn stop_with_savepoint(&self, format: SavepointFormat) -> Result<Savepoint, RuntimeError> {
        let s = self.savepoint(format, true)?;
        self.wait();
        Ok(s)
    }

    /// Cancels the job: it stops without a savepoint and [`crate::execute`] returns
    /// [`RuntimeError::Cancelled`]; committed output stays as of the last checkpoint.
    pub fn cancel(&self) {
        self.shared.cancelled.store(true, Ordering::Release);
        self.shared.changed.notify_all();
    }

    fn savepoint(&self, format: SavepointFormat, stop: bool) -> Result<Savepoint, RuntimeError> {
        let ticket = {
            let mut s = self.lock();
            if let Some(status) = s.status.as_ref().filter(|st| st.is_terminal()) {
                return Err(RuntimeError::Checkpoint(format!(
                    "no savepoint: the job is no longer running ({status:?})"
                )));
            }
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            s.requests.push_back(SavepointRequest {
                format,
                stop,
                ticket: Some(ticket),
            });
            ticket
        };
        let mut s = self.lock();
        loop {
            if let Some(answer) = s.answers.remove(&ticket) {
                return answer.map_err(RuntimeError::Checkpoint);
            }
            if let Some(status) = s.status.as_ref().filter(|st| st.is_terminal()) {
                return Err(RuntimeError::Checkpoint(format!(
                    "the job ended before the savepoint completed ({status:?})"
                )));
            }
            s = self
                .shared
                .changed
                .wait(s)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    // The runtime's side.

    pub(crate) fn set_status(&self, status: JobStatus) {
        self.update(|s| s.status = Some(status));
    }

    pub(crate) fn set_dir(&self, dir: Option<PathBuf>) {
        self.update(|s| s.dir = dir);
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::Acquire)
    }

    /// The next savepoint asked for, if any (the coordinator triggers it).
    pub(crate) fn take_request(&self) -> Option<SavepointRequest> {
        self.lock().requests.pop_front()
    }

    /// The request `ticket` became savepoint `id`.
    pub(crate) fn triggered(&self, ticket: u64, id: u64) {
        self.update(|s| {
            s.triggered.insert(id, ticket);
        });
    }

    /// Savepoint `id` completed at `location`.
    pub(crate) fn completed(&self, id: u64, location: &str) {
        self.update(|s| {
            if let Some(ticket) = s.triggered.remove(&id) {
                let path = s.dir.as_ref().map(|d| d.join(location));
                s.answers.insert(
                    ticket,
                    Ok(Savepoint {
                        id,
                        location: location.to_string(),
                        path,
                    }),
                );
            }
        });
    }

    /// Savepoint `id` failed.
    pub(crate) fn failed(&self, id: u64, why: &str) {
        self.update(|s| {
            if let Some(ticket) = s.triggered.remove(&id) {
                s.answers
                    .insert(ticket, Err(format!("savepoint {id} failed: {why}")));
            }
        });
    }
}

/// A job started by [`spawn`]: its handle, and its result once it ends.
pub struct RunningJob<O> {
    /// The job's handle.
    pub handle: JobHandle,
    thread: std::thread::JoinHandle<Result<Vec<O>, RuntimeError>>,
}

impl<O> RunningJob<O> {
    /// Waits for the job to end; returns what [`crate::execute`] returned.
    pub fn join(self) -> Result<Vec<O>, RuntimeError> {
        self.thread
            .join()
            .map_err(|_| RuntimeError::Worker("the job's thread panicked".into()))?
    }
}

/// Runs a job on a thread of its own and returns at once with its handle (see
/// [`crate::execute`] for what the job does). Savepoints and stop need
/// checkpointing on.
pub fn spawn<R, F>(config: JobConfig, build: F) -> Result<RunningJob<R::Output>, RuntimeError>
where
    F: Fn(&mut Job<'_>) -> R + Send + Sync + 'static,
    R: JobResult,
{
    let handle = JobHandle::new();
    let mut config = config;
    match config.checkpointing.as_mut() {
        Some(c) => c.handle = Some(handle.clone()),
        None => {
            return Err(RuntimeError::Config(
                "a spawned job needs checkpointing (its handle takes savepoints)".into(),
            ));
        }
    }
    let thread = std::thread::Builder::new()
        .name("flowstate-job".into())
        .spawn(move || crate::execute(config, build))
        .map_err(|e| RuntimeError::Worker(format!("cannot start the job's thread: {e}")))?;
    Ok(RunningJob { handle, thread })
}

//! The per-process checkpoint coordinator: an event-driven state machine that
//! triggers checkpoints, collects acknowledgements, completes (writes `_metadata`),
//! aborts, subsumes and retains (the messages between the processes' coordinators are
//! in `control`). Completing one (its `_metadata`, history, retention) is in
//! `complete`, the leader's triggering in `trigger`, acknowledgements and failures in
//! `acks`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowstate_core::checkpoint_history::{
    HISTORY_FILE, SnapshotSummary, add_to_history, parse_history, render_history,
};
use flowstate_core::registry::SharedStateRegistry;
use flowstate_core::storage::CheckpointStorage;

use super::cleanup::delete_owned;
use super::control::{Control, ProcessRole, TaskAck};
use super::requests::RequestWatch;
use super::schedule::{Action, Limits, View, decide};
use super::{
    CheckpointConfig, CheckpointMetadata, METADATA_VERSION, OperatorSnapshotMeta, Restored,
    SnapshotKind, list_checkpoints,
};
use crate::handle::SavepointRequest;
use complete::read_history;

mod acks;
mod complete;
mod trigger;

struct Pending {
    started: Instant,
    triggered_at_ms: u64,
    kind: SnapshotKind,
    acks: Vec<TaskAck>,
    /// Acknowledgements of this process's own tasks.
    local_acks: usize,
    /// Processes all of whose tasks acknowledged (the leader counts every process).
    processes_done: usize,
}

impl Pending {
    fn new(kind: SnapshotKind) -> Self {
        Pending {
            started: Instant::now(),
            triggered_at_ms: unix_ms(),
            kind,
            acks: Vec::new(),
            local_acks: 0,
            processes_done: 0,
        }
    }
}

struct Inner {
    registered_workers: usize,
    tasks: usize,
    sources: usize,
    exhausted_sources: usize,
    pending: BTreeMap<u64, Pending>,
    last_trigger: Instant,
    last_complete: Instant,
    failures: u32,
    registry: SharedStateRegistry,
    retained: VecDeque<u64>,
    /// A savepoint asked for and not triggered yet.
    requested: Option<SavepointRequest>,
    /// The checkpoint history (`_history`, the leader's); `None` when it could not
    /// be read at start (then it is not rewritten, so nothing is lost).
    history: Option<Vec<SnapshotSummary>>,
    error: Option<String>,
    /// The failure was a restore failure (of this process or another).
    restore_failed: bool,
    /// The failure was the final checkpoint's (within the tolerance).
    final_failed: bool,
    /// Other processes whose sources all ended (leader only).
    exhausted_processes: usize,
    /// This process told the leader its sources ended (followers only).
    reported_exhausted: bool,
    /// Messages for other processes: (destination process, message).
    outbox: Vec<(usize, Control)>,
}

/// Coordinates the checkpoints of one job in one process: triggers them, collects
/// every task's acknowledgement, writes `_metadata`, applies retention.
pub(crate) struct Coordinator {
    config: CheckpointConfig,
    /// Worker threads of this process.
    workers: usize,
    role: ProcessRole,
    max_parallelism: u32,
    /// The interval sources should be in: checkpoints below it are triggered.
    interval: AtomicU64,
    /// Id of the final checkpoint once every source has ended (0: not yet).
    final_id: AtomicU64,
    /// Newest complete checkpoint (0: none).
    completed: AtomicU64,
    /// The interval the job started in (the first checkpoint id of this run).
    start: u64,
    /// Retention deletes no shared file (an unreadable checkpoint may refer to any).
    keep_all_shared: bool,
    /// Snapshot writer threads still running.
    writers: AtomicUsize,
    /// The savepoint that stops the job (0: none).
    stop_at: AtomicU64,
    /// Savepoint requests left in the checkpoint directory (the leader's).
    requests: RequestWatch,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("interval", &self.interval)
            .field("completed", &self.completed)
            .finish_non_exhaustive()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Coordinator {
    /// A coordinator for the `workers` threads of process `role` whose first
    /// checkpoint is `start`, after `failures` checkpoints failed in a row (a restart
    /// after a failed final checkpoint carries them); `restored` (a snapshot of this
    /// job's directory restored in claim mode) joins retention.
    pub(crate) fn new(
        config: CheckpointConfig,
        workers: usize,
        role: ProcessRole,
        max_parallelism: u32,
        start: u64,
        failures: u32,
        restored: Option<&Restored>,
    ) -> Self {
        let mut registry = SharedStateRegistry::new();
        let mut retained = VecDeque::new();
        let mut keep_all_shared = false;
        if let Some(r) = restored {
            let handles = r.metadata.keyed_handles();
            if config.claims(r) {
                // Every complete checkpoint of the job's own directory joins retention,
                // not only the restored one: a crash between a `_metadata` and its
                // retention leaves older ones that nothing else would ever delete
                // (and whose shared files retention would otherwise not protect).
                let listed = if r.own {
                    list_checkpoints(config.storage.as_ref())
                } else {
                    Ok(Vec::new())
                };
                // A `_metadata` that cannot be read (or a listing that failed) may
                // refer to any shared file: retention then deletes none.
                keep_all_shared = listed
                    .as_ref()
                    .map_or(true, |l| l.iter().any(Result::is_err));
                if keep_all_shared {
                    tracing::warn!(
                        "a checkpoint of this directory cannot be read: no shared file is \
                         deleted while it is there"
                    );
                }
                let mut own: Vec<CheckpointMetadata> = listed
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(Result::ok)
                    .filter(|m| m.kind == SnapshotKind::Checkpoint && m.id != r.metadata.id)
                    .collect();
                own.push(r.metadata.clone());
                own.sort_by_key(|m| m.id);
                for m in own {
                    registry.register(m.id, &m.keyed_handles());
                    retained.push_back(m.id);
                }
            } else {
                registry.pin(&handles);
            }
        }
        let now = Instant::now();
        let (requests, history) = if role.leads() {
            (
                RequestWatch::start(config.location.as_ref(), &config.storage),
                read_history(config.storage.as_ref()),
            )
        } else {
            (RequestWatch::None, None)
        };
        Coordinator {
            requests,
            config,
            workers,
            role,
            max_parallelism,
            interval: AtomicU64::new(start),
            final_id: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            start,
            keep_all_shared,
            writers: AtomicUsize::new(0),
            stop_at: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                registered_workers: 0,
                tasks: 0,
                sources: 0,
                exhausted_sources: 0,
                pending: BTreeMap::new(),
                last_trigger: now,
                last_complete: now,
                failures,
                registry,
                retained,
                requested: None,
                history,
                error: None,
                restore_failed: false,
                final_failed: false,
                exhausted_processes: 0,
                reported_exhausted: false,
                outbox: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking thread cannot leave the bookkeeping half-updated in a way that
        // matters more than stopping; keep going with what is there.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The checkpoint settings.
    pub(crate) fn config(&self) -> &CheckpointConfig {
        &self.config
    }

    /// The checkpoint storage.
    pub(crate) fn storage(&self) -> &Arc<dyn CheckpointStorage> {
        &self.config.storage
    }

    /// The first checkpoint id of this run (sources start in this interval).
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// The interval sources should be in.
    pub(crate) fn interval(&self) -> u64 {
        self.interval.load(Ordering::Acquire)
    }

    /// The final checkpoint's id once every source has ended.
    pub(crate) fn final_id(&self) -> Option<u64> {
        match self.final_id.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    /// The newest complete checkpoint.
    pub(crate) fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// The job is done: its final checkpoint completed.
    pub(crate) fn finished(&self) -> bool {
        self.final_id().is_some_and(|f| self.completed() >= f)
    }

    /// A stop-with-savepoint is under way: sources read nothing more.
    pub(crate) fn stopping(&self) -> bool {
        self.stop_at.load(Ordering::Acquire) != 0
    }

    /// The stop-with-savepoint completed: the job stops now.
    pub(crate) fn stopped(&self) -> bool {
        let at = self.stop_at.load(Ordering::Acquire);
        at != 0 && self.completed() >= at
    }

    /// What checkpoint `id` is.
    pub(crate) fn kind_of(&self, id: u64) -> SnapshotKind {
        self.lock()
            .pending
            .get(&id)
            .map_or(SnapshotKind::Checkpoint, |p| p.kind)
    }

    /// Where the files of checkpoint `id` go.
    pub(crate) fn location(&self, id: u64) -> String {
        self.kind_of(id).location(id)
    }

    /// The failure that stops the job, if any.
    pub(crate) fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    /// Stops the job because of `e`; a restore failure is marked as such, so every
    /// process of a cluster falls back to the same older checkpoint.
    pub(crate) fn fail_with(&self, e: &crate::RuntimeError) {
        let mut s = self.lock();
        if s.error.is_none() && matches!(e, crate::RuntimeError::Restore(_)) {
            s.restore_failed = true;
        }
        self.set_error(&mut s, e.to_string());
    }

    /// The failure that stops the job, as the error the job returns.
    pub(crate) fn failure(&self) -> Option<crate::RuntimeError> {
        let s = self.lock();
        let why = s.error.clone()?;
        Some(if s.restore_failed {
            crate::RuntimeError::Restore(why)
        } else if s.final_failed {
            let completed = self.completed();
            crate::RuntimeError::FinalCheckpointFailed {
                id: self.final_id().unwrap_or(0),
                failures: s.failures,
                why,
                last_complete: (completed > 0).then_some(completed),
            }
        } else {
            crate::RuntimeError::Checkpoint(why)
        })
    }

    /// Records the job's failure and tells the other processes (once).
    fn set_error(&self, s: &mut Inner, why: String) {
        if s.error.is_some() {
            return;
        }
        for p in (0..self.role.processes).filter(|p| *p != self.role.process) {
            s.outbox.push((
                p,
                Control::Fail {
                    why: why.clone(),
                    restore: s.restore_failed,
                },
            ));
        }
        s.error = Some(why);
    }

    /// Sends `msg` to every other process (the leader's announcements).
    fn announce(&self, s: &mut Inner, msg: &Control) {
        for p in 1..self.role.processes {
            s.outbox.push((p, msg.clone()));
        }
    }

    /// Messages for other processes, to send now: (destination process, message).
    pub(crate) fn take_outbox(&self) -> Vec<(usize, Control)> {
        std::mem::take(&mut self.lock().outbox)
    }

    /// A snapshot writer thread starts.
    pub(crate) fn writer_started(&self) {
        self.writers.fetch_add(1, Ordering::AcqRel);
    }

    /// A snapshot writer thread is done (it acknowledged or declined).
    pub(crate) fn writer_finished(&self) {
        self.writers.fetch_sub(1, Ordering::AcqRel);
    }

    /// Waits (at most the checkpoint timeout) until no snapshot writer runs, so a job
    /// that ends leaves no half-written files of checkpoints that will never complete.
    pub(crate) fn wait_for_writers(&self) {
        let deadline = Instant::now() + self.config.timeout;
        while self.writers.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// When this process learnt of checkpoint `id`'s trigger (`None`: it is not
    /// pending).
    pub(crate) fn triggered_at(&self, id: u64) -> Option<Instant> {
        self.lock().pending.get(&id).map(|p| p.started)
    }

    /// A message from another process's coordinator.
    pub(crate) fn receive(&self, msg: Control) {
        let mut s = self.lock();
        match msg {
            Control::Trigger { id, kind, stop } => {
                s.pending.entry(id).or_insert_with(|| Pending::new(kind));
                if stop {
                    self.stop_at.store(id, Ordering::Release);
                }
                self.interval.fetch_max(id + 1, Ordering::AcqRel);
            }
            Control::Final { id } => {
                s.pending
                    .entry(id)
                    .or_insert_with(|| Pending::new(SnapshotKind::Checkpoint));
                self.interval.fetch_max(id, Ordering::AcqRel);
                self.final_id.store(id, Ordering::Release);
            }
            Control::Abort { id } => {
                self.drop_pending(&mut s, id);
            }
            Control::Complete { id } => {
                // Subsumed as on the leader; savepoints are never subsumed.
                let done: Vec<u64> = s
                    .pending
                    .range(..=id)
                    .filter(|(k, q)| **k == id || q.kind == SnapshotKind::Checkpoint)
                    .map(|(k, _)| *k)
                    .collect();
                for k in done {
                    if k == id {
                        s.pending.remove(&k);
                    } else {
                        self.drop_pending(&mut s, k);
                    }
                }
                self.completed.fetch_max(id, Ordering::AcqRel);
            }
            Control::Fail { why, restore } => {
                if s.error.is_none() {
                    s.restore_failed = restore;
                    s.error = Some(why);
                }
            }
            Control::Acks { id, acks } => {
                let Some(p) = s.pending.get_mut(&id) else {
                    // Aborted or subsumed meanwhile.
                    self.discard(id, &acks);
                    return;
                };
                p.acks.extend(acks);
                p.processes_done += 1;
                self.try_complete(&mut s, id);
            }
            Control::Decline { id, why } => self.decline_locked(&mut s, id, why),
            Control::Exhausted => s.exhausted_processes += 1,
        }
    }

    /// A worker's dataflow is built: it has `tasks` snapshotting tasks, `sources` of them
    /// sources.
    pub(crate) fn register_worker(&self, tasks: usize, sources: usize) {
        let mut s = self.lock();
        s.registered_workers += 1;
        s.tasks += tasks;
        s.sources += sources;
    }

    /// One source of one worker has no more records.
    pub(crate) fn source_exhausted(&self) {
        self.lock().exhausted_sources += 1;
    }
}

//! The per-process checkpoint coordinator: an event-driven state machine that
//! triggers checkpoints, collects acknowledgements, completes (writes `_metadata`),
//! aborts, subsumes and retains (the messages between the processes' coordinators are
//! in `control`). Completing one (its `_metadata`, history, retention) is in
//! `complete`.

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

mod complete;

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

    /// Deletes the private files tasks wrote for checkpoint `id`, which will never
    /// complete (it was aborted or subsumed). Shared files stay: a snapshot still in
    /// flight may have uploaded the same RocksDB file under the same name (the
    /// uploads of one backend are named by its session and file number) without
    /// having acknowledged yet; the next start removes whatever nothing refers to.
    fn discard(&self, id: u64, acks: &[TaskAck]) {
        let storage = self.config.storage.as_ref();
        let files = acks.iter().flat_map(|a| {
            a.keyed
                .iter()
                .map(|k| k.path.as_str())
                .chain(a.operator.iter().map(|o| o.path.as_str()))
        });
        for f in files {
            if let Err(e) = delete_owned(storage, f) {
                tracing::debug!(checkpoint = id, "could not delete {f}: {e}");
            }
        }
    }

    /// Removes checkpoint `id` from those in flight; deletes what it wrote.
    fn drop_pending(&self, s: &mut Inner, id: u64) -> bool {
        if self
            .stop_at
            .compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!(
                checkpoint = id,
                "the savepoint to stop the job did not complete; the job goes on"
            );
        }
        match s.pending.remove(&id) {
            Some(p) => {
                self.discard(id, &p.acks);
                true
            }
            None => false,
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

    /// Triggers, times out and finishes checkpoints as the settings say; called often
    /// by every worker.
    pub(crate) fn poll(&self) {
        let Ok(mut s) = self.inner.try_lock() else {
            return;
        };
        if s.registered_workers < self.workers || s.error.is_some() {
            return;
        }
        let sources_ended = s.exhausted_sources >= s.sources;
        if !self.role.leads() {
            // Followers do what the leader says; they only report their sources' end.
            if sources_ended && !s.reported_exhausted {
                s.reported_exhausted = true;
                s.outbox.push((0, Control::Exhausted));
            }
            return;
        }
        let now = Instant::now();
        let closing = self.final_id().is_some() || self.stopping();
        if !closing {
            self.take_requests(&mut s, now);
        }
        let pending: Vec<(u64, Instant)> =
            s.pending.iter().map(|(id, p)| (*id, p.started)).collect();
        let view = View {
            now,
            last_trigger: s.last_trigger,
            last_complete: s.last_complete,
            pending: &pending,
            current: self.interval(),
            all_ended: s.sources > 0
                && sources_ended
                && s.exhausted_processes + 1 >= self.role.processes,
            closing,
            requested: s.requested.map(|r| (r.format, r.stop)),
        };
        for action in decide(&Limits::of(&self.config), &view) {
            match action {
                Action::Expire(id) => {
                    self.drop_pending(&mut s, id);
                    self.checkpoint_failed(&mut s, id, "timed out and was aborted");
                    if s.error.is_some() {
                        return;
                    }
                }
                Action::Final(id) => {
                    s.pending.insert(id, Pending::new(SnapshotKind::Checkpoint));
                    self.announce(&mut s, &Control::Final { id });
                    self.final_id.store(id, Ordering::Release);
                }
                Action::Trigger { id, kind, stop } => {
                    if kind != SnapshotKind::Checkpoint
                        && let Some(r) = s.requested.take()
                        && let (Some(h), Some(ticket)) = (&self.config.handle, r.ticket)
                    {
                        h.triggered(ticket, id);
                    }
                    if stop {
                        self.stop_at.store(id, Ordering::Release);
                    }
                    s.pending.insert(id, Pending::new(kind));
                    self.announce(&mut s, &Control::Trigger { id, kind, stop });
                    s.last_trigger = now;
                    self.interval.store(id + 1, Ordering::Release);
                    tracing::debug!(checkpoint = id, ?kind, "triggered");
                }
            }
        }
    }

    /// Savepoints asked for: by `flowstate savepoint DIR` through the checkpoint
    /// directory ([`RequestWatch`]), or by a job handle in memory.
    fn take_requests(&self, s: &mut Inner, now: Instant) {
        if s.requested.is_none() {
            s.requested = self.requests.take(now);
        }
        if s.requested.is_none() {
            s.requested = self.config.handle.as_ref().and_then(|h| h.take_request());
        }
    }

    /// A task of this process finished its part of checkpoint `id`.
    pub(crate) fn ack(&self, id: u64, ack: TaskAck) {
        let mut s = self.lock();
        let expected = s.tasks;
        let Some(p) = s.pending.get_mut(&id) else {
            // Aborted or subsumed meanwhile.
            self.discard(id, std::slice::from_ref(&ack));
            return;
        };
        p.acks.push(ack);
        p.local_acks += 1;
        if p.local_acks < expected {
            return;
        }
        if self.role.leads() {
            p.processes_done += 1;
            self.try_complete(&mut s, id);
        } else if let Some(p) = s.pending.remove(&id) {
            s.outbox.push((0, Control::Acks { id, acks: p.acks }));
        }
    }

    /// Completes checkpoint `id` once every process acknowledged it (leader).
    fn try_complete(&self, s: &mut Inner, id: u64) {
        if s.pending
            .get(&id)
            .is_none_or(|p| p.processes_done < self.role.processes)
        {
            return;
        }
        let Some(p) = s.pending.remove(&id) else {
            return;
        };
        if s.error.is_some() {
            // The job failed: snapshots taken since may hold state past the cut (a
            // failing worker's dataflow no longer keeps the checkpoint's order), so
            // nothing completes any more.
            self.discard(id, &p.acks);
            return;
        }
        match self.complete(s, id, p) {
            Ok(()) => self.announce(s, &Control::Complete { id }),
            Err(e) => self.checkpoint_failed(s, id, &e),
        }
    }

    /// A task could not take its part of checkpoint `id`.
    pub(crate) fn decline(&self, id: u64, why: String) {
        let mut s = self.lock();
        self.decline_locked(&mut s, id, why);
    }

    fn decline_locked(&self, s: &mut Inner, id: u64, why: String) {
        if !self.drop_pending(s, id) {
            return;
        }
        if !self.role.leads() {
            s.outbox.push((0, Control::Decline { id, why }));
            return;
        }
        self.checkpoint_failed(s, id, &format!("declined: {why}"));
    }

    /// Checkpoint `id` failed (timed out, declined, or could not complete; the
    /// leader's bookkeeping): the other processes drop it, and the job fails once
    /// more checkpoints in a row failed than tolerated, or when it was the final one
    /// (nothing else could commit the job's last output; waiting would hang).
    fn checkpoint_failed(&self, s: &mut Inner, id: u64, why: &str) {
        self.announce(s, &Control::Abort { id });
        if let Some(h) = &self.config.handle {
            h.failed(id, why);
        }
        s.failures += 1;
        crate::metrics::checkpoint_failed();
        tracing::warn!(checkpoint = id, "checkpoint {id} failed: {why}");
        if s.failures > self.config.tolerable_failures {
            let why = format!(
                "{} checkpoints in a row failed (tolerable: {}); the last, checkpoint {id}: {why}",
                s.failures, self.config.tolerable_failures
            );
            self.set_error(s, why);
        } else if self.final_id() == Some(id) {
            if s.error.is_none() {
                s.final_failed = true;
            }
            self.set_error(s, format!("the final checkpoint {id} failed: {why}"));
        }
    }
}

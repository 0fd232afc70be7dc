//! One worker's side of checkpointing: operator ids, the restored snapshot, the
//! asynchronous part of every task's snapshot, and completion notifications.
//!
//! Each snapshotting operator (source, keyed operator, transactional sink) is a *task*
//! with an id made of its kind and position in the job (`keyed-3`), the same on every
//! worker and every run of the same program; the snapshot of instance `i` of task `t`
//! lives at `<location>/<t>-<i>.kgs` (keyed) and `.ops` (operator state).

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use flowstate_core::error::StateResult;
use flowstate_core::operator::{OperatorSnapshot, OperatorStateStore};
use flowstate_core::snapshot::KeyedStateHandle;
use flowstate_core::storage::CheckpointStorage;

use crate::RuntimeError;
use crate::checkpoint::{Coordinator, OperatorSnapshotMeta, Restored, TaskAck};

/// The asynchronous part of a keyed snapshot, boxed.
pub(crate) type KeyedWrite =
    Box<dyn FnOnce(&dyn CheckpointStorage, &str) -> StateResult<KeyedStateHandle> + Send>;

/// A worker's checkpointing context, shared by the operators it builds.
pub(crate) struct WorkerCheckpoints {
    pub(crate) coordinator: Arc<Coordinator>,
    pub(crate) restored: Option<Arc<Restored>>,
    pub(crate) index: u32,
    pub(crate) peers: u32,
    next_uid: Cell<usize>,
    tasks: Cell<usize>,
    sources: Cell<usize>,
    claimed: RefCell<BTreeSet<String>>,
    /// Newest checkpoint whose completion was delivered on this worker.
    pub(crate) notified: Cell<u64>,
    #[allow(clippy::type_complexity)]
    listeners: RefCell<Vec<Box<dyn FnMut(u64) -> Result<(), RuntimeError>>>>,
}

impl WorkerCheckpoints {
    pub(crate) fn new(
        coordinator: Arc<Coordinator>,
        restored: Option<Arc<Restored>>,
        index: u32,
        peers: u32,
    ) -> Self {
        let notified = restored.as_ref().map_or(0, |r| r.metadata.id);
        WorkerCheckpoints {
            coordinator,
            restored,
            index,
            peers,
            next_uid: Cell::new(0),
            tasks: Cell::new(0),
            sources: Cell::new(0),
            claimed: RefCell::new(BTreeSet::new()),
            notified: Cell::new(notified),
            listeners: RefCell::new(Vec::new()),
        }
    }

    /// Registers a task of `kind`; returns its id and its restored snapshot, if any.
    pub(crate) fn task(&self, kind: &str, source: bool) -> (String, Option<OperatorSnapshotMeta>) {
        let n = self.next_uid.get() + 1;
        self.next_uid.set(n);
        self.tasks.set(self.tasks.get() + 1);
        if source {
            self.sources.set(self.sources.get() + 1);
        }
        let uid = format!("{kind}-{n}");
        self.claimed.borrow_mut().insert(uid.clone());
        let restored = self
            .restored
            .as_ref()
            .and_then(|r| r.operator(&uid).cloned());
        (uid, restored)
    }

    /// The restored operator state of this worker's instance of a task (redistributed
    /// by mode), or a fresh store.
    pub(crate) fn operator_store(
        &self,
        restored: Option<&OperatorSnapshotMeta>,
    ) -> Result<OperatorStateStore, RuntimeError> {
        match (restored, &self.restored) {
            (Some(meta), Some(r)) if !meta.operator.is_empty() => Ok(OperatorStateStore::restore(
                r.storage.as_ref(),
                &meta.operator,
                self.index,
                self.peers,
            )
            .map_err(|e| r.error(e))?),
            _ => Ok(OperatorStateStore::new(self.index)),
        }
    }

    /// Operators of the restored snapshot this job has no task for.
    pub(crate) fn unclaimed(&self) -> Vec<String> {
        let claimed = self.claimed.borrow();
        self.restored.as_ref().map_or_else(Vec::new, |r| {
            r.metadata
                .operators
                .keys()
                .filter(|k| !claimed.contains(*k))
                .cloned()
                .collect()
        })
    }

    /// (tasks, sources) registered on this worker.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.tasks.get(), self.sources.get())
    }

    /// Calls `f` with every checkpoint id that completes (sinks commit there).
    pub(crate) fn on_complete(&self, f: impl FnMut(u64) -> Result<(), RuntimeError> + 'static) {
        self.listeners.borrow_mut().push(Box::new(f));
    }

    /// Delivers the completion of every checkpoint up to the coordinator's newest.
    pub(crate) fn deliver_completions(&self) -> Result<(), RuntimeError> {
        let done = self.coordinator.completed();
        if done <= self.notified.get() {
            return Ok(());
        }
        self.notified.set(done);
        for l in self.listeners.borrow_mut().iter_mut() {
            l(done)?;
        }
        Ok(())
    }

    /// Hands on a task's snapshot for checkpoint `id` once its synchronous part is
    /// `taken`: the asynchronous part writes the files on its own thread and
    /// acknowledges, or declines the checkpoint on failure. A failed synchronous part
    /// declines it at once (it counts against the tolerable failures; the job goes
    /// on).
    pub(crate) fn snapshot_taken(
        &self,
        id: u64,
        uid: &str,
        taken: Result<(Option<KeyedWrite>, Option<OperatorSnapshot>), RuntimeError>,
        sync_started: Instant,
    ) {
        let (keyed, operator) = match taken {
            Ok(parts) => parts,
            Err(e) => {
                let why = format!("{uid}: synchronous part of the snapshot failed: {e}");
                self.coordinator.decline(id, why);
                return;
            }
        };
        let sync_ms = sync_started.elapsed().as_secs_f64() * 1e3;
        let coordinator = self.coordinator.clone();
        let location = coordinator.location(id);
        let base = format!("{location}/{uid}-{}", self.index);
        let uid = uid.to_string();
        self.coordinator.writer_started();
        let spawned = std::thread::Builder::new()
            .name(format!("snapshot-{uid}"))
            .spawn(move || {
                let started = Instant::now();
                let storage = coordinator.storage().clone();
                let result = (|| -> StateResult<TaskAck> {
                    let keyed = match keyed {
                        Some(w) => Some(w(storage.as_ref(), &format!("{base}.kgs"))?),
                        None => None,
                    };
                    let operator = match operator {
                        Some(o) => Some(o.write(storage.as_ref(), &format!("{base}.ops"))?),
                        None => None,
                    };
                    Ok(TaskAck {
                        uid,
                        keyed,
                        operator,
                        sync_ms,
                        async_ms: started.elapsed().as_secs_f64() * 1e3,
                    })
                })();
                crate::failpoint::hit("snapshot-written");
                match result {
                    Ok(ack) => coordinator.ack(id, ack),
                    Err(e) => coordinator.decline(id, e.to_string()),
                }
                coordinator.writer_finished();
            });
        if let Err(e) = spawned {
            self.coordinator.writer_finished();
            self.coordinator
                .decline(id, format!("cannot start a snapshot thread: {e}"));
        }
    }
}

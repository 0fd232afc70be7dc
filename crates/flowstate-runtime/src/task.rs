//! One worker's side of checkpointing: operator identity, the restored snapshot, the
//! asynchronous part of every task's snapshot, and completion notifications.
//!
//! Each snapshotting operator (source, keyed operator, transactional sink) is a *task*.
//! Its state is stored under its **uid**, the name the user gives it with
//! `.uid("...")` on its output (Flink's first savepoint rule: state follows uids, so
//! operators can be inserted, removed and reordered). An operator without one gets an
//! id derived from its kind and position in the job (`keyed-3`), the same on every
//! worker and every run of the same program, and the job warns once at start. The
//! snapshot of instance `i` of task `t` lives at `<location>/<t>-<i>.kgs` (keyed) and
//! `.ops` (operator state).
//!
//! Since the uid is given after the operator is built, operators register an identity
//! while the job is built and defer what needs the uid (restoring their state) to
//! [`WorkerCheckpoints::seal`], which runs once the whole job is described.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
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

/// Longest uid accepted (it names files in the checkpoint directory).
const MAX_UID_LEN: usize = 128;

/// Whether `uid` can name an operator: 1 to 128 ASCII letters, digits, `-`, `_` or
/// `.`, not starting with `.` (it becomes part of file names).
pub fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_UID_LEN
        && !uid.starts_with('.')
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A snapshotting operator as the job's build registered it.
#[derive(Debug)]
pub(crate) struct TaskIdentity {
    /// What it is (`source`, `keyed`, `file-sink`, ...), for messages.
    kind: String,
    /// The id derived from its kind and position in the job.
    derived: String,
    /// The uid the user gave it, if any.
    uid: RefCell<Option<String>>,
}

/// A registered operator, shared with the stream it made (which sets its uid).
pub(crate) type TaskRef = Rc<TaskIdentity>;

impl TaskIdentity {
    /// Gives the operator a uid (the last one given counts).
    pub(crate) fn set_uid(&self, uid: String) {
        *self.uid.borrow_mut() = Some(uid);
    }
    /// The uid, or the derived id.
    pub(crate) fn id(&self) -> String {
        self.uid
            .borrow()
            .clone()
            .unwrap_or_else(|| self.derived.clone())
    }
}

/// A task's resolved identity, what it stores its snapshots under.
#[derive(Clone, Debug)]
pub(crate) struct TaskId {
    /// The uid, or the derived id.
    pub(crate) uid: String,
    /// `uid` was given by the user.
    pub(crate) user: bool,
}

/// What an operator's start leaves for its first activation (see [`start_later`]).
pub(crate) type Started<T> = Rc<RefCell<Option<T>>>;

/// Runs `start` when the operator's uid is known: at [`WorkerCheckpoints::seal`] when
/// the job checkpoints, at once otherwise. The operator takes the result from the
/// returned cell at its first activation (which comes after the build).
pub(crate) fn start_later<T: 'static>(
    ctx: Option<&Rc<WorkerCheckpoints>>,
    start: impl FnOnce() -> T + 'static,
) -> Started<T> {
    let cell = Rc::new(RefCell::new(None));
    let slot = cell.clone();
    let run = move || *slot.borrow_mut() = Some(start());
    match ctx {
        Some(ctx) => ctx.defer(run),
        None => run(),
    }
    cell
}

/// A worker's checkpointing context, shared by the operators it builds.
pub(crate) struct WorkerCheckpoints {
    pub(crate) coordinator: Arc<Coordinator>,
    pub(crate) restored: Option<Arc<Restored>>,
    pub(crate) index: u32,
    pub(crate) peers: u32,
    next_uid: Cell<usize>,
    tasks: Cell<usize>,
    sources: Cell<usize>,
    identities: RefCell<Vec<TaskRef>>,
    #[allow(clippy::type_complexity)]
    deferred: RefCell<Vec<Box<dyn FnOnce()>>>,
    /// Snapshot entries some task restores from.
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
            identities: RefCell::new(Vec::new()),
            deferred: RefCell::new(Vec::new()),
            claimed: RefCell::new(BTreeSet::new()),
            notified: Cell::new(notified),
            listeners: RefCell::new(Vec::new()),
        }
    }

    /// Registers a task of `kind` (a source when `source`) while the job is built;
    /// its uid may still be set until [`WorkerCheckpoints::seal`].
    pub(crate) fn register(&self, kind: &str, source: bool) -> TaskRef {
        let n = self.next_uid.get() + 1;
        self.next_uid.set(n);
        self.tasks.set(self.tasks.get() + 1);
        if source {
            self.sources.set(self.sources.get() + 1);
        }
        let t = Rc::new(TaskIdentity {
            kind: kind.to_string(),
            derived: format!("{kind}-{n}"),
            uid: RefCell::new(None),
        });
        self.identities.borrow_mut().push(t.clone());
        t
    }

    /// Runs `f` once the job is described and every uid is known (at
    /// [`WorkerCheckpoints::seal`]); restoring state needs the uid.
    pub(crate) fn defer(&self, f: impl FnOnce() + 'static) {
        self.deferred.borrow_mut().push(Box::new(f));
    }

    /// Ends the build: checks the uids (well-formed, none twice), warns once about
    /// operators without one, then runs what the operators deferred, in the order
    /// they were built. On a bad uid nothing deferred runs (the job fails).
    pub(crate) fn seal(&self) -> Result<(), RuntimeError> {
        let identities = self.identities.borrow().clone();
        let mut seen = BTreeSet::new();
        for t in &identities {
            let id = t.id();
            // A derived id names files too: a connector's name must be as safe.
            if !valid_uid(&id) {
                let what = if t.uid.borrow().is_some() {
                    format!("uid {id:?} of a {} operator", t.kind)
                } else {
                    format!("operator name {:?} (id {id:?})", t.kind)
                };
                return Err(RuntimeError::Config(format!(
                    "{what}: a uid or name is 1 to {MAX_UID_LEN} ASCII letters, digits, '-', \
                     '_' or '.', not starting with '.'"
                )));
            }
            if !seen.insert(id.clone()) {
                return Err(RuntimeError::Config(format!(
                    "uid {id:?} is given to more than one operator: uids must be unique in a job"
                )));
            }
        }
        let missing: Vec<String> = identities
            .iter()
            .filter(|t| t.uid.borrow().is_none())
            .map(|t| t.derived.clone())
            .collect();
        if self.index == 0 && !missing.is_empty() {
            tracing::warn!(
                "operators without a uid: {}; their state is stored under ids derived from \
                 their position in the job, which change when operators are added or \
                 removed: give every stateful operator a `.uid(\"...\")`",
                missing.join(", ")
            );
        }
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        for f in deferred {
            f();
        }
        Ok(())
    }

    /// A registered task's id and its restored snapshot, if any: the entry stored
    /// under its uid; for an operator that got its uid after the snapshot was taken,
    /// the entry stored under its derived id (never another operator's uid).
    pub(crate) fn resolve(&self, t: &TaskIdentity) -> (TaskId, Option<OperatorSnapshotMeta>) {
        let id = TaskId {
            uid: t.id(),
            user: t.uid.borrow().is_some(),
        };
        let Some(r) = &self.restored else {
            return (id, None);
        };
        if let Some(m) = r.operator(&id.uid) {
            self.claimed.borrow_mut().insert(id.uid.clone());
            return (id, Some(m.clone()));
        }
        match r.operator(&t.derived) {
            Some(m) if id.user && !m.user_uid => {
                if self.index == 0 {
                    tracing::info!(
                        "operator {:?} restores the state stored under {:?}, the id its \
                         position gave it before it had a uid",
                        id.uid,
                        t.derived
                    );
                }
                self.claimed.borrow_mut().insert(t.derived.clone());
                (id, Some(m.clone()))
            }
            _ => (id, None),
        }
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
    /// `taken` (started at `sync_started`, holding `inflight_bytes` of records the
    /// task held back): the asynchronous part writes the files on its own thread and
    /// acknowledges, or declines the checkpoint on failure. A failed synchronous part
    /// declines it at once (it counts against the tolerable failures; the job goes
    /// on).
    pub(crate) fn snapshot_taken(
        &self,
        id: u64,
        task: &TaskId,
        taken: Result<(Option<KeyedWrite>, Option<OperatorSnapshot>), RuntimeError>,
        sync_started: Instant,
        inflight_bytes: u64,
    ) {
        let (keyed, operator) = match taken {
            Ok(parts) => parts,
            Err(e) => {
                let why = format!("{}: synchronous part of the snapshot failed: {e}", task.uid);
                self.coordinator.decline(id, why);
                return;
            }
        };
        let sync_ms = sync_started.elapsed().as_secs_f64() * 1e3;
        let alignment_ms = self.coordinator.triggered_at(id).map_or(0.0, |t| {
            sync_started.saturating_duration_since(t).as_secs_f64() * 1e3
        });
        let coordinator = self.coordinator.clone();
        let location = coordinator.location(id);
        let base = format!("{location}/{}-{}", task.uid, self.index);
        let TaskId { uid, user } = task.clone();
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
                        user_uid: user,
                        keyed,
                        operator,
                        sync_ms,
                        async_ms: started.elapsed().as_secs_f64() * 1e3,
                        alignment_ms,
                        inflight_bytes,
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

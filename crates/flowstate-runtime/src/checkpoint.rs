//! Checkpoints of a running job: settings, the per-process coordinator, the
//! `_metadata` of a complete checkpoint, recovery and retention.
//!
//! **Barriers are timestamps.** Every record's timely time carries its checkpoint
//! interval ([`crate::time`]). Triggering checkpoint `c` moves every source from
//! interval `c` to `c + 1` (a source snapshots its read position as it moves); an
//! operator whose input frontier has passed interval `c` has received every record of
//! checkpoints `<= c` and none later is processed before it snapshots: that is the
//! aligned Chandy–Lamport cut, with timely's progress tracking doing the alignment.
//! Records of checkpoint `c` an operator cannot process yet (waiting for the
//! watermark) are part of its snapshot (`_inflight` keyed state) and are processed
//! after a restore exactly when they would have been.
//!
//! **Two phases.** The synchronous part runs on the worker thread (backend snapshot,
//! source position, sink pre-commit); the asynchronous part writes the files on its
//! own thread and acknowledges to the [`Coordinator`]. When every task of every worker
//! has acknowledged, the coordinator writes `chk-<id>/_metadata` in one atomic put,
//! registers shared files, applies retention, and workers deliver
//! `notify_checkpoint_complete` to their operators (sinks commit, the RocksDB backend
//! learns which uploaded files later checkpoints may reuse).
//!
//! **Layout** (`docs/formats.md`): `chk-<id>/<operator>-<subtask>.kgs|.ops` and
//! `chk-<id>/_metadata`; `shared/` holds RocksDB files of incremental checkpoints;
//! `savepoints/sp-<id>/` holds savepoints (`taskowned/` is reserved). A checkpoint
//! without `_metadata` is not a checkpoint: a crash at any moment leaves every earlier
//! complete one intact.
//!
//! **Several processes.** Every process has a coordinator for its own workers.
//! Process 0 leads: it triggers, times out, completes (writes `_metadata`) and retains;
//! the others learn of triggers, aborts, completions and the final checkpoint from it,
//! and send it their tasks' acknowledgements, over a small timely dataflow of its own
//! ([`Control`]). The cut stays consistent without any clock agreement: the interval
//! coordinate of the timestamps is the barrier wherever it is advanced.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowstate_core::operator::OperatorStateHandle;
use flowstate_core::registry::SharedStateRegistry;
use flowstate_core::snapshot::KeyedStateHandle;
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::ObjectCheckpointStorage;
use serde::{Deserialize, Serialize};

use crate::RuntimeError;

/// A file in the checkpoint directory that asks the running job for a savepoint.
pub const SAVEPOINT_REQUEST: &str = "_savepoint_request";

/// The format of a savepoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SavepointFormat {
    /// Backend-independent: restores on any backend at any parallelism (default).
    #[default]
    Canonical,
    /// The backend's own files (RocksDB: its SST files, self-contained under the
    /// savepoint's directory): faster to take and restore, same backend only.
    Native,
}

/// Asks the job running on the local checkpoint directory `dir` for a savepoint of
/// `format` (what `flowstate savepoint DIR` does); with `stop`, the job stops once the
/// savepoint is complete (Flink's stop-with-savepoint): its sources read nothing after
/// the savepoint's cut, the sinks commit through it, and every worker returns.
///
/// The savepoint appears as `dir/savepoints/sp-<id>/_metadata`.
pub fn request_savepoint(dir: &Path, format: SavepointFormat, stop: bool) -> std::io::Result<()> {
    let mut words = Vec::new();
    if format == SavepointFormat::Native {
        words.push("native");
    }
    if stop {
        words.push("stop");
    }
    std::fs::write(dir.join(SAVEPOINT_REQUEST), words.join(" "))
}

/// Version of the `_metadata` JSON document.
pub const METADATA_VERSION: u32 = 1;

/// Where a job's state comes from when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The newest complete checkpoint in the checkpoint directory, if there is one
    /// (a restarted job resumes; a new one starts empty).
    #[default]
    Latest,
    /// Start empty even when checkpoints exist (their ids are not reused).
    Nothing,
    /// A checkpoint (`.../chk-<id>`) or savepoint (`.../savepoints/sp-<id>`) directory.
    Path(PathBuf),
}

/// Who owns the files of the snapshot a job was restored from (Flink's restore modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClaimMode {
    /// The job never deletes them, and its first checkpoint is a full one that does not
    /// refer to them (Flink's default).
    #[default]
    NoClaim,
    /// The job owns them: a restored checkpoint of its own directory joins retention,
    /// and later incremental checkpoints may refer to its files.
    Claim,
}

/// Checkpoint settings of a job (Flink's `execution.checkpointing.*`).
#[derive(Clone)]
pub struct CheckpointConfig {
    /// Where checkpoints go (a local directory by default; any object store).
    pub storage: Arc<dyn CheckpointStorage>,
    /// The directory behind `storage` when local (savepoints are written below it).
    pub dir: Option<PathBuf>,
    /// Time between checkpoint triggers.
    pub interval: Duration,
    /// A checkpoint not complete after this long is aborted.
    pub timeout: Duration,
    /// Least time between the end of one checkpoint and the next trigger.
    pub min_pause: Duration,
    /// Checkpoints in flight at once.
    pub max_concurrent: usize,
    /// Complete checkpoints kept (older ones and the files only they use are deleted).
    pub retained: usize,
    /// Aborted checkpoints in a row tolerated before the job fails.
    pub tolerable_failures: u32,
    /// Incremental checkpoints (RocksDB uploads only new files); the heap backend always
    /// writes full canonical snapshots.
    pub incremental: bool,
    /// What to restore from at start.
    pub restore: RestoreFrom,
    /// Ownership of the restored snapshot's files.
    pub claim_mode: ClaimMode,
    /// Start even when the snapshot holds state of operators the job no longer has.
    pub allow_non_restored_state: bool,
}

impl std::fmt::Debug for CheckpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointConfig")
            .field("storage", &self.storage)
            .field("interval", &self.interval)
            .field("retained", &self.retained)
            .field("restore", &self.restore)
            .finish_non_exhaustive()
    }
}

impl CheckpointConfig {
    /// Checkpoints in a local directory (created if missing), every `interval`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let dir = tempfile::tempdir().unwrap();
    /// let c = flowstate_runtime::CheckpointConfig::local(dir.path(), Duration::from_millis(500))
    ///     .unwrap()
    ///     .retained(2);
    /// assert_eq!(c.retained, 2);
    /// ```
    pub fn local(dir: impl AsRef<Path>, interval: Duration) -> Result<Self, RuntimeError> {
        let storage = ObjectCheckpointStorage::local(dir.as_ref()).map_err(|e| {
            RuntimeError::Checkpoint(format!(
                "checkpoint directory {}: {e}",
                dir.as_ref().display()
            ))
        })?;
        let mut c = Self::on(Arc::new(storage), interval);
        c.dir = Some(dir.as_ref().to_path_buf());
        Ok(c)
    }

    /// Checkpoints in any checkpoint storage (e.g. S3-compatible).
    pub fn on(storage: Arc<dyn CheckpointStorage>, interval: Duration) -> Self {
        CheckpointConfig {
            storage,
            dir: None,
            interval,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            retained: 1,
            tolerable_failures: 0,
            incremental: true,
            restore: RestoreFrom::Latest,
            claim_mode: ClaimMode::NoClaim,
            allow_non_restored_state: false,
        }
    }

    /// Sets the number of complete checkpoints kept.
    pub fn retained(mut self, n: usize) -> Self {
        self.retained = n;
        self
    }
    /// Sets where state is restored from.
    pub fn restore(mut self, from: RestoreFrom) -> Self {
        self.restore = from;
        self
    }
    /// Sets the checkpoint timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets the least pause between checkpoints.
    pub fn min_pause(mut self, pause: Duration) -> Self {
        self.min_pause = pause;
        self
    }
    /// Sets how many checkpoints may be in flight.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }
    /// Sets how many aborted checkpoints in a row are tolerated.
    pub fn tolerable_failures(mut self, n: u32) -> Self {
        self.tolerable_failures = n;
        self
    }
    /// Turns incremental checkpoints on or off.
    pub fn incremental(mut self, on: bool) -> Self {
        self.incremental = on;
        self
    }
    /// Sets the claim mode of the restore.
    pub fn claim_mode(mut self, mode: ClaimMode) -> Self {
        self.claim_mode = mode;
        self
    }
    /// Allows restoring a snapshot with state of operators the job no longer has.
    pub fn allow_non_restored_state(mut self, allow: bool) -> Self {
        self.allow_non_restored_state = allow;
        self
    }

    /// Whether the job owns the files of `restored`: resuming from the job's own newest
    /// checkpoint is failover (always owned); a named snapshot only in claim mode, and
    /// only inside this job's directory.
    pub(crate) fn claims(&self, restored: &Restored) -> bool {
        restored.own && (self.restore == RestoreFrom::Latest || self.claim_mode == ClaimMode::Claim)
    }

    pub(crate) fn validate(&self) -> Result<(), RuntimeError> {
        if self.interval.is_zero() || self.max_concurrent == 0 || self.retained == 0 {
            return Err(RuntimeError::Config(format!(
                "checkpoint interval, max concurrent and retained count must be positive \
                 (got {:?}, {}, {})",
                self.interval, self.max_concurrent, self.retained
            )));
        }
        Ok(())
    }
}

/// What a snapshot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// A periodic checkpoint, owned by the job and deleted by retention.
    Checkpoint,
    /// A user-triggered savepoint in the canonical format, never deleted by the job.
    Savepoint,
    /// A user-triggered savepoint in the backend's native format (self-contained;
    /// restores faster, but only on the same backend), never deleted by the job.
    NativeSavepoint,
}

impl SnapshotKind {
    /// The directory of snapshot `id` of this kind, relative to the storage root.
    fn location(self, id: u64) -> String {
        match self {
            SnapshotKind::Checkpoint => format!("chk-{id}"),
            SnapshotKind::Savepoint | SnapshotKind::NativeSavepoint => {
                format!("savepoints/sp-{id}")
            }
        }
    }
}

/// The snapshot of one operator (all its instances) in a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorSnapshotMeta {
    /// Keyed state, one handle per instance.
    pub keyed: Vec<KeyedStateHandle>,
    /// Operator state, one handle per instance.
    pub operator: Vec<OperatorStateHandle>,
    /// Longest synchronous part over the instances, in milliseconds.
    pub sync_ms: f64,
    /// Longest asynchronous part over the instances, in milliseconds.
    pub async_ms: f64,
}

impl OperatorSnapshotMeta {
    /// Bytes needed to restore this operator.
    pub fn full_size(&self) -> u64 {
        self.keyed
            .iter()
            .map(KeyedStateHandle::full_size)
            .sum::<u64>()
            + self.operator.iter().map(|h| h.size).sum::<u64>()
    }
    /// Bytes this checkpoint wrote for the operator.
    pub fn uploaded_size(&self) -> u64 {
        self.keyed.iter().map(|h| h.uploaded_bytes).sum::<u64>()
            + self.operator.iter().map(|h| h.size).sum::<u64>()
    }
}

/// The `_metadata` of a complete checkpoint or savepoint (JSON; `docs/formats.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// [`METADATA_VERSION`] when written.
    pub version: u32,
    /// Checkpoint id (ids grow by one per trigger).
    pub id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Directory of this snapshot relative to the storage root its paths are relative
    /// to (`chk-7`, `savepoints/sp-9`).
    pub location: String,
    /// Taken after every source had ended: the job's complete output is committed.
    pub finished: bool,
    /// Wall-clock trigger time, milliseconds since the Unix epoch.
    pub triggered_at_ms: u64,
    /// Trigger to `_metadata`, in milliseconds.
    pub duration_ms: u64,
    /// Workers of the job that wrote it.
    pub parallelism: u32,
    /// Key groups.
    pub max_parallelism: u32,
    /// Per operator (by its id in the job), its instances' snapshots.
    pub operators: BTreeMap<String, OperatorSnapshotMeta>,
}

impl CheckpointMetadata {
    /// Bytes needed to restore the whole job.
    pub fn full_size(&self) -> u64 {
        self.operators.values().map(|o| o.full_size()).sum()
    }
    /// Bytes written by this checkpoint.
    pub fn uploaded_size(&self) -> u64 {
        self.operators.values().map(|o| o.uploaded_size()).sum()
    }
    /// Every keyed handle.
    pub fn keyed_handles(&self) -> Vec<KeyedStateHandle> {
        self.operators
            .values()
            .flat_map(|o| o.keyed.iter().cloned())
            .collect()
    }

    fn parse(bytes: &[u8], path: &str) -> Result<Self, String> {
        let m: CheckpointMetadata =
            serde_json::from_slice(bytes).map_err(|e| format!("{path}: unreadable ({e})"))?;
        if m.version > METADATA_VERSION {
            return Err(format!(
                "{path}: metadata version {} is newer than this build's {METADATA_VERSION}",
                m.version
            ));
        }
        Ok(m)
    }

    /// Every file the snapshot needs exists with the recorded size.
    fn check_files(&self, storage: &dyn CheckpointStorage) -> Result<(), String> {
        let mut files: Vec<(String, u64)> = Vec::new();
        for o in self.operators.values() {
            for h in &o.keyed {
                files.push((h.path.clone(), h.size));
                files.extend(h.shared_files.iter().map(|f| (f.path.clone(), f.size)));
            }
            files.extend(o.operator.iter().map(|h| (h.path.clone(), h.size)));
        }
        for (path, size) in files {
            match storage.size(&path) {
                Ok(s) if s == size => {}
                Ok(s) => return Err(format!("{path} is {s} bytes, the metadata says {size}")),
                Err(e) => return Err(format!("{path}: {e}")),
            }
        }
        Ok(())
    }
}

/// Reads the metadata of the checkpoint or savepoint in `dir`.
pub fn read_metadata(dir: &Path) -> Result<CheckpointMetadata, RuntimeError> {
    let path = dir.join("_metadata");
    let bytes = std::fs::read(&path)
        .map_err(|e| RuntimeError::Checkpoint(format!("{}: {e}", path.display())))?;
    CheckpointMetadata::parse(&bytes, &path.display().to_string()).map_err(RuntimeError::Checkpoint)
}

/// Ids of the directories `chk-<id>` under the storage root, with whether each has
/// `_metadata`, ascending.
fn checkpoint_dirs(storage: &dyn CheckpointStorage) -> Result<BTreeMap<u64, bool>, RuntimeError> {
    let mut ids = BTreeMap::new();
    for p in storage
        .list("")
        .map_err(|e| RuntimeError::Checkpoint(e.to_string()))?
    {
        let Some(rest) = p.strip_prefix("chk-") else {
            continue;
        };
        let (id, file) = rest.split_once('/').unwrap_or((rest, ""));
        if let Ok(id) = id.parse::<u64>() {
            let has = ids.entry(id).or_insert(false);
            *has |= file == "_metadata";
        }
    }
    Ok(ids)
}

/// A listed checkpoint: its metadata, or its id and why it cannot be used.
pub type Listed = Result<CheckpointMetadata, (u64, String)>;

/// Complete checkpoints of a directory, newest first, with the reason each unusable
/// one was skipped.
pub fn list_checkpoints(storage: &dyn CheckpointStorage) -> Result<Vec<Listed>, RuntimeError> {
    let mut out = Vec::new();
    for (id, has_meta) in checkpoint_dirs(storage)?.into_iter().rev() {
        if !has_meta {
            continue;
        }
        let path = format!("chk-{id}/_metadata");
        let r = storage
            .get(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| CheckpointMetadata::parse(&b, &path))
            .and_then(|m| m.check_files(storage).map(|()| m));
        out.push(r.map_err(|e| (id, e)));
    }
    Ok(out)
}

/// A snapshot chosen to restore from.
#[derive(Clone, Debug)]
pub struct Restored {
    /// Its metadata.
    pub metadata: CheckpointMetadata,
    /// The storage its paths are relative to.
    pub storage: Arc<dyn CheckpointStorage>,
    /// Whether it lives in this job's own checkpoint directory.
    pub own: bool,
}

impl Restored {
    /// A restore failure of this snapshot (makes [`crate::execute`] fall back).
    pub(crate) fn error(&self, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Restore(format!("checkpoint {}: {e}", self.metadata.id))
    }

    /// The snapshot of operator `uid`, if it has one.
    pub fn operator(&self, uid: &str) -> Option<&OperatorSnapshotMeta> {
        self.metadata.operators.get(uid)
    }
}

/// The candidates to restore from, in the order to try them: the newest complete
/// checkpoint first, then older ones (a corrupt newest one falls back, with a log
/// line), or the one named path. Also returns the highest checkpoint id in use, so new
/// checkpoints never reuse a directory.
pub(crate) fn restore_candidates(
    config: &CheckpointConfig,
) -> Result<(Vec<Restored>, u64), RuntimeError> {
    let dirs = checkpoint_dirs(config.storage.as_ref())?;
    // Savepoints share the id sequence: a new run must not reuse one's id either (its
    // sink transactions are named by id).
    let savepoint_ids = config
        .storage
        .list("savepoints/")
        .map_err(|e| RuntimeError::Checkpoint(e.to_string()))?
        .into_iter()
        .filter_map(|p| {
            p.strip_prefix("savepoints/sp-")?
                .split('/')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max();
    let mut highest = dirs
        .keys()
        .next_back()
        .copied()
        .unwrap_or(0)
        .max(savepoint_ids.unwrap_or(0));
    let mut out = Vec::new();
    match &config.restore {
        RestoreFrom::Nothing => {}
        RestoreFrom::Latest => {
            for c in list_checkpoints(config.storage.as_ref())? {
                match c {
                    Ok(metadata) => out.push(Restored {
                        metadata,
                        storage: config.storage.clone(),
                        own: true,
                    }),
                    Err((id, why)) => tracing::warn!(
                        checkpoint = id,
                        "checkpoint {id} is not usable, falling back to an older one: {why}"
                    ),
                }
            }
        }
        RestoreFrom::Path(dir) => {
            let metadata = read_metadata(dir)?;
            // The root is the named directory without the snapshot's own location.
            let mut root = dir.clone();
            for _ in Path::new(&metadata.location).components() {
                root.pop();
            }
            let storage: Arc<dyn CheckpointStorage> = Arc::new(
                ObjectCheckpointStorage::local(&root)
                    .map_err(|e| RuntimeError::Checkpoint(format!("{}: {e}", root.display())))?,
            );
            metadata
                .check_files(storage.as_ref())
                .map_err(RuntimeError::Checkpoint)?;
            let own = config
                .dir
                .as_ref()
                .is_some_and(|d| same_dir(d, &root) && metadata.kind == SnapshotKind::Checkpoint);
            out.push(Restored {
                metadata,
                storage,
                own,
            });
        }
    }
    highest = out.iter().map(|r| r.metadata.id).fold(highest, u64::max);
    Ok((out, highest))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// One task's acknowledgement of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TaskAck {
    pub(crate) uid: String,
    pub(crate) keyed: Option<KeyedStateHandle>,
    pub(crate) operator: Option<OperatorStateHandle>,
    pub(crate) sync_ms: f64,
    pub(crate) async_ms: f64,
}

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

/// Where this process stands in a job that runs as several processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcessRole {
    /// This process's index (0 leads: it triggers, completes and retains).
    pub(crate) process: usize,
    /// Processes of the job.
    pub(crate) processes: usize,
}

impl ProcessRole {
    /// The only process of the job.
    pub(crate) const SINGLE: ProcessRole = ProcessRole {
        process: 0,
        processes: 1,
    };
    fn leads(self) -> bool {
        self.process == 0
    }
}

/// What the coordinators of a job's processes tell each other (over a small timely
/// dataflow of their own, so no second network stack): the leader (process 0)
/// triggers, aborts, completes and ends checkpoints; the others report their tasks'
/// acknowledgements, declines, and that their sources ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Control {
    /// Leader: checkpoint `id` of `kind` is triggered (sources move past interval `id`);
    /// `stop`: the job stops once it completes.
    Trigger {
        id: u64,
        kind: SnapshotKind,
        stop: bool,
    },
    /// Leader: every source ended; `id` is the final checkpoint.
    Final { id: u64 },
    /// Leader: checkpoint `id` was aborted (timed out or declined).
    Abort { id: u64 },
    /// Leader: checkpoint `id` is complete (its `_metadata` is written).
    Complete { id: u64 },
    /// Any: the job failed.
    Fail { why: String },
    /// Follower: every task of the process acknowledged checkpoint `id`.
    Acks { id: u64, acks: Vec<TaskAck> },
    /// Follower: a task of the process declined checkpoint `id`.
    Decline { id: u64, why: String },
    /// Follower: every source of the process ended.
    Exhausted,
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
    savepoint_requested: Option<SavepointFormat>,
    /// The requested savepoint is to stop the job.
    stop_requested: bool,
    last_request_check: Instant,
    error: Option<String>,
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
    /// Snapshot writer threads still running.
    writers: AtomicUsize,
    /// The savepoint that stops the job (0: none).
    stop_at: AtomicU64,
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
    /// checkpoint is `start`; `restored` (a snapshot of this job's directory restored
    /// in claim mode) joins retention.
    pub(crate) fn new(
        config: CheckpointConfig,
        workers: usize,
        role: ProcessRole,
        max_parallelism: u32,
        start: u64,
        restored: Option<&Restored>,
    ) -> Self {
        let mut registry = SharedStateRegistry::new();
        let mut retained = VecDeque::new();
        if let Some(r) = restored {
            let handles = r.metadata.keyed_handles();
            if config.claims(r) {
                // Every complete checkpoint of the job's own directory joins retention,
                // not only the restored one: a crash between a `_metadata` and its
                // retention leaves older ones that nothing else would ever delete
                // (and whose shared files retention would otherwise not protect).
                let mut own: Vec<CheckpointMetadata> = if r.own {
                    list_checkpoints(config.storage.as_ref())
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(Result::ok)
                        .filter(|m| m.kind == SnapshotKind::Checkpoint && m.id != r.metadata.id)
                        .collect()
                } else {
                    Vec::new()
                };
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
        Coordinator {
            config,
            workers,
            role,
            max_parallelism,
            interval: AtomicU64::new(start),
            final_id: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            start,
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
                failures: 0,
                registry,
                retained,
                savepoint_requested: None,
                stop_requested: false,
                last_request_check: now,
                error: None,
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

    /// Stops checkpointing: the job failed (every worker stops when it sees this).
    pub(crate) fn fail(&self, why: String) {
        let mut s = self.lock();
        self.set_error(&mut s, why);
    }

    /// Records the job's failure and tells the other processes (once).
    fn set_error(&self, s: &mut Inner, why: String) {
        if s.error.is_some() {
            return;
        }
        for p in (0..self.role.processes).filter(|p| *p != self.role.process) {
            s.outbox.push((p, Control::Fail { why: why.clone() }));
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
            if let Err(e) = storage.delete(f) {
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
            Control::Fail { why } => {
                if s.error.is_none() {
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
        // Timeouts.
        let expired: Vec<u64> = s
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.started) > self.config.timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.drop_pending(&mut s, id);
            self.announce(&mut s, &Control::Abort { id });
            s.failures += 1;
            tracing::warn!(checkpoint = id, "checkpoint {id} timed out and was aborted");
            if s.failures > self.config.tolerable_failures {
                let why = format!(
                    "{} checkpoints in a row failed (tolerable: {})",
                    s.failures, self.config.tolerable_failures
                );
                self.set_error(&mut s, why);
                return;
            }
        }
        if self.final_id().is_some() || self.stopping() {
            return;
        }
        // `flowstate savepoint DIR` asks through a file in the checkpoint directory.
        if let Some(dir) = &self.config.dir
            && now.duration_since(s.last_request_check) >= Duration::from_millis(100)
        {
            s.last_request_check = now;
            let request = dir.join(SAVEPOINT_REQUEST);
            if let Ok(what) = std::fs::read_to_string(&request)
                && std::fs::remove_file(&request).is_ok()
            {
                let words: Vec<&str> = what.split_whitespace().collect();
                s.savepoint_requested = Some(if words.contains(&"native") {
                    SavepointFormat::Native
                } else {
                    SavepointFormat::Canonical
                });
                s.stop_requested = words.contains(&"stop");
            }
        }
        let current = self.interval();
        let all_ended =
            s.sources > 0 && sources_ended && s.exhausted_processes + 1 >= self.role.processes;
        if all_ended {
            // Every source ended: the current interval is the final checkpoint.
            s.pending
                .insert(current, Pending::new(SnapshotKind::Checkpoint));
            self.announce(&mut s, &Control::Final { id: current });
            self.final_id.store(current, Ordering::Release);
            return;
        }
        let due = now.duration_since(s.last_trigger) >= self.config.interval
            && now.duration_since(s.last_complete) >= self.config.min_pause;
        let room = s.pending.len() < self.config.max_concurrent;
        // A savepoint goes ahead of the limits on concurrent checkpoints and the
        // pause between them, as in Flink.
        if (room && due) || s.savepoint_requested.is_some() {
            let kind = match std::mem::take(&mut s.savepoint_requested) {
                None => SnapshotKind::Checkpoint,
                Some(SavepointFormat::Canonical) => SnapshotKind::Savepoint,
                Some(SavepointFormat::Native) => SnapshotKind::NativeSavepoint,
            };
            let stop = kind != SnapshotKind::Checkpoint && std::mem::take(&mut s.stop_requested);
            if stop {
                self.stop_at.store(current, Ordering::Release);
            }
            s.pending.insert(current, Pending::new(kind));
            self.announce(
                &mut s,
                &Control::Trigger {
                    id: current,
                    kind,
                    stop,
                },
            );
            s.last_trigger = now;
            self.interval.store(current + 1, Ordering::Release);
            tracing::debug!(checkpoint = current, ?kind, "triggered");
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
        match self.complete(s, id, p) {
            Ok(()) => self.announce(s, &Control::Complete { id }),
            Err(e) => {
                self.announce(s, &Control::Abort { id });
                s.failures += 1;
                tracing::warn!(checkpoint = id, "checkpoint {id} failed: {e}");
                if s.failures > self.config.tolerable_failures {
                    self.set_error(s, format!("checkpoint {id} failed: {e}"));
                }
            }
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
        self.announce(s, &Control::Abort { id });
        s.failures += 1;
        tracing::warn!(checkpoint = id, "checkpoint {id} declined: {why}");
        if s.failures > self.config.tolerable_failures || self.final_id() == Some(id) {
            self.set_error(s, format!("checkpoint {id} failed: {why}"));
        }
    }

    fn complete(&self, s: &mut Inner, id: u64, p: Pending) -> Result<(), String> {
        let mut operators: BTreeMap<String, OperatorSnapshotMeta> = BTreeMap::new();
        for a in p.acks {
            let o = operators.entry(a.uid).or_default();
            o.keyed.extend(a.keyed);
            o.operator.extend(a.operator);
            o.sync_ms = o.sync_ms.max(a.sync_ms);
            o.async_ms = o.async_ms.max(a.async_ms);
        }
        for o in operators.values_mut() {
            o.keyed.sort_by_key(|h| h.key_group_range.start());
            o.operator.sort_by_key(|h| h.subtask_index);
        }
        let location = p.kind.location(id);
        let meta = CheckpointMetadata {
            version: METADATA_VERSION,
            id,
            kind: p.kind,
            location: location.clone(),
            finished: self.final_id() == Some(id),
            triggered_at_ms: p.triggered_at_ms,
            duration_ms: u64::try_from(p.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            parallelism: (self.workers * self.role.processes) as u32,
            max_parallelism: self.max_parallelism,
            operators,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
        let storage = self.config.storage.as_ref();
        crate::failpoint::hit("before-metadata");
        storage
            .put(&format!("{location}/_metadata"), json.into())
            .map_err(|e| e.to_string())?;
        crate::failpoint::hit("after-metadata");
        if p.kind == SnapshotKind::Checkpoint {
            // Older checkpoints still in flight are subsumed (Flink does the same):
            // completing one after this would put it after this one in retention, and
            // retention would then drop files of checkpoints older than both that it
            // still needs.
            let subsumed: Vec<u64> = s
                .pending
                .range(..id)
                .filter(|(_, q)| q.kind == SnapshotKind::Checkpoint)
                .map(|(k, _)| *k)
                .collect();
            for old in subsumed {
                self.drop_pending(s, old);
                tracing::debug!(checkpoint = old, "subsumed by checkpoint {id}");
            }
        }
        s.failures = 0;
        s.last_complete = Instant::now();
        if p.kind == SnapshotKind::Checkpoint {
            s.registry.register(id, &meta.keyed_handles());
            s.retained.push_back(id);
            self.apply_retention(s)
                .map_err(|e| format!("retention: {e}"))?;
        } else {
            // A savepoint's files are never deleted by the job (they are canonical
            // and under savepoints/, but pin anything shared to be sure).
            s.registry.pin(&meta.keyed_handles());
        }
        tracing::info!(
            checkpoint = id,
            duration_ms = meta.duration_ms,
            full_bytes = meta.full_size(),
            uploaded_bytes = meta.uploaded_size(),
            "{} {id} complete",
            if p.kind != SnapshotKind::Checkpoint {
                "savepoint"
            } else {
                "checkpoint"
            }
        );
        self.completed.fetch_max(id, Ordering::AcqRel);
        Ok(())
    }

    /// Keeps the newest `retained` checkpoints: older `chk-` directories go, and shared
    /// files only they referred to.
    fn apply_retention(&self, s: &mut Inner) -> Result<(), String> {
        let storage = self.config.storage.as_ref();
        while s.retained.len() > self.config.retained {
            let Some(old) = s.retained.pop_front() else {
                break;
            };
            // Metadata first: a crash halfway leaves an incomplete directory, which
            // is ignored and cleaned up, never a complete-looking broken checkpoint.
            let prefix = format!("chk-{old}/");
            let mut files = storage.list(&prefix).map_err(|e| e.to_string())?;
            files.sort_by_key(|f| !f.ends_with("/_metadata"));
            for f in files {
                storage.delete(&f).map_err(|e| e.to_string())?;
            }
            for f in s.registry.discard(old) {
                storage.delete(&f).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// Deletes what a crashed run left: `chk-` directories without `_metadata` and shared
/// files no complete checkpoint refers to. Runs before the job starts.
pub(crate) fn clean_up_after_crash(config: &CheckpointConfig) -> Result<(), RuntimeError> {
    if let Some(dir) = &config.dir {
        remove_staged_uploads(dir);
    }
    let storage = config.storage.as_ref();
    let err = |e: flowstate_core::StorageError| RuntimeError::Checkpoint(e.to_string());
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    for (id, has_meta) in checkpoint_dirs(storage)? {
        if has_meta {
            if let Ok(b) = storage.get(&format!("chk-{id}/_metadata"))
                && let Ok(m) = CheckpointMetadata::parse(&b, "")
            {
                for h in m.keyed_handles() {
                    referenced.extend(h.shared_files.into_iter().map(|f| f.path));
                }
            }
            continue;
        }
        for f in storage.list(&format!("chk-{id}/")).map_err(err)? {
            storage.delete(&f).map_err(err)?;
        }
    }
    for f in storage.list("shared/").map_err(err)? {
        if !referenced.contains(&f) {
            storage.delete(&f).map_err(err)?;
        }
    }
    // Savepoints cut short: their directories without `_metadata`.
    let mut savepoints: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
    for f in storage.list("savepoints/").map_err(err)? {
        let Some(dir) = f
            .strip_prefix("savepoints/")
            .and_then(|r| r.split('/').next())
        else {
            continue;
        };
        let e = savepoints.entry(dir.to_string()).or_default();
        e.0 |= f == format!("savepoints/{dir}/_metadata");
        e.1.push(f);
    }
    for (_, (complete, files)) in savepoints {
        if !complete {
            for f in files {
                storage.delete(&f).map_err(err)?;
            }
        }
    }
    Ok(())
}

/// A local checkpoint directory's half-written files: the local object store writes
/// `<path>#<digits>` and renames it into place, so a killed process leaves these,
/// which the store itself never lists (or deletes). Best effort.
fn remove_staged_uploads(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_staged_uploads(&path);
            // Empty after that (and not the root): an incomplete checkpoint's.
            let _ = std::fs::remove_dir(&path);
        } else if name
            .split_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

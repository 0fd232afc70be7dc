//! Checkpoint settings: where checkpoints go, how often, what a job restores from and
//! who owns the restored files (Flink's `execution.checkpointing.*`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use flowstate_core::snapshot::ClaimMode;
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::CheckpointLocation;

use super::Restored;
use crate::RuntimeError;
use crate::handle::JobHandle;

/// Where a job's state comes from when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The newest complete checkpoint in the checkpoint directory, if there is one
    /// (a restarted job resumes; a new one starts empty).
    #[default]
    Latest,
    /// Start empty even when checkpoints exist (their ids are not reused).
    Nothing,
    /// A checkpoint (`.../chk-<id>`) or savepoint (`.../savepoints/sp-<id>`)
    /// directory, local or `s3://...` (a `PathBuf` converts with `.into()`).
    Path(CheckpointLocation),
}

/// Checkpoint settings of a job (Flink's `execution.checkpointing.*`).
#[derive(Clone)]
#[non_exhaustive]
pub struct CheckpointConfig {
    /// Where checkpoints go (a local directory by default; any object store).
    pub storage: Arc<dyn CheckpointStorage>,
    /// The checkpoint directory behind `storage` as the user named it (local or
    /// `s3://`); `None` for storage made by hand ([`CheckpointConfig::on`]).
    pub location: Option<CheckpointLocation>,
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
    /// Uids (or derived ids) whose state in the snapshot may be dropped when the job
    /// no longer has them: [`CheckpointConfig::allow_non_restored_state`] for named
    /// operators only.
    pub droppable: BTreeSet<String>,
    /// A handle through which code asks the running job for savepoints, stops or
    /// cancels it, and reads its status ([`crate::spawn`] sets one).
    pub handle: Option<JobHandle>,
    /// Local recovery (Flink's `state.backend.local-recovery`): this process keeps a
    /// copy of the checkpoint files it writes in this local directory and restores
    /// from it when it is whole, from the checkpoint storage otherwise
    /// ([`flowstate_storage::LocalRecovery`]).
    pub local_recovery: Option<PathBuf>,
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
        Self::at(
            &CheckpointLocation::Local(dir.as_ref().to_path_buf()),
            interval,
        )
    }

    /// Checkpoints in `location` (a local directory, created if missing, or
    /// `s3://bucket/prefix` reached as the environment says:
    /// [`flowstate_storage::S3Settings::from_env`]), every `interval`.
    pub fn at(location: &CheckpointLocation, interval: Duration) -> Result<Self, RuntimeError> {
        let storage = location.open().map_err(|e| {
            RuntimeError::Checkpoint(format!("checkpoint directory {location}: {e}"))
        })?;
        let mut c = Self::on(Arc::new(storage), interval);
        c.location = Some(location.clone());
        Ok(c)
    }

    /// The local checkpoint directory, when the checkpoints are local.
    pub fn local_dir(&self) -> Option<&Path> {
        self.location.as_ref().and_then(|l| l.local_dir())
    }

    /// Checkpoints in any checkpoint storage (e.g. S3-compatible).
    pub fn on(storage: Arc<dyn CheckpointStorage>, interval: Duration) -> Self {
        CheckpointConfig {
            storage,
            location: None,
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
            droppable: BTreeSet::new(),
            handle: None,
            local_recovery: None,
        }
    }

    /// Turns on local recovery with its copies in `dir` (see
    /// [`CheckpointConfig::local_recovery`]).
    pub fn local_recovery(mut self, dir: impl Into<PathBuf>) -> Self {
        self.local_recovery = Some(dir.into());
        self
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

    /// Allows dropping the state of operator `uid` alone, when the snapshot has it and
    /// the job no longer does (state of any other missing operator still refuses
    /// the restore).
    pub fn allow_non_restored_uid(mut self, uid: impl Into<String>) -> Self {
        self.droppable.insert(uid.into());
        self
    }

    /// Attaches a [`JobHandle`] to the job.
    pub fn handle(mut self, handle: JobHandle) -> Self {
        self.handle = Some(handle);
        self
    }

    /// Whether state of operator `uid` may be left behind.
    pub(crate) fn may_drop(&self, uid: &str) -> bool {
        self.allow_non_restored_state || self.droppable.contains(uid)
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

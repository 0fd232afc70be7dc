//! Choosing what a starting job restores from: the candidates, newest first, and the
//! checks a snapshot passes before any of its state is read.

use std::path::Path;
use std::sync::Arc;

use flowstate_core::StateError;
use flowstate_core::checkpoint_metadata::sp_id;
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::{CheckpointLocation, RetryingReads};

use super::metadata::checkpoint_dirs;
use super::{
    CheckpointConfig, CheckpointMetadata, OperatorSnapshotMeta, RestoreFrom, SnapshotKind,
    list_checkpoints, read_metadata,
};
use crate::RuntimeError;

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
    /// A restore failure of this snapshot: [`RuntimeError::Restore`] (makes
    /// [`crate::execute`] fall back to an older checkpoint) when the snapshot is
    /// damaged; a storage error that persisted through the retries fails the job
    /// instead, since falling back would repeat output committed since.
    pub(crate) fn error(&self, e: StateError) -> RuntimeError {
        let id = self.metadata.id;
        match &e {
            StateError::Storage(s) if s.is_transient() => RuntimeError::Checkpoint(format!(
                "checkpoint {id}: storage failed while restoring ({e}); not falling back to an \
                 older checkpoint"
            )),
            _ => self.damaged(e),
        }
    }

    /// The snapshot is damaged (makes [`crate::execute`] fall back).
    pub(crate) fn damaged(&self, why: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Restore(format!("checkpoint {}: {why}", self.metadata.id))
    }

    /// The snapshot of operator `uid`, if it has one.
    pub fn operator(&self, uid: &str) -> Option<&OperatorSnapshotMeta> {
        self.metadata.operators.get(uid)
    }
}

/// What a starting job may restore from.
#[derive(Debug)]
pub(crate) struct Candidates {
    /// In the order to try them: the newest complete checkpoint first, then older
    /// ones, or the one named path.
    pub(crate) usable: Vec<Restored>,
    /// Checkpoints with a `_metadata` that cannot be used, with why (newest first).
    pub(crate) unusable: Vec<(u64, String)>,
    /// The highest snapshot id in use, so new checkpoints never reuse a directory.
    pub(crate) highest: u64,
}

/// The candidates to restore from (see [`Candidates`]); a corrupt newest checkpoint
/// falls back to older ones with a log line.
pub(crate) fn restore_candidates(config: &CheckpointConfig) -> Result<Candidates, RuntimeError> {
    // The job's storage retries transient read errors (see `execute`): a storage
    // hiccup never makes a checkpoint look unusable.
    let storage = &config.storage;
    let dirs = checkpoint_dirs(storage.as_ref())?;
    // Savepoints share the id sequence: a new run must not reuse one's id either (its
    // sink transactions are named by id).
    let savepoint_ids = storage
        .list("savepoints/")
        .map_err(|e| RuntimeError::Checkpoint(e.to_string()))?
        .into_iter()
        .filter_map(|p| sp_id(p.strip_prefix("savepoints/")?.split('/').next()?))
        .max();
    let mut highest = dirs
        .keys()
        .next_back()
        .copied()
        .unwrap_or(0)
        .max(savepoint_ids.unwrap_or(0));
    let mut out = Vec::new();
    let mut unusable = Vec::new();
    match &config.restore {
        RestoreFrom::Nothing => {}
        RestoreFrom::Latest => {
            for c in list_checkpoints(storage.as_ref())? {
                match c {
                    Ok(metadata) => out.push(Restored {
                        metadata,
                        storage: storage.clone(),
                        own: true,
                    }),
                    Err((id, why)) => {
                        tracing::warn!(
                            checkpoint = id,
                            "checkpoint {id} is not usable, falling back to an older one: {why}"
                        );
                        unusable.push((id, why));
                    }
                }
            }
        }
        RestoreFrom::Path(dir) => {
            let dir = match dir {
                CheckpointLocation::Local(d) => {
                    CheckpointLocation::Local(d.canonicalize().map_err(|e| {
                        RuntimeError::Restore(format!("snapshot {}: {e}", d.display()))
                    })?)
                }
                remote => remote.clone(),
            };
            let metadata = read_metadata(&dir)?;
            // The root is the named directory without the snapshot's own location
            // (checked to be `chk-<id>` or `savepoints/sp-<id>` when parsed).
            let levels = Path::new(&metadata.location).components().count();
            let root = dir.up(levels).ok_or_else(|| {
                RuntimeError::Restore(format!(
                    "snapshot {dir}: its metadata places it at {}, which the path does not end in",
                    metadata.location
                ))
            })?;
            let storage: Arc<dyn CheckpointStorage> = Arc::new(RetryingReads::new(Arc::new(
                root.open_existing()
                    .map_err(|e| RuntimeError::Checkpoint(format!("{root}: {e}")))?,
            )));
            metadata
                .check_files(storage.as_ref())
                .map_err(|e| RuntimeError::Checkpoint(e.to_string()))?
                .map_err(RuntimeError::Checkpoint)?;
            let own = config.location.as_ref().is_some_and(|d| {
                same_location(d, &root) && metadata.kind == SnapshotKind::Checkpoint
            });
            out.push(Restored {
                metadata,
                storage,
                own,
            });
        }
    }
    highest = out.iter().map(|r| r.metadata.id).fold(highest, u64::max);
    Ok(Candidates {
        usable: out,
        unusable,
        highest,
    })
}

fn same_location(a: &CheckpointLocation, b: &CheckpointLocation) -> bool {
    match (a, b) {
        (CheckpointLocation::Local(a), CheckpointLocation::Local(b)) => {
            match (a.canonicalize(), b.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => a == b,
            }
        }
        (a, b) => a == b,
    }
}

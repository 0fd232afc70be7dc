//! Choosing what a starting job restores from: the candidates, newest first, and the
//! checks a snapshot passes before any of its state is read.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use flowstate_core::storage::{CheckpointStorage, StorageWrite};
use flowstate_core::{StateError, StorageError};
use flowstate_storage::ObjectCheckpointStorage;

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
    // Reads retry transient errors: a storage hiccup must never make a checkpoint
    // look unusable (falling back repeats committed output).
    let reader: Arc<dyn CheckpointStorage> = Arc::new(RetryingReads(config.storage.clone()));
    let dirs = checkpoint_dirs(reader.as_ref())?;
    // Savepoints share the id sequence: a new run must not reuse one's id either (its
    // sink transactions are named by id).
    let savepoint_ids = reader
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
    let mut unusable = Vec::new();
    match &config.restore {
        RestoreFrom::Nothing => {}
        RestoreFrom::Latest => {
            for c in list_checkpoints(reader.as_ref())? {
                match c {
                    Ok(metadata) => out.push(Restored {
                        metadata,
                        storage: reader.clone(),
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
            let dir = dir
                .canonicalize()
                .map_err(|e| RuntimeError::Restore(format!("snapshot {}: {e}", dir.display())))?;
            let metadata = read_metadata(&dir)?;
            // The root is the named directory without the snapshot's own location
            // (checked to be `chk-<id>` or `savepoints/sp-<id>` when parsed).
            let mut root = dir.clone();
            for _ in Path::new(&metadata.location).components() {
                root.pop();
            }
            let storage: Arc<dyn CheckpointStorage> = Arc::new(RetryingReads(Arc::new(
                ObjectCheckpointStorage::existing_local(&root)
                    .map_err(|e| RuntimeError::Checkpoint(format!("{}: {e}", root.display())))?,
            )));
            metadata
                .check_files(storage.as_ref())
                .map_err(|e| RuntimeError::Checkpoint(e.to_string()))?
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
    Ok(Candidates {
        usable: out,
        unusable,
        highest,
    })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Checkpoint storage whose reads retry transient errors (5 attempts, 20 ms doubling);
/// writes and deletes pass through. What a restore reads through.
#[derive(Debug)]
pub(crate) struct RetryingReads(pub(crate) Arc<dyn CheckpointStorage>);

impl RetryingReads {
    fn retry<T>(
        &self,
        mut call: impl FnMut() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut wait = std::time::Duration::from_millis(20);
        let mut attempt = 1;
        loop {
            match call() {
                Err(e) if e.is_transient() && attempt < 5 => {
                    tracing::debug!("storage read failed ({e}); retrying in {wait:?}");
                    std::thread::sleep(wait);
                    wait *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

impl CheckpointStorage for RetryingReads {
    fn put(&self, path: &str, data: Bytes) -> Result<(), StorageError> {
        self.0.put(path, data)
    }
    fn create(&self, path: &str) -> Result<Box<dyn StorageWrite + '_>, StorageError> {
        self.0.create(path)
    }
    fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        self.retry(|| self.0.get(path))
    }
    fn get_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<Bytes, StorageError> {
        self.retry(|| self.0.get_range(path, range.clone()))
    }
    fn size(&self, path: &str) -> Result<u64, StorageError> {
        self.retry(|| self.0.size(path))
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.retry(|| self.0.list(prefix))
    }
    fn delete(&self, path: &str) -> Result<(), StorageError> {
        self.0.delete(path)
    }
}

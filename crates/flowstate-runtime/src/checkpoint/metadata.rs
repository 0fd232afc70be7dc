//! Reading the `_metadata` of checkpoints and savepoints from storage and listing the
//! checkpoints of a directory (the format itself is
//! [`flowstate_core::checkpoint_metadata`]).

use std::collections::BTreeMap;

use flowstate_core::checkpoint_metadata::{CheckpointMetadata, chk_id};
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::CheckpointLocation;

use crate::RuntimeError;

/// Reads the metadata of the checkpoint or savepoint in `dir` (a local path or an
/// `s3://` location).
pub fn read_metadata(
    dir: impl Into<CheckpointLocation>,
) -> Result<CheckpointMetadata, RuntimeError> {
    let dir = dir.into();
    let shown = dir.join("_metadata").to_string();
    let bytes = match &dir {
        CheckpointLocation::Local(d) => std::fs::read(d.join("_metadata"))
            .map(bytes::Bytes::from)
            .map_err(|e| e.to_string()),
        remote => remote
            .open_existing()
            .and_then(|s| s.get("_metadata"))
            .map_err(|e| e.to_string()),
    }
    .map_err(|e| RuntimeError::Checkpoint(format!("{shown}: {e}")))?;
    CheckpointMetadata::parse(&bytes, &shown).map_err(RuntimeError::Checkpoint)
}

/// Ids of the directories `chk-<id>` under the storage root, with whether each has
/// `_metadata`, ascending.
pub(crate) fn checkpoint_dirs(
    storage: &dyn CheckpointStorage,
) -> Result<BTreeMap<u64, bool>, RuntimeError> {
    let mut ids = BTreeMap::new();
    for p in storage
        .list("")
        .map_err(|e| RuntimeError::Checkpoint(e.to_string()))?
    {
        let (dir, file) = p.split_once('/').unwrap_or((&p, ""));
        if let Some(id) = chk_id(dir) {
            let has = ids.entry(id).or_insert(false);
            *has |= file == "_metadata";
        }
    }
    Ok(ids)
}

/// A listed checkpoint: its metadata, or its id and why it cannot be used.
pub type Listed = Result<CheckpointMetadata, (u64, String)>;

/// Complete checkpoints of a directory, newest first, with the reason each unusable
/// (damaged) one was skipped; fails when storage keeps failing to read one.
pub fn list_checkpoints(storage: &dyn CheckpointStorage) -> Result<Vec<Listed>, RuntimeError> {
    let mut out = Vec::new();
    for (id, has_meta) in checkpoint_dirs(storage)?.into_iter().rev() {
        if !has_meta {
            continue;
        }
        let path = format!("chk-{id}/_metadata");
        // A storage error that persists is no verdict on the checkpoint: the listing
        // fails (the caller must not fall back past a checkpoint it could not read).
        let unavailable = |e: flowstate_core::StorageError| {
            RuntimeError::Checkpoint(format!("checkpoint {id} could not be read: {e}"))
        };
        let bytes = match storage.get(&path) {
            Ok(b) => b,
            Err(e) if e.is_transient() => return Err(unavailable(e)),
            Err(e) => {
                out.push(Err((id, e.to_string())));
                continue;
            }
        };
        let r = match CheckpointMetadata::parse(&bytes, &path) {
            Ok(m) => m.check_files(storage).map_err(unavailable)?.map(|()| m),
            Err(why) => Err(why),
        };
        out.push(r.map_err(|e| (id, e)));
    }
    Ok(out)
}

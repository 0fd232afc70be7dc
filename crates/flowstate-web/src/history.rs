//! What the page shows, read from checkpoint storage: the history (`_history`) merged
//! with every complete snapshot's `_metadata` still there (the metadata is the
//! truth where both have an id; the history keeps what retention deleted).

use std::collections::BTreeMap;

use flowstate_core::StorageError;
use flowstate_core::checkpoint_history::{HISTORY_FILE, SnapshotSummary, parse_history};
use flowstate_core::checkpoint_metadata::{CheckpointMetadata, chk_id, sp_id};
use flowstate_core::storage::CheckpointStorage;
use serde::Serialize;

/// The checkpoint history of a job, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HistoryView {
    /// Completed checkpoints and savepoints by ascending id.
    pub snapshots: Vec<SnapshotSummary>,
    /// Ids whose `_metadata` is in storage (restorable now).
    pub retained: Vec<u64>,
    /// Lines of `_history` and `_metadata` files that could not be read.
    pub unreadable: usize,
}

impl HistoryView {
    /// The newest snapshot (its operators are the job's as last seen).
    pub fn newest(&self) -> Option<&SnapshotSummary> {
        self.snapshots.last()
    }
}

/// Merges the history's summaries with the metadata found (by id; metadata wins).
pub fn merge(
    history: Vec<SnapshotSummary>,
    metadata: &[CheckpointMetadata],
) -> Vec<SnapshotSummary> {
    let mut by_id: BTreeMap<u64, SnapshotSummary> =
        history.into_iter().map(|s| (s.id, s)).collect();
    for m in metadata {
        by_id.insert(m.id, SnapshotSummary::of(m));
    }
    by_id.into_values().collect()
}

/// The `_metadata` paths of the complete checkpoints and savepoints in a listing.
fn metadata_paths(listing: &[String]) -> Vec<String> {
    listing
        .iter()
        .filter(|p| {
            let parts: Vec<&str> = p.split('/').collect();
            match parts.as_slice() {
                [dir, "_metadata"] => chk_id(dir).is_some(),
                ["savepoints", dir, "_metadata"] => sp_id(dir).is_some(),
                _ => false,
            }
        })
        .cloned()
        .collect()
}

/// Reads the history of the checkpoint directory behind `storage`. A missing or
/// damaged file is skipped (and counted), never an error; listing failures are.
pub fn load(storage: &dyn CheckpointStorage) -> Result<HistoryView, StorageError> {
    let (history, mut unreadable) = match storage.get(HISTORY_FILE) {
        Ok(bytes) => parse_history(&bytes),
        Err(StorageError::NotFound { .. }) => (Vec::new(), 0),
        Err(e) => return Err(e),
    };
    let mut metadata = Vec::new();
    for path in metadata_paths(&storage.list("")?) {
        match storage
            .get(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| CheckpointMetadata::parse(&b, &path))
        {
            Ok(m) => metadata.push(m),
            Err(why) => {
                tracing::warn!("{path}: {why}");
                unreadable += 1;
            }
        }
    }
    let mut retained: Vec<u64> = metadata.iter().map(|m| m.id).collect();
    retained.sort_unstable();
    Ok(HistoryView {
        snapshots: merge(history, &metadata),
        retained,
        unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_snapshot_metadata_is_read() {
        let listing: Vec<String> = [
            "_history",
            "_flowstate",
            "chk-3/_metadata",
            "chk-3/op-0.kgs",
            "chk-x/_metadata",
            "savepoints/sp-9/_metadata",
            "savepoints/sp-9/sst/_metadata",
            "shared/_metadata",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            metadata_paths(&listing),
            ["chk-3/_metadata", "savepoints/sp-9/_metadata"]
        );
    }
}

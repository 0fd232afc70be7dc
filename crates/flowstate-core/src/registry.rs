//! Reference counting of files shared between checkpoints.
//!
//! Incremental snapshots upload only new files and refer to files earlier checkpoints
//! uploaded. The registry records which shared files each registered checkpoint refers
//! to, and when checkpoints are dropped deletes exactly the files no remaining one
//! refers to. Checkpoints restored from in no-claim mode (and savepoints) are pinned:
//! their files are never deleted by this job.
//!
//! ```
//! use flowstate_core::registry::SharedStateRegistry;
//! let mut registry = SharedStateRegistry::new();
//! assert!(registry.referenced().is_empty());
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::error::StateResult;
use crate::snapshot::KeyedStateHandle;
use crate::storage::CheckpointStorage;

/// Which checkpoints refer to which shared files.
#[derive(Debug, Default, Clone)]
pub struct SharedStateRegistry {
    checkpoints: BTreeMap<u64, BTreeSet<String>>,
    pinned: BTreeSet<String>,
}

impl SharedStateRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the shared files of checkpoint `id` (all instances' handles).
    pub fn register(&mut self, id: u64, handles: &[KeyedStateHandle]) {
        let files = self.checkpoints.entry(id).or_default();
        files.extend(
            handles
                .iter()
                .flat_map(|h| h.shared_files.iter().map(|f| f.path.clone())),
        );
    }

    /// Marks files this job does not own (no-claim restore, savepoints): never deleted.
    pub fn pin(&mut self, handles: &[KeyedStateHandle]) {
        self.pinned.extend(
            handles
                .iter()
                .flat_map(|h| h.shared_files.iter().map(|f| f.path.clone())),
        );
    }

    /// Ids of registered checkpoints, oldest first.
    pub fn checkpoints(&self) -> Vec<u64> {
        self.checkpoints.keys().copied().collect()
    }

    /// Every shared file a registered checkpoint refers to, plus pinned files.
    pub fn referenced(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.checkpoints.values().flatten().cloned().collect();
        all.extend(self.pinned.iter().cloned());
        all
    }

    /// Forgets checkpoint `id` and returns the shared files nothing refers to any more.
    pub fn discard(&mut self, id: u64) -> Vec<String> {
        let Some(files) = self.checkpoints.remove(&id) else {
            return Vec::new();
        };
        let still = self.referenced();
        files.into_iter().filter(|f| !still.contains(f)).collect()
    }

    /// Keeps the `retained` newest checkpoints, forgets the others and deletes the shared
    /// files no retained checkpoint refers to. Returns the deleted paths.
    pub fn retain_latest(
        &mut self,
        retained: usize,
        storage: &dyn CheckpointStorage,
    ) -> StateResult<Vec<String>> {
        let ids = self.checkpoints();
        let drop_count = ids.len().saturating_sub(retained);
        let mut deleted = Vec::new();
        for id in ids.into_iter().take(drop_count) {
            for path in self.discard(id) {
                storage.delete(&path)?;
                deleted.push(path);
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keygroup::KeyGroupRange;
    use crate::snapshot::SharedFile;

    fn handle(files: &[&str]) -> KeyedStateHandle {
        let mut h = KeyedStateHandle::canonical("m", KeyGroupRange::empty(), 128, 1);
        h.shared_files = files
            .iter()
            .map(|p| SharedFile {
                path: p.to_string(),
                size: 1,
                crc32c: None,
            })
            .collect();
        h
    }

    #[test]
    fn files_go_when_the_last_reference_goes() {
        let mut r = SharedStateRegistry::new();
        r.register(1, &[handle(&["a", "b"])]);
        r.register(2, &[handle(&["b", "c"])]);
        r.register(3, &[handle(&["c", "d"])]);
        r.pin(&[handle(&["p"])]);
        assert_eq!(r.discard(1), vec!["a".to_string()]);
        assert_eq!(r.discard(2), vec!["b".to_string()]);
        assert!(r.discard(7).is_empty());
        let mut left = r.discard(3);
        left.sort();
        assert_eq!(left, vec!["c".to_string(), "d".to_string()]);
        assert_eq!(
            r.referenced().into_iter().collect::<Vec<_>>(),
            vec!["p".to_string()]
        );
    }
}

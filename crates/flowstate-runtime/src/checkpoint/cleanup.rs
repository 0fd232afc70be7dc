//! Clean-up of what a crashed run left behind, restricted to the job's own layout and
//! conservative about what it cannot read.
//!
//! The rules (issue "never lose a checkpoint"):
//! - every delete goes through [`delete_owned`], which refuses any path outside the
//!   checkpoint layout ([`crate::ownership::is_layout_path`]); the storage refuses
//!   paths through symbolic links;
//! - a `_metadata` that exists but cannot be read or parsed (a transient error, a newer
//!   format, damage) *pins every shared file*: nothing under `shared/` is deleted and
//!   the checkpoint's directory stays, with a warning;
//! - only files no checkpoint or savepoint, readable or not, could refer to go:
//!   directories of checkpoints that never completed (no `_metadata`), savepoints cut
//!   short, shared files no readable metadata names (when none is unreadable), and
//!   the local store's staging files inside the layout;
//! - a delete that fails is logged and left for the next clean-up: clean-up never
//!   fails the job.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use flowstate_core::storage::CheckpointStorage;

use super::metadata::checkpoint_dirs;
use super::{CheckpointConfig, CheckpointMetadata};
use crate::RuntimeError;
use crate::ownership::{is_layout_path, is_layout_root_entry};
use flowstate_core::checkpoint_metadata::chk_id;

/// Deletes `path` from checkpoint storage if it is a path of the job's layout;
/// otherwise deletes nothing and says why.
pub(crate) fn delete_owned(storage: &dyn CheckpointStorage, path: &str) -> Result<(), String> {
    if !is_layout_path(path) {
        return Err(format!(
            "refusing to delete `{path}`: not a path of the checkpoint layout"
        ));
    }
    storage.delete(path).map_err(|e| e.to_string())
}

/// What one start-up clean-up did (for logs and tests).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CleanUp {
    /// Files deleted.
    pub(crate) deleted: usize,
    /// Metadata files that could not be read (they pin every shared file).
    pub(crate) unreadable: Vec<String>,
    /// Deletes that failed (left for the next clean-up).
    pub(crate) failed: usize,
}

/// Deletes what a crashed run left (see the module docs). Runs before the job starts,
/// with the checkpoint directory locked, and after the final checkpoint.
pub(crate) fn clean_up_after_crash(config: &CheckpointConfig) -> Result<CleanUp, RuntimeError> {
    // Local staging files of interrupted writes. An object store keeps the parts of
    // an interrupted multipart upload out of sight; a bucket lifecycle rule
    // (`AbortIncompleteMultipartUpload`) removes them, as for Flink.
    if let Some(dir) = config.local_dir() {
        remove_staged_uploads(dir);
    }
    // The job's storage retries transient read errors (see `execute`).
    let storage = config.storage.as_ref();
    let err = |e: flowstate_core::StorageError| RuntimeError::Checkpoint(e.to_string());
    let mut done = CleanUp::default();
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    // Best effort: a delete that fails leaves garbage for the next clean-up, never a
    // reason to fail the job.
    let remove = |done: &mut CleanUp, f: &str| match delete_owned(storage, f) {
        Ok(()) => done.deleted += 1,
        Err(e) => {
            tracing::warn!("clean-up: {e}");
            done.failed += 1;
        }
    };
    let mut read_refs = |done: &mut CleanUp, meta: &str| match storage
        .get(meta)
        .map_err(|e| e.to_string())
        .and_then(|b| CheckpointMetadata::parse(&b, meta))
    {
        Ok(m) => {
            for h in m.keyed_handles() {
                referenced.extend(h.shared_files.into_iter().map(|f| f.path));
            }
        }
        Err(why) => {
            tracing::warn!(
                "{meta} exists but cannot be read ({why}): keeping it and every shared file"
            );
            done.unreadable.push(meta.to_string());
        }
    };
    for (id, has_meta) in checkpoint_dirs(storage)? {
        if has_meta {
            read_refs(&mut done, &format!("chk-{id}/_metadata"));
            continue;
        }
        for f in storage.list(&format!("chk-{id}/")).map_err(err)? {
            remove(&mut done, &f);
        }
    }
    // Savepoints: complete ones are the user's (their references count); those cut
    // short (no `_metadata`) go.
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
    for (dir, (complete, files)) in savepoints {
        if complete {
            read_refs(&mut done, &format!("savepoints/{dir}/_metadata"));
        } else {
            for f in files {
                remove(&mut done, &f);
            }
        }
    }
    if done.unreadable.is_empty() {
        for f in storage.list("shared/").map_err(err)? {
            if !referenced.contains(&f) {
                remove(&mut done, &f);
            }
        }
    }
    Ok(done)
}

/// A local checkpoint directory's half-written files: the local object store writes
/// `<path>#<digits>` and renames it into place, so a killed process leaves these,
/// which the store itself never lists (or deletes). Only inside the layout's entries,
/// never through a link; best effort.
fn remove_staged_uploads(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_layout_root_entry(&name) && e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_staged_below(&e.path());
            if chk_id(&name).is_some() {
                // A checkpoint's directory whose only file was a staging file (or a
                // kill between creating the directory and its first file) is empty
                // now. The store removes a directory only when deleting its last
                // object, so nothing else would: it would stay forever beside the
                // retained checkpoints. `remove_dir` removes only an empty one.
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

fn remove_staged_below(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        // `file_type` does not follow links: a link is neither a dir nor removed.
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            remove_staged_below(&path);
            // Empty after that: an incomplete checkpoint's.
            let _ = std::fs::remove_dir(&path);
        } else if t.is_file()
            && name
                .split_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// What a process killed in the middle of writing left: staging files, a
    /// checkpoint directory holding nothing else, an empty one; beside a complete
    /// checkpoint and files that only look like staging files.
    #[test]
    fn killed_writes_leave_no_directory_and_nothing_else_goes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("chk-6/op-0.kgs#1"), b"half");
        std::fs::create_dir_all(root.join("chk-8")).unwrap();
        write(&root.join("chk-7/op-0.kgs"), b"written");
        write(&root.join("chk-7/op-1.kgs#2"), b"half");
        write(&root.join("shared/s-1.sst#1"), b"half");
        let config = CheckpointConfig::local(root, Duration::from_secs(1)).unwrap();

        let done = clean_up_after_crash(&config).unwrap();

        let left = |p: &str| root.join(p).exists();
        assert!(!left("chk-6"), "a directory that held only a staging file");
        assert!(!left("chk-8"), "an empty checkpoint directory");
        assert!(!left("chk-7/op-1.kgs#2"));
        assert!(!left("shared/s-1.sst#1"));
        // chk-7 never completed (no `_metadata`): its file goes through the store,
        // which takes the directory with it.
        assert!(!left("chk-7"));
        assert_eq!(done.unreadable, Vec::<String>::new());
    }

    /// A complete checkpoint keeps its directory and files, also one named like a
    /// staging file but not one (no digits after `#`).
    #[test]
    fn a_complete_checkpoint_stays() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let config = CheckpointConfig::local(root, Duration::from_secs(1)).unwrap();
        let meta = CheckpointMetadata {
            version: super::super::METADATA_VERSION,
            id: 3,
            kind: super::super::SnapshotKind::Checkpoint,
            location: "chk-3".into(),
            finished: false,
            triggered_at_ms: 0,
            duration_ms: 0,
            parallelism: 1,
            max_parallelism: 128,
            operators: BTreeMap::new(),
        };
        write(
            &root.join("chk-3/_metadata"),
            &serde_json::to_vec(&meta).unwrap(),
        );
        write(&root.join("chk-3/op-0.ops"), b"state");
        write(&root.join("chk-3/op-1.ops#x"), b"state");

        clean_up_after_crash(&config).unwrap();

        assert!(root.join("chk-3/_metadata").exists());
        assert!(root.join("chk-3/op-0.ops").exists());
        assert!(root.join("chk-3/op-1.ops#x").exists());
    }
}

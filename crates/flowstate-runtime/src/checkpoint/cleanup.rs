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

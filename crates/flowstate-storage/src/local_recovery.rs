//! Local recovery (Flink's `state.backend.local-recovery`): a [`CheckpointStorage`]
//! that keeps a copy of what this process writes for checkpoints in a local
//! directory, and restores from that copy when it is whole, from the remote storage
//! otherwise.
//!
//! - **Writes** go to the remote storage first (it is the truth: a checkpoint is
//!   complete when its remote `_metadata` is), then to the local copy with a sidecar
//!   `<path>.crc` holding the copy's length and CRC-32C. A failed local write is
//!   logged and the partial copy removed; it never fails the checkpoint.
//! - **Reads** of a copied file are served locally once the whole copy has been
//!   checked against its sidecar (once per file); a missing, short or corrupt copy is
//!   removed and the file read remotely. Counts of both are kept ([`LocalRecovery::
//!   local_reads`], [`LocalRecovery::remote_reads`]) for logs and tests.
//! - **What is copied**: the task files of checkpoints (`chk-<id>/...` except
//!   `_metadata`) and shared files (`shared/...`). Metadata, savepoints and the
//!   directory's own files are read from the remote storage only.
//! - **Listing** is the remote storage's. **Deletes** go to both. When a checkpoint's
//!   first file is copied, copies of older checkpoints and shared files the remote
//!   storage no longer has are removed (another process may run retention).
//!
//! The local directory is this process's own (a marker file, created by
//! [`LocalRecovery::new`]); only paths of the checkpoint layout are written or
//! deleted there, never through a link.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flowstate_core::StorageError;
use flowstate_core::storage::{CheckpointStorage, StorageWrite};

use crate::ObjectCheckpointStorage;

/// The marker of a local recovery directory.
pub const LOCAL_RECOVERY_MARKER: &str = ".flowstate-local-recovery";

/// Remote checkpoint storage with a local copy of this process's checkpoint files.
pub struct LocalRecovery {
    remote: Arc<dyn CheckpointStorage>,
    local: ObjectCheckpointStorage,
    /// Copies checked whole against their sidecars.
    verified: Mutex<BTreeSet<String>>,
    /// The newest checkpoint id copies were written for (pruning trigger).
    newest: AtomicU64,
    local_reads: AtomicU64,
    remote_reads: AtomicU64,
}

impl std::fmt::Debug for LocalRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LocalRecovery({:?} with a copy in {:?})",
            self.remote, self.local
        )
    }
}

/// The checkpoint id of a copied path (`chk-<id>/<file>`, not `_metadata`).
fn copied_checkpoint(path: &str) -> Option<u64> {
    let (dir, file) = path.split_once('/')?;
    if file == "_metadata" || file.is_empty() {
        return None;
    }
    dir.strip_prefix("chk-")?.parse().ok()
}

/// Whether `path` gets a local copy.
fn is_copied(path: &str) -> bool {
    copied_checkpoint(path).is_some() || path.strip_prefix("shared/").is_some_and(|f| !f.is_empty())
}

fn sidecar(path: &str) -> String {
    format!("{path}.crc")
}

/// A sidecar's text: `<length> <crc32c>`.
fn sidecar_text(data: &[u8]) -> String {
    format!("{} {:08x}", data.len() as u64, crc32c::crc32c(data))
}

impl LocalRecovery {
    /// Local recovery over `remote`, copying into `dir` (created owner-only when
    /// missing; an existing directory must be empty or have the marker).
    pub fn new(remote: Arc<dyn CheckpointStorage>, dir: &Path) -> Result<Self, StorageError> {
        let io = |op: &'static str, e: std::io::Error| StorageError::Io {
            op,
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        if let Ok(m) = std::fs::symlink_metadata(dir) {
            if m.file_type().is_symlink() {
                return Err(StorageError::InvalidPath {
                    path: dir.display().to_string(),
                    reason: "a symbolic link".into(),
                });
            }
            let marked = dir.join(LOCAL_RECOVERY_MARKER).is_file();
            let empty = std::fs::read_dir(dir)
                .map_err(|e| io("read directory", e))?
                .next()
                .is_none();
            if !marked && !empty {
                return Err(StorageError::InvalidPath {
                    path: dir.display().to_string(),
                    reason: "holds files Flowstate did not write; name a new or empty directory"
                        .into(),
                });
            }
        }
        let local = ObjectCheckpointStorage::local(dir)?;
        std::fs::write(
            dir.join(LOCAL_RECOVERY_MARKER),
            "Flowstate local recovery: copies of this process's checkpoint files\n",
        )
        .map_err(|e| io("write marker", e))?;
        Ok(LocalRecovery {
            remote,
            local,
            verified: Mutex::new(BTreeSet::new()),
            newest: AtomicU64::new(0),
            local_reads: AtomicU64::new(0),
            remote_reads: AtomicU64::new(0),
        })
    }

    /// Files read from the local copy so far.
    pub fn local_reads(&self) -> u64 {
        self.local_reads.load(Ordering::Relaxed)
    }

    /// Copied files read remotely so far (no copy, or a damaged one).
    pub fn remote_reads(&self) -> u64 {
        self.remote_reads.load(Ordering::Relaxed)
    }

    /// Removes the copy of `path` (ours: a layout path in our directory).
    fn drop_copy(&self, path: &str) {
        let _ = self.local.delete(path);
        let _ = self.local.delete(&sidecar(path));
        self.lock_verified().remove(path);
    }

    fn lock_verified(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the copy of `path` is whole (checked once, then remembered): `None`
    /// when not (a damaged copy is removed); `Some(Some(bytes))` when this call read
    /// the copy to check it, so a whole-file read needs no second read.
    fn whole_copy(&self, path: &str) -> Option<Option<Bytes>> {
        if self.lock_verified().contains(path) {
            return Some(None);
        }
        let (Ok(data), Ok(side)) = (self.local.get(path), self.local.get(&sidecar(path))) else {
            self.drop_copy(path);
            return None;
        };
        if side.as_ref() != sidecar_text(&data).as_bytes() {
            tracing::warn!(
                "the local copy of {path} is damaged: reading it from {:?}",
                self.remote
            );
            self.drop_copy(path);
            return None;
        }
        self.lock_verified().insert(path.to_string());
        Some(Some(data))
    }

    /// Before a copy of `path` is written: a checkpoint's first copy prunes the
    /// copies of older ones.
    fn before_copy(&self, path: &str) {
        if let Some(id) = copied_checkpoint(path)
            && self.newest.fetch_max(id, Ordering::AcqRel) < id
        {
            self.prune(id);
        }
    }

    /// The copy of `path` was written (`Ok`: its sidecar says `len` and `crc`).
    fn copied(&self, path: &str, written: Result<(u64, u32), StorageError>) {
        let written = written.and_then(|(len, crc)| {
            self.local
                .put(&sidecar(path), Bytes::from(format!("{len} {crc:08x}")))
        });
        match written {
            Ok(()) => {
                self.lock_verified().insert(path.to_string());
            }
            Err(e) => {
                tracing::warn!("no local copy of {path}: {e}");
                self.drop_copy(path);
            }
        }
    }

    /// Writes the copy of `path` (after the remote write succeeded).
    fn copy(&self, path: &str, data: &Bytes) {
        self.before_copy(path);
        let written = self
            .local
            .put(path, data.clone())
            .map(|()| (data.len() as u64, crc32c::crc32c(data)));
        self.copied(path, written);
    }

    /// Removes copies of checkpoints older than `newest` and of shared files that
    /// the remote storage no longer has.
    fn prune(&self, newest: u64) {
        let Ok(remote) = self.remote.list("") else {
            return;
        };
        let remote: BTreeSet<String> = remote.into_iter().collect();
        let Ok(local) = self.local.list("") else {
            return;
        };
        for p in local {
            let file = p.strip_suffix(".crc").unwrap_or(&p);
            let stale = match copied_checkpoint(file) {
                Some(id) => id < newest && !remote.contains(file),
                None => file.starts_with("shared/") && !remote.contains(file),
            };
            if stale {
                self.drop_copy(file);
            }
        }
    }

    /// Reads `path` through `read` locally when its copy is whole, else remotely;
    /// `from_checked` answers from the bytes read to check the copy, when it can.
    fn read<T>(
        &self,
        path: &str,
        from_checked: impl FnOnce(Bytes) -> Option<T>,
        read: impl Fn(&dyn CheckpointStorage) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        if !is_copied(path) {
            return read(self.remote.as_ref());
        }
        if let Some(checked) = self.whole_copy(path) {
            match checked
                .and_then(from_checked)
                .map_or_else(|| read(&self.local), Ok)
            {
                Ok(v) => {
                    self.local_reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    tracing::warn!("local copy of {path}: {e}; reading it remotely");
                    self.drop_copy(path);
                }
            }
        }
        self.remote_reads.fetch_add(1, Ordering::Relaxed);
        read(self.remote.as_ref())
    }
}

impl CheckpointStorage for LocalRecovery {
    fn put(&self, path: &str, data: Bytes) -> Result<(), StorageError> {
        self.remote.put(path, data.clone())?;
        if is_copied(path) {
            self.copy(path, &data);
        }
        Ok(())
    }

    fn put_if_absent(&self, path: &str, data: Bytes) -> Result<bool, StorageError> {
        self.remote.put_if_absent(path, data)
    }

    fn create(&self, path: &str) -> Result<Box<dyn StorageWrite + '_>, StorageError> {
        let remote = self.remote.create(path)?;
        let local = if is_copied(path) {
            self.before_copy(path);
            self.local.create(path).ok()
        } else {
            None
        };
        Ok(Box::new(TeeWrite {
            owner: self,
            path: path.to_string(),
            remote,
            local,
            crc: 0,
            len: 0,
        }))
    }

    fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        self.read(path, Some, |s| s.get(path))
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.read(path, |_| None, |s| s.get_range(path, range.clone()))
    }

    fn size(&self, path: &str) -> Result<u64, StorageError> {
        self.read(path, |b| Some(b.len() as u64), |s| s.size(path))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.remote.list(prefix)
    }

    fn delete(&self, path: &str) -> Result<(), StorageError> {
        self.remote.delete(path)?;
        if is_copied(path) {
            self.drop_copy(path);
        }
        Ok(())
    }
}

/// A streamed write to the remote storage and, beside it, to the local copy (whose
/// sidecar is written once both are published).
struct TeeWrite<'s> {
    owner: &'s LocalRecovery,
    path: String,
    remote: Box<dyn StorageWrite + 's>,
    /// `None`: no copy (not copied, or the local write failed: dropped, discarded).
    local: Option<Box<dyn StorageWrite + 's>>,
    crc: u32,
    len: u64,
}

impl StorageWrite for TeeWrite<'_> {
    fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.remote.write(data)?;
        if let Some(l) = self.local.as_mut() {
            if let Err(e) = l.write(data) {
                tracing::warn!("no local copy of {}: {e}", self.path);
                self.local = None;
            }
            self.crc = crc32c::crc32c_append(self.crc, data);
            self.len += data.len() as u64;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<u64, StorageError> {
        let TeeWrite {
            owner,
            path,
            remote,
            local,
            crc,
            len,
        } = *self;
        let size = remote.finish()?;
        if let Some(l) = local {
            owner.copied(&path, l.finish().map(|_| (len, crc)));
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_copied() {
        assert!(is_copied("chk-3/keyed-0.kgs"));
        assert!(is_copied("shared/s-1.sst"));
        for not in [
            "chk-3/_metadata",
            "_history",
            "savepoints/sp-1/a.kgs",
            "shared/",
            "chk-x/a",
        ] {
            assert!(!is_copied(not), "{not}");
        }
    }
}

//! Where a keyed snapshot was written and how it is laid out: the handle a checkpoint's
//! metadata records per instance, the shared files of incremental snapshots, and who
//! owns a restored snapshot's files.

use serde::{Deserialize, Serialize};

use crate::error::{StateError, StateResult};
use crate::keygroup::KeyGroupRange;

/// Who owns the files of the snapshot a job (or a backend) was restored from (Flink's
/// restore modes): one name for the job's setting and the backend's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClaimMode {
    /// The job never deletes them, and its first checkpoint is a full one that does not
    /// refer to them (Flink's default, `NO_CLAIM`).
    #[default]
    NoClaim,
    /// The job owns them: a restored checkpoint of its own directory joins retention,
    /// and later incremental checkpoints may refer to its files.
    Claim,
}

/// How a keyed snapshot is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SnapshotFormat {
    /// The canonical key-group-indexed file, readable by every backend.
    #[default]
    Canonical,
    /// A RocksDB native snapshot: a manifest at `path` naming the database files.
    RocksDbNative,
}

/// A file shared between checkpoints (incremental snapshots).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SharedFile {
    /// Path in checkpoint storage (under `shared/`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32C of the contents, verified when the file is read back at restore (bit
    /// rot is caught there and makes the job fall back to an older checkpoint). Absent
    /// in snapshots written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<u32>,
}

impl SharedFile {
    /// Checks `data` read back from the file against the recorded size and checksum.
    pub fn verify(&self, data: &[u8], referenced_by: &str) -> StateResult<()> {
        if data.len() as u64 != self.size {
            return Err(StateError::corrupt(
                &self.path,
                format!("{} bytes, `{referenced_by}` says {}", data.len(), self.size),
            ));
        }
        if let Some(expected) = self.crc32c {
            let found = crc32c::crc32c(data);
            if found != expected {
                return Err(StateError::corrupt(
                    &self.path,
                    format!(
                        "checksum {found:08x}, `{referenced_by}` says {expected:08x}: the file is damaged"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Where one instance's keyed snapshot was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedStateHandle {
    /// Path in checkpoint storage of the file (canonical) or manifest (native).
    pub path: String,
    /// Key groups the snapshot covers.
    pub key_group_range: KeyGroupRange,
    /// Max parallelism it was written with.
    pub max_parallelism: u32,
    /// Size of the file at `path` in bytes.
    pub size: u64,
    /// Layout of the snapshot.
    #[serde(default)]
    pub format: SnapshotFormat,
    /// Shared files the snapshot needs (incremental snapshots), uploaded by it or by an
    /// earlier checkpoint; a registry deletes one only when no retained checkpoint
    /// refers to it.
    #[serde(default)]
    pub shared_files: Vec<SharedFile>,
    /// Bytes this snapshot uploaded (for an incremental snapshot, only the new files).
    #[serde(default)]
    pub uploaded_bytes: u64,
}

impl KeyedStateHandle {
    /// A handle of a canonical file of `size` bytes.
    pub fn canonical(
        path: &str,
        key_group_range: KeyGroupRange,
        max_parallelism: u32,
        size: u64,
    ) -> Self {
        KeyedStateHandle {
            path: path.to_string(),
            key_group_range,
            max_parallelism,
            size,
            format: SnapshotFormat::Canonical,
            shared_files: Vec::new(),
            uploaded_bytes: size,
        }
    }

    /// Bytes needed to restore: the file at `path` plus every shared file.
    pub fn full_size(&self) -> u64 {
        // Saturating: the sizes come from a file (a damaged one must not overflow).
        self.shared_files
            .iter()
            .map(|f| f.size)
            .fold(self.size, u64::saturating_add)
    }
}

//! The `_metadata` of a complete checkpoint or savepoint: a versioned JSON document
//! naming every file of the snapshot (its byte-level description and version log are
//! in `docs/formats.md`), and the checkpoint directory's layout, which decides what
//! paths a job may ever delete ([`is_layout_path`]).
//!
//! It lives in core, below the backends and the runtime, so the decoders can be
//! fuzzed and read offline without linking RocksDB.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::operator::OperatorStateHandle;
use crate::snapshot::KeyedStateHandle;
use crate::storage::CheckpointStorage;

/// The id of a `chk-<id>` name (a checkpoint's directory).
pub fn chk_id(name: &str) -> Option<u64> {
    id_after(name, "chk-")
}

/// The id of an `sp-<id>` name (a savepoint's directory under `savepoints/`).
pub fn sp_id(name: &str) -> Option<u64> {
    id_after(name, "sp-")
}

/// The decimal digits (only) after `prefix`, as an id.
fn id_after(name: &str, prefix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `path` (relative to the checkpoint storage root) is one the job may delete:
/// a file below `chk-<id>/`, `shared/`, `savepoints/sp-<id>/` or `taskowned/`, with no
/// empty, `.` or `..` segment, not absolute, no backslash or NUL.
///
/// ```
/// use flowstate_core::checkpoint_metadata::is_layout_path;
/// assert!(is_layout_path("chk-7/keyed-2-0.kgs"));
/// assert!(is_layout_path("shared/abc-000012.sst"));
/// assert!(is_layout_path("savepoints/sp-9/sst/000012.sst"));
/// assert!(!is_layout_path("chk-7/../../etc/passwd"));
/// assert!(!is_layout_path("/etc/passwd"));
/// assert!(!is_layout_path("out/part-0-1"));
/// assert!(!is_layout_path("chk-7"));
/// ```
pub fn is_layout_path(path: &str) -> bool {
    if path.contains('\\') || path.contains('\0') {
        return false;
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2
        || segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return false;
    }
    match segments[0] {
        "shared" | "taskowned" => true,
        "savepoints" => segments.len() >= 3 && sp_id(segments[1]).is_some(),
        first => chk_id(first).is_some(),
    }
}

/// Version of the `_metadata` JSON document (2: operators record whether their key
/// is a uid the user gave, [`OperatorSnapshotMeta::user_uid`]; 3: operators record
/// their alignment time and in-flight bytes, [`OperatorSnapshotMeta::alignment_ms`]
/// and [`OperatorSnapshotMeta::inflight_bytes`]).
pub const METADATA_VERSION: u32 = 3;

/// What a snapshot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// A periodic checkpoint, owned by the job and deleted by retention.
    Checkpoint,
    /// A user-triggered savepoint in the canonical format, never deleted by the job.
    Savepoint,
    /// A user-triggered savepoint in the backend's native format (self-contained;
    /// restores faster, but only on the same backend), never deleted by the job.
    NativeSavepoint,
}

impl SnapshotKind {
    /// The directory of snapshot `id` of this kind, relative to the storage root.
    pub fn location(self, id: u64) -> String {
        match self {
            SnapshotKind::Checkpoint => format!("chk-{id}"),
            SnapshotKind::Savepoint | SnapshotKind::NativeSavepoint => {
                format!("savepoints/sp-{id}")
            }
        }
    }
}

/// The snapshot of one operator (all its instances) in a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorSnapshotMeta {
    /// Keyed state, one handle per instance.
    pub keyed: Vec<KeyedStateHandle>,
    /// Operator state, one handle per instance.
    pub operator: Vec<OperatorStateHandle>,
    /// Longest synchronous part over the instances, in milliseconds.
    pub sync_ms: f64,
    /// Longest asynchronous part over the instances, in milliseconds.
    pub async_ms: f64,
    /// The operator's key is a uid the user gave (`.uid("...")`), not one derived
    /// from its position in the job (`keyed-2`). Version-1 metadata has only derived
    /// ids (absent: `false`). A job that has since given the operator a uid may take
    /// over a derived entry; never a user-given one.
    #[serde(default)]
    pub user_uid: bool,
    /// Longest time over the instances from the checkpoint's trigger (as their
    /// process saw it) to the instance's cut, once every record of the checkpoint had
    /// reached it, in milliseconds: Flink's start delay plus alignment. Absent before
    /// version 3 (0).
    #[serde(default)]
    pub alignment_ms: f64,
    /// Bytes of records the instances held back at the cut and stored with the
    /// snapshot (records of the checkpoint waiting for their event-time turn), summed
    /// over the instances. Absent before version 3 (0).
    #[serde(default)]
    pub inflight_bytes: u64,
}

impl OperatorSnapshotMeta {
    /// Bytes needed to restore this operator.
    pub fn full_size(&self) -> u64 {
        // Saturating: the sizes come from a file (a damaged one must not overflow).
        self.keyed
            .iter()
            .map(KeyedStateHandle::full_size)
            .chain(self.operator.iter().map(|h| h.size))
            .fold(0, u64::saturating_add)
    }
    /// Bytes this checkpoint wrote for the operator.
    pub fn uploaded_size(&self) -> u64 {
        self.keyed
            .iter()
            .map(|h| h.uploaded_bytes)
            .chain(self.operator.iter().map(|h| h.size))
            .fold(0, u64::saturating_add)
    }
}

/// The `_metadata` of a complete checkpoint or savepoint (JSON; `docs/formats.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// [`METADATA_VERSION`] when written.
    pub version: u32,
    /// Checkpoint id (ids grow by one per trigger).
    pub id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Directory of this snapshot relative to the storage root its paths are relative
    /// to (`chk-7`, `savepoints/sp-9`).
    pub location: String,
    /// Taken after every source had ended: the job's complete output is committed.
    pub finished: bool,
    /// Wall-clock trigger time, milliseconds since the Unix epoch.
    pub triggered_at_ms: u64,
    /// Trigger to `_metadata`, in milliseconds.
    pub duration_ms: u64,
    /// Workers of the job that wrote it.
    pub parallelism: u32,
    /// Key groups.
    pub max_parallelism: u32,
    /// Per operator (by its uid, or the id derived from its position in the job),
    /// its instances' snapshots.
    pub operators: BTreeMap<String, OperatorSnapshotMeta>,
}

impl CheckpointMetadata {
    /// Bytes needed to restore the whole job.
    pub fn full_size(&self) -> u64 {
        self.operators
            .values()
            .map(|o| o.full_size())
            .fold(0, u64::saturating_add)
    }
    /// Bytes written by this checkpoint.
    pub fn uploaded_size(&self) -> u64 {
        self.operators
            .values()
            .map(|o| o.uploaded_size())
            .fold(0, u64::saturating_add)
    }
    /// The longest alignment of any operator, in milliseconds.
    pub fn alignment_ms(&self) -> f64 {
        self.operators
            .values()
            .map(|o| o.alignment_ms)
            .fold(0.0, f64::max)
    }
    /// Bytes of records held in flight, over every operator.
    pub fn inflight_bytes(&self) -> u64 {
        self.operators
            .values()
            .map(|o| o.inflight_bytes)
            .fold(0, u64::saturating_add)
    }
    /// Every keyed handle.
    pub fn keyed_handles(&self) -> Vec<KeyedStateHandle> {
        self.operators
            .values()
            .flat_map(|o| o.keyed.iter().cloned())
            .collect()
    }

    /// Parses a `_metadata` document (`path` names it in errors): the JSON, a version
    /// this build reads, and paths that stay inside the snapshot's layout
    /// ([`CheckpointMetadata::check_paths`]).
    pub fn parse(bytes: &[u8], path: &str) -> Result<Self, String> {
        let m: CheckpointMetadata =
            serde_json::from_slice(bytes).map_err(|e| format!("{path}: unreadable ({e})"))?;
        if m.version > METADATA_VERSION {
            return Err(format!(
                "{path}: metadata version {} is newer than this build's {METADATA_VERSION}",
                m.version
            ));
        }
        m.check_paths().map_err(|e| format!("{path}: {e}"))?;
        Ok(m)
    }

    /// Every path the metadata names stays inside the snapshot's own layout: its
    /// location is that of its kind and id, its files lie below the location, shared
    /// files below `shared/` (or the location: native savepoints). A snapshot that
    /// points elsewhere is refused before anything is read or deleted through it.
    pub fn check_paths(&self) -> Result<(), String> {
        let expected = self.kind.location(self.id);
        if self.location != expected {
            return Err(format!(
                "location `{}` is not `{expected}` (the {:?} of id {})",
                self.location, self.kind, self.id
            ));
        }
        let own = format!("{}/", self.location);
        let bad = |p: &str, shared: bool| {
            !is_layout_path(p) || !(p.starts_with(&own) || (shared && p.starts_with("shared/")))
        };
        for (uid, o) in &self.operators {
            for h in &o.keyed {
                if bad(&h.path, false) {
                    return Err(format!(
                        "operator {uid}: keyed state path `{}` escapes",
                        h.path
                    ));
                }
                if let Some(f) = h.shared_files.iter().find(|f| bad(&f.path, true)) {
                    return Err(format!("operator {uid}: shared file `{}` escapes", f.path));
                }
            }
            if let Some(h) = o.operator.iter().find(|h| bad(&h.path, false)) {
                return Err(format!(
                    "operator {uid}: operator state path `{}` escapes",
                    h.path
                ));
            }
        }
        Ok(())
    }

    /// Every file the snapshot needs exists with the recorded size.
    ///
    /// `Err` is a storage error that kept the check from finishing (transient: try
    /// again, never treat the snapshot as damaged); `Ok(Err(why))` says what is
    /// missing or the wrong size.
    pub fn check_files(
        &self,
        storage: &dyn CheckpointStorage,
    ) -> Result<Result<(), String>, crate::StorageError> {
        let mut files: Vec<(String, u64)> = Vec::new();
        for o in self.operators.values() {
            for h in &o.keyed {
                files.push((h.path.clone(), h.size));
                files.extend(h.shared_files.iter().map(|f| (f.path.clone(), f.size)));
            }
            files.extend(o.operator.iter().map(|h| (h.path.clone(), h.size)));
        }
        for (path, size) in files {
            match storage.size(&path) {
                Ok(s) if s == size => {}
                Ok(s) => {
                    return Ok(Err(format!(
                        "{path} is {s} bytes, the metadata says {size}"
                    )));
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => return Ok(Err(format!("{path}: {e}"))),
            }
        }
        Ok(Ok(()))
    }
}

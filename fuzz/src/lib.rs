//! Fuzz targets for every decoder of Flowstate's on-disk formats: key-group snapshot
//! files, operator-state files, RocksDB native manifests, RocksDB list values and
//! checkpoint `_metadata`.
//!
//! Each target first *fixes up* the checksums of its input (the formats cover every
//! byte with CRC-32C), so mutations reach the parsers behind the checksums instead of
//! all being rejected at the first check. A target passes when decoding returns
//! (`Ok` or a typed error) without panicking, overflowing or allocating without
//! bound. Seeds: the committed golden fixtures (`fuzz/seeds.sh` copies them into
//! `fuzz/corpus/<target>/`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;
use flowstate_core::StorageError;
use flowstate_core::checkpoint_metadata::CheckpointMetadata;
use flowstate_core::format::KIND_KEYED_MANAGED;
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::native_manifest::NativeManifest;
use flowstate_core::operator::{OperatorStateHandle, OperatorStateStore};
use flowstate_core::rocksdb_list::{StoredItems, stored_list_items, stored_list_to_canonical};
use flowstate_core::snapshot::{
    KeyedStateHandle, SnapshotFormat, read_keyed_state, section_entries,
};
use flowstate_core::storage::{CheckpointStorage, StorageWrite};

/// Checkpoint storage in memory holding one file.
#[derive(Debug, Default)]
struct Memory(Mutex<HashMap<String, Bytes>>);

impl Memory {
    fn with(path: &str, data: &[u8]) -> Self {
        let m = Memory::default();
        if let Ok(mut files) = m.0.lock() {
            files.insert(path.to_string(), Bytes::copy_from_slice(data));
        }
        m
    }
    fn file(&self, path: &str) -> Result<Bytes, StorageError> {
        self.0
            .lock()
            .ok()
            .and_then(|f| f.get(path).cloned())
            .ok_or_else(|| StorageError::NotFound { path: path.into() })
    }
}

impl CheckpointStorage for Memory {
    fn put(&self, path: &str, data: Bytes) -> Result<(), StorageError> {
        if let Ok(mut f) = self.0.lock() {
            f.insert(path.into(), data);
        }
        Ok(())
    }
    fn create(&self, path: &str) -> Result<Box<dyn StorageWrite + '_>, StorageError> {
        Err(StorageError::InvalidPath {
            path: path.into(),
            reason: "read-only".into(),
        })
    }
    fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        self.file(path)
    }
    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let f = self.file(path)?;
        let size = f.len() as u64;
        if range.start > range.end || range.end > size {
            return Err(StorageError::OutOfRange {
                path: path.into(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        Ok(f.slice(range.start as usize..range.end as usize))
    }
    fn size(&self, path: &str) -> Result<u64, StorageError> {
        Ok(self.file(path)?.len() as u64)
    }
    fn list(&self, _prefix: &str) -> Result<Vec<String>, StorageError> {
        Ok(self.0.lock().map(|f| f.keys().cloned().collect()).unwrap_or_default())
    }
    fn delete(&self, path: &str) -> Result<(), StorageError> {
        if let Ok(mut f) = self.0.lock() {
            f.remove(path);
        }
        Ok(())
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn set_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Fixes the checksum of a `frame`d file: `magic 8 | version u32 | len u64 | body |
/// crc32c(body) u32` (operator-state files, native manifests).
pub fn fix_frame(b: &mut [u8]) {
    let Some(len) = u64_at(b, 12).and_then(|l| usize::try_from(l).ok()) else {
        return;
    };
    let Some(end) = 20usize.checked_add(len) else {
        return;
    };
    if end.checked_add(4).is_some_and(|e| e <= b.len()) {
        let crc = crc32c::crc32c(&b[20..end]);
        set_u32(b, end, crc);
    }
}

/// Fixes every checksum of a key-group-indexed file: the header's, each block's (in
/// the index), the index's and the footer's (layout in `docs/formats.md`).
pub fn fix_keygroup_file(b: &mut [u8]) {
    // Header: prelude `magic 8 | version u32 | kind u32 | header_len u32`.
    if let Some(h) = u32_at(b, 16).map(|h| h as usize)
        && let Some(end) = 20usize.checked_add(h)
        && end.checked_add(4).is_some_and(|e| e <= b.len())
    {
        let crc = crc32c::crc32c(&b[20..end]);
        set_u32(b, end, crc);
    }
    // Footer: the last 40 bytes.
    let Some(footer) = b.len().checked_sub(40) else {
        return;
    };
    let (Some(index_offset), Some(count)) = (u64_at(b, footer + 12), u32_at(b, footer + 20))
    else {
        return;
    };
    let Ok(index_offset) = usize::try_from(index_offset) else {
        return;
    };
    let index_len = (count as usize).saturating_mul(24);
    if index_offset.checked_add(index_len) == Some(footer) {
        for e in 0..count as usize {
            let at = index_offset + e * 24;
            let (Some(off), Some(len)) = (u64_at(b, at + 4), u64_at(b, at + 12)) else {
                continue;
            };
            if let (Ok(off), Ok(len)) = (usize::try_from(off), usize::try_from(len))
                && off.checked_add(len).is_some_and(|end| end <= index_offset)
            {
                let crc = crc32c::crc32c(&b[off..off + len]);
                set_u32(b, at + 20, crc);
            }
        }
        let crc = crc32c::crc32c(&b[index_offset..footer]);
        set_u32(b, footer + 24, crc);
    }
    let crc = crc32c::crc32c(&b[footer..footer + 28]);
    set_u32(b, footer + 28, crc);
}

/// A key-group snapshot file: opened and every key group's sections decoded, with
/// the handle taken from the file's own footer (so mutations of it are reachable).
pub fn keygroup_file(data: &[u8]) {
    let mut b = data.to_vec();
    fix_keygroup_file(&mut b);
    let Some(footer) = b.len().checked_sub(40) else {
        return;
    };
    let (Some(mp), Some(start), Some(end)) =
        (u32_at(&b, footer), u32_at(&b, footer + 4), u32_at(&b, footer + 8))
    else {
        return;
    };
    let Ok(range) = (if end > start {
        KeyGroupRange::new(start, end - 1)
    } else {
        Ok(KeyGroupRange::empty())
    }) else {
        return;
    };
    let storage = Memory::with("f.kgs", &b);
    let handle = KeyedStateHandle {
        path: "f.kgs".into(),
        key_group_range: range,
        max_parallelism: mp,
        size: b.len() as u64,
        format: SnapshotFormat::Canonical,
        shared_files: Vec::new(),
        uploaded_bytes: 0,
    };
    let _ = KIND_KEYED_MANAGED;
    if let Ok(restored) = read_keyed_state(&storage, &[handle], mp, range) {
        for state in restored.states.values() {
            for (_, section) in &state.sections {
                let _ = section_entries(section, "f.kgs");
            }
        }
    }
}

/// An operator-state file, restored as one instance of one and of three.
pub fn operator_file(data: &[u8]) {
    let mut b = data.to_vec();
    fix_frame(&mut b);
    let storage = Memory::with("f.ops", &b);
    let handle = OperatorStateHandle {
        path: "f.ops".into(),
        subtask_index: 0,
        size: b.len() as u64,
    };
    for (index, parallelism) in [(0, 1), (2, 3)] {
        if let Ok(store) =
            OperatorStateStore::restore(&storage, std::slice::from_ref(&handle), index, parallelism)
        {
            let _ = store.state_names();
        }
    }
}

/// A RocksDB native manifest (any version this build reads), re-encoded when valid.
pub fn native_manifest(data: &[u8]) {
    let mut b = data.to_vec();
    fix_frame(&mut b);
    if let Ok(m) = NativeManifest::decode(&b, "manifest") {
        // What decodes must encode again and decode to the same.
        if let Ok(again) = m.encode() {
            let back = NativeManifest::decode(&again, "manifest");
            assert!(back.is_ok(), "re-encoded manifest does not decode");
        }
    }
}

/// A RocksDB list value (length-prefixed elements and runs of integers). What reads
/// converts to a canonical list of the same elements.
pub fn rocksdb_list(data: &[u8]) {
    if let Ok(items) = stored_list_items(data, "list") {
        let canonical = stored_list_to_canonical(data, "list");
        let back = canonical
            .as_deref()
            .map(|c| flowstate_core::snapshot::payload::list_items(c, "canonical"));
        assert!(
            matches!(back, Ok(Ok(ref b)) if *b == items),
            "a readable list value has no canonical form of its elements"
        );
    }
    // The iterator ends after its first error.
    let mut it = StoredItems::new(data, "list");
    while let Some(Ok(_)) = it.next() {}
    assert!(it.next().is_none(), "the list iterator goes on after an error");
}

/// A checkpoint `_metadata` JSON document, parsed with every check the runtime does.
pub fn checkpoint_metadata(data: &[u8]) {
    if let Ok(m) = CheckpointMetadata::parse(data, "_metadata") {
        let _ = (m.full_size(), m.uploaded_size(), m.keyed_handles());
        let storage = Memory::default();
        let _ = m.check_files(&storage);
    }
}

/// A checkpoint history (`_history`): parsed leniently, re-rendered and parsed again
/// to the same summaries.
pub fn checkpoint_history(data: &[u8]) {
    use flowstate_core::checkpoint_history::{parse_history, render_history};
    let (h, _) = parse_history(data);
    let (again, skipped) = parse_history(&render_history(&h));
    assert_eq!(skipped, 0);
    assert_eq!(again.len(), h.len());
}

/// A type the stored schemas are read into (evolution check and decoding).
#[derive(serde::Deserialize, Debug)]
#[allow(dead_code)]
pub struct Probe {
    id: u64,
    #[serde(alias = "user")]
    name: Option<String>,
    #[serde(default)]
    tags: Vec<(u8, i64)>,
    status: ProbeStatus,
    #[serde(default)]
    nested: Option<Box<Probe>>,
}

/// Variants of [`Probe`]'s enum.
#[derive(serde::Deserialize, Debug)]
#[allow(dead_code)]
pub enum ProbeStatus {
    /// A unit variant.
    Open,
    /// A struct variant.
    Done {
        /// A widened number.
        at: u64,
    },
    /// A newtype variant.
    Note(String),
}

/// A stored state schema (`u16` little-endian length, that many bytes of schema JSON)
/// and a stored value (the rest): checked, skipped, read as JSON, evolved into
/// [`Probe`] and decoded as it, and rendered as the state processor's JSON, which must
/// encode back to bytes that render the same. Anything else may fail; nothing may
/// panic.
pub fn state_schema(data: &[u8]) {
    use flowstate_core::schema::{Schema, de, evolve};
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (json, bytes) = rest.split_at(len);
    let Ok(schema) = Schema::from_json(json) else {
        return;
    };
    let _ = de::from_bytes::<serde::de::IgnoredAny>(&schema, bytes);
    let _ = de::from_bytes::<serde_json::Value>(&schema, bytes);
    let _ = evolve::check::<Probe>(&schema);
    let _ = de::from_bytes::<Probe>(&schema, bytes);
    let _ = flowstate_core::schema::first_difference(&schema, &schema);
    // The state processor's JSON: what renders encodes back to bytes that render the
    // same (bytes themselves may differ: map order, `Some(())`).
    if let Ok(v) = flowstate_core::schema::json::render(&schema, bytes) {
        let back = flowstate_core::schema::json::encode(&schema, &v)
            .unwrap_or_else(|e| panic!("rendered {v} does not encode: {e}"));
        let again = flowstate_core::schema::json::render(&schema, &back)
            .unwrap_or_else(|e| panic!("encoded {v} does not render: {e}"));
        assert_eq!(again, v, "render/encode round trip");
    }
}

//! Reading keyed snapshots back: the files overlapping a backend's key-group range,
//! streamed one key group at a time ([`visit_keyed_state`]) or gathered into memory
//! ([`read_keyed_state`]).

use std::collections::HashMap;

use bytes::Bytes;

use crate::error::{StateError, StateResult};
use crate::format::{ByteReader, KIND_KEYED_MANAGED, KeyGroupFileReader};
use crate::keygroup::KeyGroupRange;
use crate::serializer::SerializerSnapshot;
use crate::state::StateKind;
use crate::storage::CheckpointStorage;

use super::handle::{KeyedStateHandle, SnapshotFormat};
use super::meta::{StateMetaInfo, check_kind, decode_header};

/// The restored raw bytes of one state: its description and its sections per key group.
#[derive(Clone, Debug)]
pub struct RestoredState {
    /// The stored description.
    pub meta: StateMetaInfo,
    /// `(key group, section bytes)` for every owned key group that has entries.
    pub sections: Vec<(u32, Bytes)>,
    /// The file it came from (first one if several), for error messages.
    pub path: String,
}

/// Everything read for one backend's key-group range.
#[derive(Clone, Debug, Default)]
pub struct RestoredKeyedState {
    /// The key serializer's snapshot, if any file was read.
    pub key_serializer: Option<SerializerSnapshot>,
    /// Restored states by name.
    pub states: HashMap<String, RestoredState>,
}

/// Opens every handle whose key groups overlap `range`, checking max parallelism,
/// that no key group is held twice, and that each file covers what its handle claims.
pub(crate) fn open_overlapping<'s, 'h>(
    storage: &'s dyn CheckpointStorage,
    handles: &'h [KeyedStateHandle],
    max_parallelism: u32,
    range: KeyGroupRange,
    kind: u32,
) -> StateResult<Vec<(&'h KeyedStateHandle, KeyGroupFileReader<'s>, KeyGroupRange)>> {
    let mut owner: HashMap<u32, &str> = HashMap::new();
    let mut out = Vec::new();
    for h in handles {
        if h.format != SnapshotFormat::Canonical {
            return Err(StateError::InvalidArgument(format!(
                "`{}` is a {:?} snapshot, not a canonical one",
                h.path, h.format
            )));
        }
        if h.max_parallelism != max_parallelism {
            return Err(StateError::MaxParallelismMismatch {
                path: h.path.clone(),
                snapshot: h.max_parallelism,
                backend: max_parallelism,
            });
        }
        let overlap = h.key_group_range.intersection(&range);
        if overlap.is_empty() {
            continue;
        }
        for kg in overlap.iter() {
            if let Some(other) = owner.insert(kg, &h.path) {
                return Err(StateError::InvalidArgument(format!(
                    "snapshots `{other}` and `{}` both hold key group {kg}",
                    h.path
                )));
            }
        }
        let file = KeyGroupFileReader::open(storage, &h.path, kind)?;
        if file.max_parallelism() != max_parallelism {
            return Err(StateError::MaxParallelismMismatch {
                path: h.path.clone(),
                snapshot: file.max_parallelism(),
                backend: max_parallelism,
            });
        }
        if file.key_group_range().intersection(&overlap) != overlap {
            return Err(StateError::corrupt(
                &h.path,
                format!(
                    "file covers {}, its handle claims {}",
                    file.key_group_range(),
                    h.key_group_range
                ),
            ));
        }
        out.push((h, file, overlap));
    }
    Ok(out)
}

/// What one snapshot file says about its contents.
#[derive(Clone, Debug)]
pub struct RestoredFileHeader {
    /// The file.
    pub path: String,
    /// Snapshot of the key serializer that wrote it.
    pub key_serializer: SerializerSnapshot,
    /// The states it holds; a section's state id indexes this list.
    pub metas: Vec<StateMetaInfo>,
}

/// Streams the key groups of `range` from every handle that overlaps it: `on_file` sees
/// each file's header first, then `on_section` each (state, key group) section, one
/// key group at a time, so a restore never needs the whole state in memory.
///
/// Errors: another max parallelism, overlapping handles, non-canonical handles, corrupt
/// files.
pub fn visit_keyed_state(
    storage: &dyn CheckpointStorage,
    handles: &[KeyedStateHandle],
    max_parallelism: u32,
    range: KeyGroupRange,
    mut on_file: impl FnMut(&RestoredFileHeader) -> StateResult<()>,
    mut on_section: impl FnMut(&RestoredFileHeader, &StateMetaInfo, u32, Bytes) -> StateResult<()>,
) -> StateResult<()> {
    for (h, file, overlap) in
        open_overlapping(storage, handles, max_parallelism, range, KIND_KEYED_MANAGED)?
    {
        let (key_serializer, metas) = decode_header(file.header(), &h.path)?;
        let header = RestoredFileHeader {
            path: h.path.clone(),
            key_serializer,
            metas,
        };
        on_file(&header)?;
        file.for_each_key_group(overlap, |kg, block| {
            let mut r = ByteReader::new(&block, &h.path);
            while !r.is_empty() {
                let id = r.u32("section state id")? as usize;
                let len = r.u64("section length")?;
                let start = r.position();
                let len = usize::try_from(len)
                    .map_err(|_| StateError::corrupt(&h.path, "section too long"))?;
                r.take(len, "section")?;
                let meta = header.metas.get(id).ok_or_else(|| {
                    StateError::corrupt(&h.path, format!("section names unknown state id {id}"))
                })?;
                on_section(&header, meta, kg, block.slice(start..start + len))?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Checks that a file's header agrees with what earlier files said (same key
/// serializer, same kind per state name).
pub fn check_header_consistency(
    seen_key_serializer: &mut Option<SerializerSnapshot>,
    seen_kinds: &mut HashMap<String, StateKind>,
    header: &RestoredFileHeader,
) -> StateResult<()> {
    match seen_key_serializer {
        None => *seen_key_serializer = Some(header.key_serializer.clone()),
        Some(k) if *k != header.key_serializer => {
            return Err(StateError::corrupt(
                &header.path,
                "key serializer differs from other snapshot files",
            ));
        }
        Some(_) => {}
    }
    for meta in &header.metas {
        let kind = *seen_kinds.entry(meta.name.clone()).or_insert(meta.kind);
        check_kind(&meta.name, kind, meta.kind)?;
    }
    Ok(())
}

/// Reads the key groups of `range` from every handle that overlaps it into memory
/// (for backends that hold state in memory anyway).
pub fn read_keyed_state(
    storage: &dyn CheckpointStorage,
    handles: &[KeyedStateHandle],
    max_parallelism: u32,
    range: KeyGroupRange,
) -> StateResult<RestoredKeyedState> {
    let mut restored = RestoredKeyedState::default();
    let mut kinds = HashMap::new();
    let mut key_serializer = None;
    let states = std::cell::RefCell::new(HashMap::<String, RestoredState>::new());
    visit_keyed_state(
        storage,
        handles,
        max_parallelism,
        range,
        |header| {
            check_header_consistency(&mut key_serializer, &mut kinds, header)?;
            let mut states = states.borrow_mut();
            for meta in &header.metas {
                states
                    .entry(meta.name.clone())
                    .or_insert_with(|| RestoredState {
                        meta: meta.clone(),
                        sections: Vec::new(),
                        path: header.path.clone(),
                    });
            }
            Ok(())
        },
        |_, meta, kg, section| {
            if let Some(state) = states.borrow_mut().get_mut(&meta.name) {
                state.sections.push((kg, section));
            }
            Ok(())
        },
    )?;
    restored.key_serializer = key_serializer;
    restored.states = states.into_inner();
    Ok(restored)
}

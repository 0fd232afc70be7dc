//! Keyed-state snapshots in the canonical format, shared by every backend.
//!
//! A snapshot of one instance's keyed state is one key-group-indexed file
//! ([`crate::format`]) whose header lists the states (name, kind, serializer
//! snapshots) and whose block for each key group holds one section per state:
//! `state id | byte length | entries`. An entry is `key | namespace | payload`, each
//! length-prefixed; the payload of value, reducing and aggregating state is the
//! serialized value, of list state the element count and elements, of map state the
//! pair count and pairs. `docs/formats.md` specifies every byte.
//!
//! Backends produce a [`KeyedSnapshot`] in their synchronous phase (capturing what to
//! write without copying it) and the caller runs [`KeyedSnapshot::write`] on any thread.
//! Restores go through [`read_keyed_state`], which reads only the key groups a backend
//! owns and hands back raw sections per state; a backend decodes them when the state is
//! registered, after checking serializer compatibility.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::SerializationError;
use crate::error::{StateError, StateResult};
use crate::format::{
    ByteReader, KIND_KEYED_MANAGED, KeyGroupFileReader, KeyGroupFileWriter, PutLe,
    put_len_prefixed, put_varint, put_vbytes,
};
use crate::keygroup::KeyGroupRange;
use crate::serializer::{SerializerSnapshot, TypeSerializer};
use crate::state::StateKind;
use crate::storage::CheckpointStorage;

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

/// Whether `name` can name a state in every backend: non-empty, at most 255 bytes,
/// no NUL or control characters (RocksDB column family names are C strings).
pub fn check_state_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a state name is empty".into());
    }
    if name.len() > 255 {
        return Err(format!("state name of {} bytes (at most 255)", name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("state name {name:?} holds a control character"));
    }
    Ok(())
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

/// The asynchronous part of a keyed snapshot: written on any thread while processing
/// continues.
pub trait AsyncKeyedSnapshot: Send + 'static {
    /// Writes the snapshot under `path` and returns its handle.
    fn write(self, storage: &dyn CheckpointStorage, path: &str) -> StateResult<KeyedStateHandle>;
}

/// The stored description of one keyed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateMetaInfo {
    /// Unique name within the backend.
    pub name: String,
    /// Kind of state.
    pub kind: StateKind,
    /// Snapshot of the namespace serializer.
    pub namespace_serializer: SerializerSnapshot,
    /// Snapshot of the value serializer (list element, map value, accumulator, ...).
    pub value_serializer: SerializerSnapshot,
    /// Snapshot of the map user-key serializer (map state only).
    pub user_key_serializer: Option<SerializerSnapshot>,
}

/// Checks that a state registered or restored as `existing` may be used as `requested`.
pub fn check_kind(name: &str, existing: StateKind, requested: StateKind) -> StateResult<()> {
    if existing == requested {
        return Ok(());
    }
    Err(StateError::KindMismatch {
        name: name.to_string(),
        existing,
        requested,
    })
}

impl StateMetaInfo {
    /// The description of a state with namespaces of type `N` (serialized with serde).
    pub fn new<N: crate::state::Namespace>(
        name: &str,
        kind: StateKind,
        value_serializer: SerializerSnapshot,
        user_key_serializer: Option<SerializerSnapshot>,
    ) -> Self {
        StateMetaInfo {
            name: name.to_string(),
            kind,
            namespace_serializer: crate::serializer::SerdeSerializer::<N>::new().snapshot(),
            value_serializer,
            user_key_serializer,
        }
    }

    /// Checks that asking again for this registered state with `value` as its value
    /// serializer reads the same bytes.
    pub fn check_value_serializer<T: 'static>(
        &self,
        value: &dyn TypeSerializer<T>,
    ) -> StateResult<()> {
        crate::serializer::require_same_layout(&self.name, "value", value, &self.value_serializer)
    }

    /// Checks a map state's user-key serializer (user keys locate entries, so their
    /// layout may not change).
    pub fn check_user_key_serializer<K: 'static>(
        &self,
        user_key: &dyn TypeSerializer<K>,
    ) -> StateResult<()> {
        match &self.user_key_serializer {
            Some(u) => crate::serializer::require_same_layout(&self.name, "user key", user_key, u),
            None => Err(StateError::corrupt(
                &self.name,
                "map state without a user key serializer",
            )),
        }
    }

    /// Checks that this restored state can be registered as `kind` with namespaces of
    /// type `N` (namespace bytes locate data, so their layout may not change).
    pub fn check_restorable_as<N: crate::state::Namespace>(
        &self,
        kind: StateKind,
    ) -> StateResult<()> {
        check_kind(&self.name, self.kind, kind)?;
        crate::serializer::require_same_layout(
            &self.name,
            "namespace",
            &crate::serializer::SerdeSerializer::<N>::new(),
            &self.namespace_serializer,
        )
    }
}

/// Appends a serializer snapshot (identity, version, schema).
pub fn put_serializer(out: &mut Vec<u8>, s: &SerializerSnapshot) -> StateResult<()> {
    out.put_bytes("serializer identity", s.identity.as_bytes())?;
    out.put_u32(s.version);
    out.put_bytes("serializer schema", &s.schema)
}

/// Reads what [`put_serializer`] wrote.
pub fn read_serializer(r: &mut ByteReader<'_>) -> StateResult<SerializerSnapshot> {
    Ok(SerializerSnapshot {
        identity: r.string("serializer identity")?,
        version: r.u32("serializer version")?,
        schema: r.bytes("serializer schema")?.to_vec(),
    })
}

/// Encodes the key serializer and state descriptions (the managed keyed header).
pub fn encode_header(
    key_serializer: &SerializerSnapshot,
    states: &[StateMetaInfo],
) -> StateResult<Vec<u8>> {
    let mut out = Vec::new();
    put_serializer(&mut out, key_serializer)?;
    out.put_u32(states.len() as u32);
    for s in states {
        out.put_bytes("state name", s.name.as_bytes())?;
        out.put_u8(s.kind.code());
        put_serializer(&mut out, &s.namespace_serializer)?;
        put_serializer(&mut out, &s.value_serializer)?;
        match &s.user_key_serializer {
            Some(u) => {
                out.put_u8(1);
                put_serializer(&mut out, u)?;
            }
            None => out.put_u8(0),
        }
    }
    Ok(out)
}

/// Decodes what [`encode_header`] wrote.
pub fn decode_header(
    bytes: &[u8],
    path: &str,
) -> StateResult<(SerializerSnapshot, Vec<StateMetaInfo>)> {
    let mut r = ByteReader::new(bytes, path);
    let key = read_serializer(&mut r)?;
    let n = r.u32("state count")?;
    let mut states = Vec::new();
    for _ in 0..n {
        let name = r.string("state name")?;
        check_state_name(&name).map_err(|e| StateError::corrupt(path, e))?;
        let code = r.u8("state kind")?;
        let kind = StateKind::from_code(code).ok_or_else(|| {
            StateError::corrupt(path, format!("unknown state kind {code} for `{name}`"))
        })?;
        let namespace_serializer = read_serializer(&mut r)?;
        let value_serializer = read_serializer(&mut r)?;
        let user_key_serializer = match r.u8("user key flag")? {
            0 => None,
            1 => Some(read_serializer(&mut r)?),
            f => return Err(StateError::corrupt(path, format!("bad user key flag {f}"))),
        };
        states.push(StateMetaInfo {
            name,
            kind,
            namespace_serializer,
            value_serializer,
            user_key_serializer,
        });
    }
    if !r.is_empty() {
        return Err(StateError::corrupt(path, "trailing bytes after the header"));
    }
    Ok((key, states))
}

/// Writes the entries of one state, one key group at a time (the asynchronous part).
pub trait KeyedStateWriter: Send {
    /// The state's stored description.
    fn meta(&self) -> &StateMetaInfo;
    /// Appends every entry of `key_group` to `out` (see [`EntryEncoder`]), then may
    /// release whatever it held for that key group.
    fn write_key_group(&mut self, key_group: u32, out: &mut EntryEncoder<'_>) -> StateResult<()>;
}

/// Appends canonical entries to a section.
pub struct EntryEncoder<'a> {
    out: &'a mut Vec<u8>,
    entries: usize,
}

fn ser_err(state: &str) -> impl Fn(SerializationError) -> StateError + '_ {
    move |e| StateError::serialization(state, e)
}

impl<'a> EntryEncoder<'a> {
    /// An encoder appending to `out` (for writers that post-process a section).
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        EntryEncoder { out, entries: 0 }
    }

    /// Appends an entry: `key` and `namespace` encoded by their serializers, then the
    /// payload produced by `payload`.
    pub fn entry<K: 'static, N: 'static>(
        &mut self,
        state: &str,
        key_serializer: &dyn TypeSerializer<K>,
        key: &K,
        namespace_serializer: &dyn TypeSerializer<N>,
        namespace: &N,
        payload: impl FnOnce(&mut Vec<u8>) -> StateResult<()>,
    ) -> StateResult<()> {
        put_len_prefixed(self.out, |o| key_serializer.serialize_into(key, o))?
            .map_err(ser_err(state))?;
        put_len_prefixed(self.out, |o| {
            namespace_serializer.serialize_into(namespace, o)
        })?
        .map_err(ser_err(state))?;
        put_len_prefixed(self.out, payload)??;
        self.entries += 1;
        Ok(())
    }

    /// Appends an already encoded entry (key, namespace and payload bytes).
    pub fn raw_entry(&mut self, key: &[u8], namespace: &[u8], payload: &[u8]) -> StateResult<()> {
        put_vbytes(self.out, key)?;
        put_vbytes(self.out, namespace)?;
        put_vbytes(self.out, payload)?;
        self.entries += 1;
        Ok(())
    }

    /// Appends already encoded entries verbatim (a section carried over from a restore).
    pub fn raw_entries(&mut self, section: &[u8]) {
        if !section.is_empty() {
            self.out.extend_from_slice(section);
            self.entries += 1;
        }
    }
}

/// Payload encoders and decoders of the canonical format.
pub mod payload {
    use super::*;

    /// A single value (value, reducing, aggregating state).
    pub fn put_value<T: 'static>(
        state: &str,
        ser: &dyn TypeSerializer<T>,
        v: &T,
        out: &mut Vec<u8>,
    ) -> StateResult<()> {
        ser.serialize_into(v, out).map_err(ser_err(state))
    }

    /// A list: varint count, then varint-length-prefixed elements.
    pub fn put_list<'v, T: 'static>(
        state: &str,
        ser: &dyn TypeSerializer<T>,
        items: impl ExactSizeIterator<Item = &'v T>,
        out: &mut Vec<u8>,
    ) -> StateResult<()> {
        put_varint(
            out,
            u32::try_from(items.len())
                .map_err(|_| StateError::InvalidArgument("list too long".into()))?,
        );
        for v in items {
            put_len_prefixed(out, |o| ser.serialize_into(v, o))?.map_err(ser_err(state))?;
        }
        Ok(())
    }

    /// A map: varint count, then varint-length-prefixed user key and value per pair.
    pub fn put_map<'v, K: 'static, V: 'static>(
        state: &str,
        key_ser: &dyn TypeSerializer<K>,
        value_ser: &dyn TypeSerializer<V>,
        pairs: impl ExactSizeIterator<Item = (&'v K, &'v V)>,
        out: &mut Vec<u8>,
    ) -> StateResult<()> {
        put_varint(
            out,
            u32::try_from(pairs.len())
                .map_err(|_| StateError::InvalidArgument("map too large".into()))?,
        );
        for (k, v) in pairs {
            put_len_prefixed(out, |o| key_ser.serialize_into(k, o))?.map_err(ser_err(state))?;
            put_len_prefixed(out, |o| value_ser.serialize_into(v, o))?.map_err(ser_err(state))?;
        }
        Ok(())
    }

    /// Splits a list payload into element encodings.
    pub fn list_items<'a>(payload: &'a [u8], path: &'a str) -> StateResult<Vec<&'a [u8]>> {
        let mut r = ByteReader::new(payload, path);
        let n = r.varint("list length")?;
        let mut items = Vec::with_capacity((n as usize).min(payload.len()));
        for _ in 0..n {
            items.push(r.vbytes("list element")?);
        }
        if !r.is_empty() {
            return Err(StateError::corrupt(
                path,
                "trailing bytes after list elements",
            ));
        }
        Ok(items)
    }

    /// Splits a map payload into (user key, value) encodings.
    pub fn map_pairs<'a>(
        payload: &'a [u8],
        path: &'a str,
    ) -> StateResult<Vec<(&'a [u8], &'a [u8])>> {
        let mut r = ByteReader::new(payload, path);
        let n = r.varint("map length")?;
        let mut pairs = Vec::with_capacity((n as usize).min(payload.len() / 2));
        for _ in 0..n {
            let k = r.vbytes("map user key")?;
            let v = r.vbytes("map value")?;
            pairs.push((k, v));
        }
        if !r.is_empty() {
            return Err(StateError::corrupt(
                path,
                "trailing bytes after map entries",
            ));
        }
        Ok(pairs)
    }
}

/// One encoded entry of a section.
#[derive(Clone, Copy, Debug)]
pub struct RawEntry<'a> {
    /// Serialized key.
    pub key: &'a [u8],
    /// Serialized namespace.
    pub namespace: &'a [u8],
    /// Canonical payload.
    pub payload: &'a [u8],
}

/// Checks that an entry's key belongs to the key group it is stored under (every
/// reader of a keyed snapshot does: a key in the wrong group would be lost on rescale).
pub fn check_entry_key_group(
    path: &str,
    state: &str,
    key: &[u8],
    key_group: u32,
    max_parallelism: u32,
) -> StateResult<()> {
    if crate::keygroup::key_group_for_serialized_key(key, max_parallelism) != key_group {
        return Err(StateError::corrupt(
            path,
            format!("state `{state}`: a key stored in key group {key_group} belongs elsewhere"),
        ));
    }
    Ok(())
}

/// Parses every entry of a section.
pub fn section_entries<'a>(section: &'a [u8], path: &'a str) -> StateResult<Vec<RawEntry<'a>>> {
    let mut r = ByteReader::new(section, path);
    let mut out = Vec::new();
    while !r.is_empty() {
        let key = r.vbytes("entry key")?;
        let namespace = r.vbytes("entry namespace")?;
        let payload = r.vbytes("entry payload")?;
        out.push(RawEntry {
            key,
            namespace,
            payload,
        });
    }
    Ok(out)
}

/// The asynchronous part of a keyed snapshot: everything needed to write the file.
pub struct KeyedSnapshot {
    max_parallelism: u32,
    range: KeyGroupRange,
    key_serializer: SerializerSnapshot,
    writers: Vec<Box<dyn KeyedStateWriter>>,
}

impl KeyedSnapshot {
    /// Assembles a snapshot from per-state writers (backends call this in their
    /// synchronous phase).
    pub fn new(
        max_parallelism: u32,
        range: KeyGroupRange,
        key_serializer: SerializerSnapshot,
        writers: Vec<Box<dyn KeyedStateWriter>>,
    ) -> Self {
        KeyedSnapshot {
            max_parallelism,
            range,
            key_serializer,
            writers,
        }
    }

    /// Number of states captured.
    pub fn state_count(&self) -> usize {
        self.writers.len()
    }
}

impl AsyncKeyedSnapshot for KeyedSnapshot {
    fn write(
        mut self,
        storage: &dyn CheckpointStorage,
        path: &str,
    ) -> StateResult<KeyedStateHandle> {
        let metas: Vec<StateMetaInfo> = self.writers.iter().map(|w| w.meta().clone()).collect();
        let header = encode_header(&self.key_serializer, &metas)?;
        let mut file = KeyGroupFileWriter::new(
            storage.create(path)?,
            KIND_KEYED_MANAGED,
            self.max_parallelism,
            self.range,
            &header,
        )?;
        for kg in self.range.iter() {
            file.begin_key_group(kg)?;
            for (id, w) in self.writers.iter_mut().enumerate() {
                let out = file.buffer();
                let at = out.len();
                out.put_u32(id as u32);
                out.put_u64(0);
                let mut enc = EntryEncoder { out, entries: 0 };
                w.write_key_group(kg, &mut enc)?;
                let entries = enc.entries;
                let len = (out.len() - at - 12) as u64;
                if entries == 0 {
                    out.truncate(at);
                } else {
                    out[at + 4..at + 12].copy_from_slice(&len.to_le_bytes());
                }
            }
        }
        let size = file.finish()?;
        Ok(KeyedStateHandle::canonical(
            path,
            self.range,
            self.max_parallelism,
            size,
        ))
    }
}

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

//! The operator state file (`docs/formats.md`, "Operator state file"): one instance's
//! operator states in encoded form, how each is redistributed, and the handle a
//! checkpoint records for the file.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{StateError, StateResult};
use crate::format::{ByteReader, PutLe, frame, unframe};
use crate::serializer::SerializerSnapshot;
use crate::storage::CheckpointStorage;

const OPS_MAGIC: &[u8; 8] = b"FLWSOPS\0";
const OPS_VERSION: u32 = 1;

/// How an operator state is redistributed on restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperatorStateMode {
    /// Even-split list state.
    SplitDistribute,
    /// Union list state.
    Union,
    /// Broadcast map state.
    Broadcast,
}

impl OperatorStateMode {
    /// The mode's byte in the operator state file.
    pub(super) fn code(self) -> u8 {
        match self {
            OperatorStateMode::SplitDistribute => 1,
            OperatorStateMode::Union => 2,
            OperatorStateMode::Broadcast => 3,
        }
    }
    /// The mode a byte of the file names, if any.
    pub(super) fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => OperatorStateMode::SplitDistribute,
            2 => OperatorStateMode::Union,
            3 => OperatorStateMode::Broadcast,
            _ => return None,
        })
    }
    /// What the mode is called in messages and listings.
    pub fn describe(self) -> &'static str {
        match self {
            OperatorStateMode::SplitDistribute => "even-split list state",
            OperatorStateMode::Union => "union list state",
            OperatorStateMode::Broadcast => "broadcast state",
        }
    }
}

/// Where one instance's operator state was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateHandle {
    /// Path in checkpoint storage.
    pub path: String,
    /// The instance (subtask) index that wrote it.
    pub subtask_index: u32,
    /// File size in bytes.
    pub size: u64,
}

/// One operator state in encoded form: items are elements (lists) or
/// `(key, value)` encodings (broadcast). Offline tools read and write these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedState {
    /// How it is redistributed on restore.
    pub mode: OperatorStateMode,
    /// The element serializer (lists), or the key and value serializers (broadcast).
    pub serializers: Vec<SerializerSnapshot>,
    /// The stored items.
    pub items: Vec<Item>,
}

/// One stored item of an operator state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A list element's bytes.
    Element(Bytes),
    /// A broadcast entry's key and value bytes.
    Pair(Bytes, Bytes),
}

/// Encodes the operator state file of instance `subtask_index` holding `states`
/// (`docs/formats.md`, "Operator state file").
pub fn encode_operator_file(
    subtask_index: u32,
    states: &BTreeMap<String, EncodedState>,
) -> StateResult<OperatorSnapshot> {
    let mut body = Vec::new();
    body.put_u32(subtask_index);
    body.put_u32(states.len() as u32);
    for (name, s) in states {
        body.put_bytes("state name", name.as_bytes())?;
        body.put_u8(s.mode.code());
        body.put_u8(s.serializers.len() as u8);
        for ser in &s.serializers {
            body.put_bytes("serializer identity", ser.identity.as_bytes())?;
            body.put_u32(ser.version);
            body.put_bytes("serializer schema", &ser.schema)?;
        }
        body.put_u32(s.items.len() as u32);
        for item in &s.items {
            match item {
                Item::Element(b) => body.put_bytes("element", b)?,
                Item::Pair(k, v) => {
                    body.put_bytes("key", k)?;
                    body.put_bytes("value", v)?;
                }
            }
        }
    }
    Ok(OperatorSnapshot {
        subtask_index,
        bytes: Bytes::from(frame(OPS_MAGIC, OPS_VERSION, &body)),
    })
}

/// Reads an operator state file: its states by name, in stored order.
pub fn parse_operator_file(bytes: &[u8], path: &str) -> StateResult<Vec<(String, EncodedState)>> {
    let body = unframe(bytes, path, OPS_MAGIC, OPS_VERSION, "operator state file")?;
    let mut r = ByteReader::new(body, path);
    let _subtask = r.u32("subtask index")?;
    let n = r.u32("state count")?;
    let mut out = Vec::new();
    for _ in 0..n {
        let name = r.string("state name")?;
        let code = r.u8("mode")?;
        let mode = OperatorStateMode::from_code(code)
            .ok_or_else(|| StateError::corrupt(path, format!("unknown mode {code} of `{name}`")))?;
        let sc = r.u8("serializer count")?;
        let mut serializers = Vec::new();
        for _ in 0..sc {
            serializers.push(SerializerSnapshot {
                identity: r.string("serializer identity")?,
                version: r.u32("serializer version")?,
                schema: r.bytes("serializer schema")?.to_vec(),
            });
        }
        let count = r.u32("item count")?;
        let mut items = Vec::with_capacity((count as usize).min(body.len() / 4));
        for _ in 0..count {
            items.push(if mode == OperatorStateMode::Broadcast {
                let k = Bytes::copy_from_slice(r.bytes("key")?);
                Item::Pair(k, Bytes::copy_from_slice(r.bytes("value")?))
            } else {
                Item::Element(Bytes::copy_from_slice(r.bytes("element")?))
            });
        }
        out.push((
            name,
            EncodedState {
                mode,
                serializers,
                items,
            },
        ));
    }
    if !r.is_empty() {
        return Err(StateError::corrupt(path, "trailing bytes after the states"));
    }
    Ok(out)
}

/// The encoded operator state of one instance, ready to be written.
#[derive(Clone, Debug)]
pub struct OperatorSnapshot {
    subtask_index: u32,
    bytes: Bytes,
}

impl OperatorSnapshot {
    /// Writes the snapshot to `path`.
    pub fn write(
        self,
        storage: &dyn CheckpointStorage,
        path: &str,
    ) -> StateResult<OperatorStateHandle> {
        let size = self.bytes.len() as u64;
        storage.put(path, self.bytes)?;
        Ok(OperatorStateHandle {
            path: path.to_string(),
            subtask_index: self.subtask_index,
            size,
        })
    }
}

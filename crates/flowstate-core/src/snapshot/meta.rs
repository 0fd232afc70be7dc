//! The stored description of keyed states: each state's name, kind and serializer
//! snapshots, and the managed keyed header that lists them at the head of a snapshot
//! file.

use crate::error::{StateError, StateResult};
use crate::format::{ByteReader, PutLe};
use crate::serializer::{SerializerSnapshot, TypeSerializer};
use crate::state::StateKind;

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

//! Operator (non-keyed) state: per-instance lists, union lists and broadcast maps.
//!
//! Mirrors Flink's `OperatorStateStore`. On restore with another parallelism:
//! - even-split list state: the concatenation of all old instances' lists (in instance
//!   order) is cut into contiguous parts whose sizes differ by at most one, earlier
//!   instances taking the larger parts;
//! - union list state: every instance receives the whole concatenation;
//! - broadcast state: every instance receives one copy (the lowest old instance's).
//!
//! Restored states stay encoded until registered, where the serializer's compatibility
//! is checked first; states never registered are carried into later snapshots
//! unchanged, so nothing restored is dropped by accident.
//!
//! ```
//! use flowstate_core::operator::OperatorStateStore;
//! use flowstate_core::descriptor::ListStateDescriptor;
//! use flowstate_core::state::ListState;
//! let store = OperatorStateStore::new(0);
//! let offsets = store.list_state(&ListStateDescriptor::<u64>::new("offsets")).unwrap();
//! offsets.add(42).unwrap();
//! assert_eq!(offsets.get().unwrap(), vec![42]);
//! ```

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::descriptor::{ListStateDescriptor, MapStateDescriptor, validate_state_name};
use crate::error::{StateError, StateResult};
use crate::format::{ByteReader, PutLe, frame, unframe};
use crate::serializer::{
    MigrationReader, SerializerSnapshot, TypeSerializer, require_same_layout,
    resolve_value_serializer,
};
use crate::state::{ListState, MapState, StateKey, StateValue};
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
    fn code(self) -> u8 {
        match self {
            OperatorStateMode::SplitDistribute => 1,
            OperatorStateMode::Union => 2,
            OperatorStateMode::Broadcast => 3,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
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

trait ErasedOperatorState {
    fn encode(&self) -> StateResult<EncodedState>;
    fn as_any(self: Rc<Self>) -> Rc<dyn Any>;
}

/// An operator list state (even-split or union).
pub struct OperatorListState<T> {
    name: String,
    mode: OperatorStateMode,
    serializer: Arc<dyn TypeSerializer<T>>,
    items: RefCell<Vec<T>>,
}

impl<T: StateValue> ListState<T> for OperatorListState<T> {
    fn get(&self) -> StateResult<Vec<T>> {
        Ok(self.items.borrow().clone())
    }
    fn add(&self, value: T) -> StateResult<()> {
        self.items.borrow_mut().push(value);
        Ok(())
    }
    fn add_all(&self, values: Vec<T>) -> StateResult<()> {
        self.items.borrow_mut().extend(values);
        Ok(())
    }
    fn update(&self, values: Vec<T>) -> StateResult<()> {
        *self.items.borrow_mut() = values;
        Ok(())
    }
    fn clear(&self) -> StateResult<()> {
        self.items.borrow_mut().clear();
        Ok(())
    }
}

impl<T: StateValue> ErasedOperatorState for OperatorListState<T> {
    fn encode(&self) -> StateResult<EncodedState> {
        let mut items = Vec::with_capacity(self.items.borrow().len());
        for v in self.items.borrow().iter() {
            let mut b = Vec::new();
            self.serializer
                .serialize_into(v, &mut b)
                .map_err(|e| StateError::serialization(&self.name, e))?;
            items.push(Item::Element(Bytes::from(b)));
        }
        Ok(EncodedState {
            mode: self.mode,
            serializers: vec![self.serializer.snapshot()],
            items,
        })
    }
    fn as_any(self: Rc<Self>) -> Rc<dyn Any> {
        self
    }
}

/// A broadcast state: a map identical on every instance.
pub struct BroadcastState<K, V> {
    name: String,
    key_serializer: Arc<dyn TypeSerializer<K>>,
    value_serializer: Arc<dyn TypeSerializer<V>>,
    map: RefCell<HashMap<K, V>>,
}

impl<K: StateKey, V: StateValue> MapState<K, V> for BroadcastState<K, V> {
    fn get(&self, key: &K) -> StateResult<Option<V>> {
        Ok(self.map.borrow().get(key).cloned())
    }
    fn put(&self, key: K, value: V) -> StateResult<()> {
        self.map.borrow_mut().insert(key, value);
        Ok(())
    }
    fn put_all(&self, entries: Vec<(K, V)>) -> StateResult<()> {
        self.map.borrow_mut().extend(entries);
        Ok(())
    }
    fn remove(&self, key: &K) -> StateResult<()> {
        self.map.borrow_mut().remove(key);
        Ok(())
    }
    fn contains(&self, key: &K) -> StateResult<bool> {
        Ok(self.map.borrow().contains_key(key))
    }
    fn entries(&self) -> StateResult<Vec<(K, V)>> {
        Ok(self
            .map
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn keys(&self) -> StateResult<Vec<K>> {
        Ok(self.map.borrow().keys().cloned().collect())
    }
    fn values(&self) -> StateResult<Vec<V>> {
        Ok(self.map.borrow().values().cloned().collect())
    }
    fn is_empty(&self) -> StateResult<bool> {
        Ok(self.map.borrow().is_empty())
    }
    fn clear(&self) -> StateResult<()> {
        self.map.borrow_mut().clear();
        Ok(())
    }
}

impl<K: StateKey, V: StateValue> ErasedOperatorState for BroadcastState<K, V> {
    fn encode(&self) -> StateResult<EncodedState> {
        let map = self.map.borrow();
        let mut items = Vec::with_capacity(map.len());
        for (k, v) in map.iter() {
            let (mut kb, mut vb) = (Vec::new(), Vec::new());
            self.key_serializer
                .serialize_into(k, &mut kb)
                .map_err(|e| StateError::serialization(&self.name, e))?;
            self.value_serializer
                .serialize_into(v, &mut vb)
                .map_err(|e| StateError::serialization(&self.name, e))?;
            items.push(Item::Pair(Bytes::from(kb), Bytes::from(vb)));
        }
        // Deterministic bytes for identical maps on every instance.
        items.sort_by(|a, b| match (a, b) {
            (Item::Pair(ka, _), Item::Pair(kb, _)) => ka.cmp(kb),
            _ => std::cmp::Ordering::Equal,
        });
        Ok(EncodedState {
            mode: OperatorStateMode::Broadcast,
            serializers: vec![
                self.key_serializer.snapshot(),
                self.value_serializer.snapshot(),
            ],
            items,
        })
    }
    fn as_any(self: Rc<Self>) -> Rc<dyn Any> {
        self
    }
}

struct Registered {
    mode: OperatorStateMode,
    state: Rc<dyn ErasedOperatorState>,
}

/// The operator state of one operator instance.
pub struct OperatorStateStore {
    subtask_index: u32,
    registered: RefCell<BTreeMap<String, Registered>>,
    restored: RefCell<BTreeMap<String, EncodedState>>,
}

impl OperatorStateStore {
    /// An empty store for instance `subtask_index`.
    pub fn new(subtask_index: u32) -> Self {
        OperatorStateStore {
            subtask_index,
            registered: RefCell::new(BTreeMap::new()),
            restored: RefCell::new(BTreeMap::new()),
        }
    }

    /// Names of registered and restored-but-unregistered states.
    pub fn state_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.registered.borrow().keys().cloned().collect();
        names.extend(self.restored.borrow().keys().cloned());
        names.sort();
        names
    }

    /// An even-split list state.
    pub fn list_state<T: StateValue>(
        &self,
        desc: &ListStateDescriptor<T>,
    ) -> StateResult<Rc<OperatorListState<T>>> {
        self.list_state_with_mode(desc, OperatorStateMode::SplitDistribute)
    }

    /// A union list state.
    pub fn union_list_state<T: StateValue>(
        &self,
        desc: &ListStateDescriptor<T>,
    ) -> StateResult<Rc<OperatorListState<T>>> {
        self.list_state_with_mode(desc, OperatorStateMode::Union)
    }

    fn existing<S: 'static>(
        &self,
        name: &str,
        mode: OperatorStateMode,
    ) -> StateResult<Option<Rc<S>>> {
        let reg = self.registered.borrow();
        let Some(r) = reg.get(name) else {
            return Ok(None);
        };
        if r.mode != mode {
            return Err(StateError::TypeMismatch {
                name: name.to_string(),
                detail: format!(
                    "registered as {}, requested as {}",
                    r.mode.describe(),
                    mode.describe()
                ),
            });
        }
        r.state
            .clone()
            .as_any()
            .downcast::<S>()
            .map(Some)
            .map_err(|_| StateError::TypeMismatch {
                name: name.to_string(),
                detail: "registered with other element types".into(),
            })
    }

    fn take_restored(
        &self,
        name: &str,
        mode: OperatorStateMode,
    ) -> StateResult<Option<EncodedState>> {
        let restored = self.restored.borrow();
        let Some(enc) = restored.get(name) else {
            return Ok(None);
        };
        if enc.mode != mode {
            return Err(StateError::TypeMismatch {
                name: name.to_string(),
                detail: format!(
                    "restored as {}, requested as {}",
                    enc.mode.describe(),
                    mode.describe()
                ),
            });
        }
        Ok(Some(enc.clone()))
    }

    fn list_state_with_mode<T: StateValue>(
        &self,
        desc: &ListStateDescriptor<T>,
        mode: OperatorStateMode,
    ) -> StateResult<Rc<OperatorListState<T>>> {
        let name = desc.name();
        validate_state_name(name)?;
        if let Some(s) = self.existing::<OperatorListState<T>>(name, mode)? {
            require_same_layout(
                name,
                "element",
                desc.serializer().as_ref(),
                &s.serializer.snapshot(),
            )?;
            return Ok(s);
        }
        let mut items = Vec::new();
        let mut serializer = desc.serializer().clone();
        if let Some(enc) = self.take_restored(name, mode)? {
            let prev = enc
                .serializers
                .first()
                .ok_or_else(|| StateError::corrupt(name, "no serializer"))?;
            let resolved = resolve_value_serializer(name, "element", desc.serializer(), prev)?;
            items = decode_items(name, &enc.items, &resolved.reader)?;
            serializer = resolved.serializer;
        }
        let state = Rc::new(OperatorListState {
            name: name.to_string(),
            mode,
            serializer,
            items: RefCell::new(items),
        });
        self.restored.borrow_mut().remove(name);
        self.registered.borrow_mut().insert(
            name.to_string(),
            Registered {
                mode,
                state: state.clone(),
            },
        );
        Ok(state)
    }

    /// A broadcast state (read-write; the runtime hands read-only views to keyed sides).
    pub fn broadcast_state<K: StateKey, V: StateValue>(
        &self,
        desc: &MapStateDescriptor<K, V>,
    ) -> StateResult<Rc<BroadcastState<K, V>>> {
        let name = desc.name();
        validate_state_name(name)?;
        let mode = OperatorStateMode::Broadcast;
        if let Some(s) = self.existing::<BroadcastState<K, V>>(name, mode)? {
            require_same_layout(
                name,
                "key",
                desc.key_serializer().as_ref(),
                &s.key_serializer.snapshot(),
            )?;
            require_same_layout(
                name,
                "value",
                desc.value_serializer().as_ref(),
                &s.value_serializer.snapshot(),
            )?;
            return Ok(s);
        }
        let mut map = HashMap::new();
        let mut value_serializer = desc.value_serializer().clone();
        if let Some(enc) = self.take_restored(name, mode)? {
            let [ks, vs] = enc.serializers.as_slice() else {
                return Err(StateError::corrupt(
                    name,
                    "broadcast state needs two serializers",
                ));
            };
            require_same_layout(name, "key", desc.key_serializer().as_ref(), ks)?;
            let resolved = resolve_value_serializer(name, "value", desc.value_serializer(), vs)?;
            for item in &enc.items {
                let Item::Pair(k, v) = item else {
                    return Err(StateError::corrupt(
                        name,
                        "broadcast state holds a list element",
                    ));
                };
                let key = desc
                    .key_serializer()
                    .deserialize(k)
                    .map_err(|e| StateError::serialization(name, e))?;
                let value = (resolved.reader)(v).map_err(|e| StateError::serialization(name, e))?;
                map.insert(key, value);
            }
            value_serializer = resolved.serializer;
        }
        let state = Rc::new(BroadcastState {
            name: name.to_string(),
            key_serializer: desc.key_serializer().clone(),
            value_serializer,
            map: RefCell::new(map),
        });
        self.restored.borrow_mut().remove(name);
        self.registered.borrow_mut().insert(
            name.to_string(),
            Registered {
                mode,
                state: state.clone(),
            },
        );
        Ok(state)
    }

    /// Synchronous part of a snapshot: encodes every state (operator state is small, so
    /// this copy is what Flink does too). Write the result with [`OperatorSnapshot::write`].
    pub fn snapshot(&self) -> StateResult<OperatorSnapshot> {
        let mut states: BTreeMap<String, EncodedState> = self.restored.borrow().clone();
        for (name, r) in self.registered.borrow().iter() {
            states.insert(name.clone(), r.state.encode()?);
        }
        encode_operator_file(self.subtask_index, &states)
    }

    /// Restores instance `subtask_index` of `parallelism` from the operator state
    /// files of every old instance, redistributing each state per its mode.
    pub fn restore(
        storage: &dyn CheckpointStorage,
        handles: &[OperatorStateHandle],
        subtask_index: u32,
        parallelism: u32,
    ) -> StateResult<Self> {
        if parallelism == 0 || subtask_index >= parallelism {
            return Err(StateError::InvalidOperatorIndex {
                index: subtask_index,
                parallelism,
            });
        }
        let mut handles: Vec<&OperatorStateHandle> = handles.iter().collect();
        handles.sort_by_key(|h| h.subtask_index);
        if let Some(w) = handles
            .windows(2)
            .find(|w| w[0].subtask_index == w[1].subtask_index)
        {
            return Err(StateError::InvalidArgument(format!(
                "two operator state snapshots of subtask {}: `{}` and `{}`",
                w[0].subtask_index, w[0].path, w[1].path
            )));
        }
        // One file at a time: a broadcast state is held once, not once per instance.
        let mut merged = merge_operator_states(handles.into_iter().map(|h| {
            let bytes = storage.get(&h.path)?;
            Ok((h.path.clone(), parse_operator_file(&bytes, &h.path)?))
        }))?;
        for enc in merged.values_mut() {
            if enc.mode == OperatorStateMode::SplitDistribute {
                let range = even_split(
                    enc.items.len(),
                    parallelism as usize,
                    subtask_index as usize,
                );
                enc.items = enc.items[range].to_vec();
            }
        }
        Ok(OperatorStateStore {
            subtask_index,
            registered: RefCell::new(BTreeMap::new()),
            restored: RefCell::new(merged),
        })
    }
}

/// Merges the operator states of every old instance (`(path, states)` in instance
/// order, read lazily; the first error stops the merge) as a restore sees them before redistributing: list items concatenated in
/// instance order, broadcast state once (identical everywhere: the lowest instance's
/// copy). A state whose mode or serializers differ between instances is refused (its
/// items could not be read with one serializer).
pub fn merge_operator_states(
    files: impl IntoIterator<Item = StateResult<(String, Vec<(String, EncodedState)>)>>,
) -> StateResult<BTreeMap<String, EncodedState>> {
    let mut merged: BTreeMap<String, EncodedState> = BTreeMap::new();
    for file in files {
        let (path, states) = file?;
        let path = path.as_str();
        for (name, enc) in states {
            match merged.get_mut(&name) {
                None => {
                    merged.insert(name, enc);
                }
                Some(m) if m.mode != enc.mode => {
                    return Err(StateError::corrupt(
                        path,
                        format!(
                            "state `{name}` is {} here but {} elsewhere",
                            enc.mode.describe(),
                            m.mode.describe()
                        ),
                    ));
                }
                Some(m) if m.serializers != enc.serializers => {
                    return Err(StateError::corrupt(
                        path,
                        format!("state `{name}` has other serializers here than elsewhere"),
                    ));
                }
                Some(m) if m.mode == OperatorStateMode::Broadcast => {}
                Some(m) => m.items.extend(enc.items),
            }
        }
    }
    Ok(merged)
}

/// The part of `n` items that instance `index` of `parts` receives under even-split
/// redistribution: contiguous, sizes differing by at most one, larger parts first.
pub fn even_split(n: usize, parts: usize, index: usize) -> std::ops::Range<usize> {
    let parts = parts.max(1);
    let (base, rem) = (n / parts, n % parts);
    let start = index * base + index.min(rem);
    let len = base + usize::from(index < rem);
    start.min(n)..(start + len).min(n)
}

fn decode_items<T>(name: &str, items: &[Item], reader: &MigrationReader<T>) -> StateResult<Vec<T>> {
    items
        .iter()
        .map(|i| match i {
            Item::Element(b) => reader(b).map_err(|e| StateError::serialization(name, e)),
            Item::Pair(..) => Err(StateError::corrupt(
                name,
                "list state holds a key/value pair",
            )),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn state(mode: OperatorStateMode, identity: &str, items: &[u8]) -> EncodedState {
        EncodedState {
            mode,
            serializers: vec![SerializerSnapshot {
                identity: identity.into(),
                version: 1,
                schema: vec![],
            }],
            items: items
                .iter()
                .map(|b| Item::Element(Bytes::from(vec![*b])))
                .collect(),
        }
    }

    #[test]
    fn merging_concatenates_lists_keeps_one_broadcast_copy_and_refuses_disagreement() {
        let file = |path: &str, states: Vec<(&str, EncodedState)>| {
            Ok((
                path.to_string(),
                states
                    .into_iter()
                    .map(|(n, s)| (n.to_string(), s))
                    .collect::<Vec<_>>(),
            ))
        };
        let split = OperatorStateMode::SplitDistribute;
        let bcast = OperatorStateMode::Broadcast;
        let merged = merge_operator_states([
            file(
                "0",
                vec![
                    ("l", state(split, "a", &[1, 2])),
                    ("b", state(bcast, "a", &[9])),
                ],
            ),
            file(
                "1",
                vec![
                    ("l", state(split, "a", &[3])),
                    ("b", state(bcast, "a", &[9])),
                ],
            ),
        ])
        .unwrap();
        assert_eq!(merged["l"], state(split, "a", &[1, 2, 3]));
        assert_eq!(merged["b"], state(bcast, "a", &[9]));
        for other in [
            state(OperatorStateMode::Union, "a", &[3]),
            state(split, "b", &[3]),
        ] {
            let e = merge_operator_states([
                file("0", vec![("l", state(split, "a", &[1]))]),
                file("1", vec![("l", other)]),
            ])
            .unwrap_err();
            assert!(
                matches!(e, StateError::CorruptSnapshot { ref path, .. } if path == "1"),
                "{e}"
            );
        }
    }

    #[test]
    fn even_split_is_contiguous_and_balanced() {
        assert_eq!(even_split(2, 2, 0), 0..1);
        assert_eq!(even_split(2, 2, 1), 1..2);
        for n in 0..40 {
            for p in 1..9 {
                let mut next = 0;
                for i in 0..p {
                    let r = even_split(n, p, i);
                    assert_eq!(r.start, next);
                    assert!(r.len() == n / p || r.len() == n / p + 1);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }
}

//! [`OperatorStateStore`]: the operator state of one instance, registering states,
//! snapshotting them, and restoring them redistributed from another parallelism.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use crate::descriptor::{ListStateDescriptor, MapStateDescriptor, validate_state_name};
use crate::error::{StateError, StateResult};
use crate::serializer::{MigrationReader, require_same_layout, resolve_value_serializer};
use crate::state::{StateKey, StateValue};
use crate::storage::CheckpointStorage;

use super::file::{
    EncodedState, Item, OperatorSnapshot, OperatorStateHandle, OperatorStateMode,
    encode_operator_file, parse_operator_file,
};
use super::redistribute::{even_split, merge_operator_states};
use super::states::{BroadcastState, ErasedOperatorState, OperatorListState};

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
        require_mode(name, "registered", r.mode, mode)?;
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
        require_mode(name, "restored", enc.mode, mode)?;
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
        let state = OperatorListState {
            name: name.to_string(),
            mode,
            serializer,
            items: RefCell::new(items),
        };
        Ok(self.register(name, mode, state))
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
        let state = BroadcastState {
            name: name.to_string(),
            key_serializer: desc.key_serializer().clone(),
            value_serializer,
            map: RefCell::new(map),
        };
        Ok(self.register(name, mode, state))
    }

    /// Registers `state` as `name`, in place of what was restored for it (decoded into
    /// `state` by now), and hands it back.
    fn register<S: ErasedOperatorState + 'static>(
        &self,
        name: &str,
        mode: OperatorStateMode,
        state: S,
    ) -> Rc<S> {
        let state = Rc::new(state);
        self.restored.borrow_mut().remove(name);
        self.registered.borrow_mut().insert(
            name.to_string(),
            Registered {
                mode,
                state: state.clone(),
            },
        );
        state
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

/// Refuses state `name` asked for in mode `requested` when it was `how` (registered or
/// restored) in mode `found`.
fn require_mode(
    name: &str,
    how: &str,
    found: OperatorStateMode,
    requested: OperatorStateMode,
) -> StateResult<()> {
    if found == requested {
        return Ok(());
    }
    Err(StateError::TypeMismatch {
        name: name.to_string(),
        detail: format!(
            "{how} as {}, requested as {}",
            found.describe(),
            requested.describe()
        ),
    })
}

//! The two operator state kinds a user holds: list state (even-split or union) and
//! broadcast map state, each encoding itself for a snapshot.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{StateError, StateResult};
use crate::serializer::TypeSerializer;
use crate::state::{ListState, MapState, StateKey, StateValue};

use super::file::{EncodedState, Item, OperatorStateMode};

/// A registered state seen without its types: what a snapshot and a typed look-up need.
pub(super) trait ErasedOperatorState {
    /// The state's items, encoded.
    fn encode(&self) -> StateResult<EncodedState>;
    /// The state as `Any`, to get its typed handle back.
    fn as_any(self: Rc<Self>) -> Rc<dyn Any>;
}

/// An operator list state (even-split or union).
pub struct OperatorListState<T> {
    pub(super) name: String,
    pub(super) mode: OperatorStateMode,
    pub(super) serializer: Arc<dyn TypeSerializer<T>>,
    pub(super) items: RefCell<Vec<T>>,
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
    pub(super) name: String,
    pub(super) key_serializer: Arc<dyn TypeSerializer<K>>,
    pub(super) value_serializer: Arc<dyn TypeSerializer<V>>,
    pub(super) map: RefCell<HashMap<K, V>>,
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

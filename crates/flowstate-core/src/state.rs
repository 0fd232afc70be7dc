//! The user-facing state interfaces and the engine-only operations on them.
//!
//! Handles take `&self`: a keyed state handle reads the backend's current key (set by
//! the runtime before each record) and its own current namespace, so several handles
//! can be used side by side while processing one record, as in Flink.
//!
//! The `Internal*` traits add what only the engine may do: switch namespaces, read and
//! write serialized values (queryable state, state processor), and merge namespaces
//! (merging session windows). They extend the user traits, so an
//! `Rc<dyn InternalValueState<N, T>>` can be handed to user code as
//! `Rc<dyn ValueState<T>>`.

use std::fmt;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::error::StateResult;

/// Bounds every keyed-state key and map user key satisfies.
pub trait StateKey: Clone + Eq + Hash + Send + Sync + 'static {}
impl<T: Clone + Eq + Hash + Send + Sync + 'static> StateKey for T {}

/// Bounds every stored value satisfies.
pub trait StateValue: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> StateValue for T {}

/// Bounds of namespaces (windows, or [`VoidNamespace`]); they are stored with serde.
/// A fresh state handle starts in `N::default()`.
pub trait Namespace: StateKey + Default + Serialize + serde::de::DeserializeOwned {}
impl<T: StateKey + Default + Serialize + serde::de::DeserializeOwned> Namespace for T {}

/// The namespace of state that is not scoped to a window. Serializes to zero bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct VoidNamespace;

/// The kinds of keyed state. Codes are stored in snapshot headers (`docs/formats.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// [`ValueState`].
    Value,
    /// [`ListState`].
    List,
    /// [`MapState`].
    Map,
    /// [`ReducingState`].
    Reducing,
    /// [`AggregatingState`].
    Aggregating,
}

impl StateKind {
    /// The on-disk code.
    pub fn code(self) -> u8 {
        match self {
            StateKind::Value => 1,
            StateKind::List => 2,
            StateKind::Map => 3,
            StateKind::Reducing => 4,
            StateKind::Aggregating => 5,
        }
    }

    /// Inverse of [`StateKind::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => StateKind::Value,
            2 => StateKind::List,
            3 => StateKind::Map,
            4 => StateKind::Reducing,
            5 => StateKind::Aggregating,
            _ => return None,
        })
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateKind::Value => "value",
            StateKind::List => "list",
            StateKind::Map => "map",
            StateKind::Reducing => "reducing",
            StateKind::Aggregating => "aggregating",
        })
    }
}

/// A single value per key and namespace.
pub trait ValueState<T> {
    /// The value, or the descriptor's default, or `None`.
    fn value(&self) -> StateResult<Option<T>>;
    /// Replaces the value.
    fn update(&self, value: T) -> StateResult<()>;
    /// Removes the value of the current key and namespace only.
    fn clear(&self) -> StateResult<()>;
}

/// A list of elements per key and namespace. Empty and absent read the same.
pub trait ListState<T> {
    /// The elements in insertion order (empty when none).
    fn get(&self) -> StateResult<Vec<T>>;
    /// Lends the elements, in insertion order (empty when none), to `f` without
    /// copying them where the backend holds them as values (the heap backend, as
    /// Flink's heap `ListState.get()` returns its stored list); the others decode them
    /// as [`ListState::get`] does and lend those. `f` must not use this state.
    fn view(&self, f: &mut dyn FnMut(&[T])) -> StateResult<()> {
        f(&self.get()?);
        Ok(())
    }
    /// Appends one element.
    fn add(&self, value: T) -> StateResult<()>;
    /// Appends all elements.
    fn add_all(&self, values: Vec<T>) -> StateResult<()>;
    /// Replaces the list; an empty vector clears it.
    fn update(&self, values: Vec<T>) -> StateResult<()>;
    /// Removes the list of the current key and namespace only.
    fn clear(&self) -> StateResult<()>;
}

/// A map per key and namespace.
pub trait MapState<K, V> {
    /// The value under `key`.
    fn get(&self, key: &K) -> StateResult<Option<V>>;
    /// Inserts or replaces.
    fn put(&self, key: K, value: V) -> StateResult<()>;
    /// Inserts or replaces every pair.
    fn put_all(&self, entries: Vec<(K, V)>) -> StateResult<()>;
    /// Removes `key` if present.
    fn remove(&self, key: &K) -> StateResult<()>;
    /// Whether `key` is present.
    fn contains(&self, key: &K) -> StateResult<bool>;
    /// All pairs (order unspecified).
    fn entries(&self) -> StateResult<Vec<(K, V)>>;
    /// All user keys (order unspecified).
    fn keys(&self) -> StateResult<Vec<K>>;
    /// All values (order unspecified).
    fn values(&self) -> StateResult<Vec<V>>;
    /// Whether the map of the current key and namespace is empty.
    fn is_empty(&self) -> StateResult<bool>;
    /// Removes the whole map of the current key and namespace.
    fn clear(&self) -> StateResult<()>;
}

/// A value folded with a reduce function on every `add`.
pub trait ReducingState<T> {
    /// The folded value.
    fn get(&self) -> StateResult<Option<T>>;
    /// Folds `value` into the stored one (or stores it when none).
    fn add(&self, value: T) -> StateResult<()>;
    /// Removes the value of the current key and namespace only.
    fn clear(&self) -> StateResult<()>;
}

/// An accumulator fed by `add`, read through the aggregate function's result.
pub trait AggregatingState<IN, OUT> {
    /// The result of the accumulator, `None` when nothing was added.
    fn get(&self) -> StateResult<Option<OUT>>;
    /// Adds one input to the accumulator (creating it when none).
    fn add(&self, value: IN) -> StateResult<()>;
    /// Removes the accumulator of the current key and namespace only.
    fn clear(&self) -> StateResult<()>;
}

/// Engine-only operations every keyed state has.
pub trait InternalKvState<N> {
    /// The state's name.
    fn name(&self) -> &str;
    /// Scopes later operations on this handle to `namespace`.
    fn set_current_namespace(&self, namespace: N);
    /// The stored value of the current key and namespace in the canonical payload
    /// encoding of `docs/formats.md`, or `None`.
    fn get_serialized(&self) -> StateResult<Option<Vec<u8>>>;
    /// Replaces the value of the current key and namespace from its canonical payload.
    fn set_serialized(&self, payload: &[u8]) -> StateResult<()>;
}

/// Engine-only merging of namespaces (session windows).
pub trait InternalMergingState<N>: InternalKvState<N> {
    /// Merges the state of every `sources` namespace into `target` (for the current key)
    /// and clears the sources.
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()>;
}

/// A value state with its engine-only operations.
pub trait InternalValueState<N, T>: ValueState<T> + InternalKvState<N> {}
/// A list state with its engine-only operations.
pub trait InternalListState<N, T>: ListState<T> + InternalMergingState<N> {}
/// A map state with its engine-only operations.
pub trait InternalMapState<N, K, V>: MapState<K, V> + InternalKvState<N> {}
/// A reducing state with its engine-only operations.
pub trait InternalReducingState<N, T>: ReducingState<T> + InternalMergingState<N> {}
/// An aggregating state with its engine-only operations.
pub trait InternalAggregatingState<N, IN, OUT>:
    AggregatingState<IN, OUT> + InternalMergingState<N>
{
}

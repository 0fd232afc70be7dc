//! What a [`KeyedBroadcastProcessFunction`] implements and sees: the function, the
//! broadcast state's read-only view for the keyed side, and the two contexts (keyed
//! records and timers; broadcast records).

use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use flowstate_core::descriptor::MapStateDescriptor;
use flowstate_core::operator::{BroadcastState, OperatorStateStore};
use flowstate_core::state::{MapState, StateKey, StateValue};

use crate::RuntimeError;
use crate::keyed::{Emitter, OutputTag};
use crate::process::{OpenContext, ProcessContext};
use crate::stream::Data;

/// Flink's `KeyedBroadcastProcessFunction`: keyed records with keyed state and a
/// read-only view of the broadcast state; broadcast records with write access to it.
pub trait KeyedBroadcastProcessFunction<K, IN, B, OUT>: 'static {
    /// Declares keyed state (once per worker, before any record).
    fn open(&mut self, ctx: &OpenContext<'_, K>) -> Result<(), RuntimeError> {
        let _ = ctx;
        Ok(())
    }
    /// A keyed record, with the current key set.
    fn process_element(
        &mut self,
        value: IN,
        ctx: &mut ReadOnlyContext<'_, K, OUT>,
    ) -> Result<(), RuntimeError>;
    /// A broadcast record; called on every worker with the same records in the same
    /// order, so each must change the broadcast state the same way.
    fn process_broadcast_element(
        &mut self,
        value: B,
        ctx: &mut BroadcastContext<'_, OUT>,
    ) -> Result<(), RuntimeError>;
    /// A timer of the current key fired.
    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut ReadOnlyContext<'_, K, OUT>,
    ) -> Result<(), RuntimeError> {
        let _ = (timestamp, ctx);
        Ok(())
    }
}

/// Broadcast state as the keyed side sees it: read-only.
pub struct ReadOnlyBroadcastState<K, V>(Rc<BroadcastState<K, V>>);

impl<K: StateKey, V: StateValue> ReadOnlyBroadcastState<K, V> {
    /// The value under `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>, RuntimeError> {
        Ok(self.0.get(key)?)
    }
    /// Whether `key` is present.
    pub fn contains(&self, key: &K) -> Result<bool, RuntimeError> {
        Ok(self.0.contains(key)?)
    }
    /// All entries (order unspecified).
    pub fn entries(&self) -> Result<Vec<(K, V)>, RuntimeError> {
        Ok(self.0.entries()?)
    }
    /// Whether the state is empty.
    pub fn is_empty(&self) -> Result<bool, RuntimeError> {
        Ok(self.0.is_empty()?)
    }
}

/// The context of [`KeyedBroadcastProcessFunction::process_element`] and `on_timer`:
/// everything of [`ProcessContext`] (key, timestamp, timers, outputs) plus read-only
/// broadcast state.
pub struct ReadOnlyContext<'a, K, OUT> {
    pub(super) inner: ProcessContext<'a, K, OUT>,
    pub(super) store: &'a OperatorStateStore,
}

impl<K, OUT> ReadOnlyContext<'_, K, OUT> {
    /// The broadcast state declared by `desc`, read-only.
    pub fn broadcast_state<BK: StateKey, BV: StateValue>(
        &self,
        desc: &MapStateDescriptor<BK, BV>,
    ) -> Result<ReadOnlyBroadcastState<BK, BV>, RuntimeError> {
        Ok(ReadOnlyBroadcastState(self.store.broadcast_state(desc)?))
    }
}

impl<'a, K, OUT> Deref for ReadOnlyContext<'a, K, OUT> {
    type Target = ProcessContext<'a, K, OUT>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<K, OUT> DerefMut for ReadOnlyContext<'_, K, OUT> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

/// The context of [`KeyedBroadcastProcessFunction::process_broadcast_element`].
pub struct BroadcastContext<'a, OUT> {
    pub(super) timestamp: i64,
    pub(super) emit: Emitter<'a, OUT>,
    pub(super) store: &'a OperatorStateStore,
}

impl<OUT> BroadcastContext<'_, OUT> {
    /// The broadcast state declared by `desc`, writable.
    pub fn broadcast_state<BK: StateKey, BV: StateValue>(
        &self,
        desc: &MapStateDescriptor<BK, BV>,
    ) -> Result<Rc<BroadcastState<BK, BV>>, RuntimeError> {
        Ok(self.store.broadcast_state(desc)?)
    }
    /// The broadcast record's event time.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
    /// Emits a record (from every worker: each sees the broadcast record).
    pub fn collect(&mut self, value: OUT) {
        self.emit.main(self.timestamp, value);
    }
    /// Emits to a side output.
    pub fn output<T: Data>(&mut self, tag: &OutputTag<T>, value: T) -> Result<(), RuntimeError> {
        self.emit.side(tag, self.timestamp, &value)
    }
}

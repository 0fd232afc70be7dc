//! What a window keeps and emits: the window contents state of each window function
//! (reduce, aggregate, process), behind one trait the window operator drives.

use std::rc::Rc;

use flowstate_core::state::{InternalAggregatingState, InternalListState, InternalReducingState};

use super::TimeWindow;
use crate::RuntimeError;

/// The window contents state and what firing emits.
pub(super) trait Contents<K, T, OUT>: 'static {
    /// Makes `window`'s contents current: the window itself, or for a session the
    /// state window its contents live under (see `sessions`).
    fn set_window(&self, window: TimeWindow);
    /// Adds a record to the current contents.
    fn add(&self, value: T) -> Result<(), RuntimeError>;
    /// Emits the current contents' result for `window` into `out`.
    fn fire(
        &mut self,
        key: &K,
        window: &TimeWindow,
        out: &mut Vec<OUT>,
    ) -> Result<(), RuntimeError>;
    /// Drops the current contents.
    fn clear(&self) -> Result<(), RuntimeError>;
    /// Merges the contents of `sources` into `target` (sessions that join).
    fn merge(&self, target: &TimeWindow, sources: &[TimeWindow]) -> Result<(), RuntimeError>;
}

/// A reduce window's contents: the reduced value.
pub(super) struct ReduceContents<T>(pub(super) Rc<dyn InternalReducingState<TimeWindow, T>>);

impl<K: Clone, T: 'static> Contents<K, T, (K, TimeWindow, T)> for ReduceContents<T> {
    fn set_window(&self, window: TimeWindow) {
        self.0.set_current_namespace(window);
    }
    fn add(&self, value: T) -> Result<(), RuntimeError> {
        Ok(self.0.add(value)?)
    }
    fn fire(
        &mut self,
        key: &K,
        window: &TimeWindow,
        out: &mut Vec<(K, TimeWindow, T)>,
    ) -> Result<(), RuntimeError> {
        if let Some(v) = self.0.get()? {
            out.push((key.clone(), *window, v));
        }
        Ok(())
    }
    fn clear(&self) -> Result<(), RuntimeError> {
        Ok(self.0.clear()?)
    }
    fn merge(&self, target: &TimeWindow, sources: &[TimeWindow]) -> Result<(), RuntimeError> {
        Ok(self.0.merge_namespaces(target, sources)?)
    }
}

/// An aggregate window's contents: the accumulator.
pub(super) struct AggregateContents<T, R>(
    pub(super) Rc<dyn InternalAggregatingState<TimeWindow, T, R>>,
);

impl<K: Clone, T: 'static, R: 'static> Contents<K, T, (K, TimeWindow, R)>
    for AggregateContents<T, R>
{
    fn set_window(&self, window: TimeWindow) {
        self.0.set_current_namespace(window);
    }
    fn add(&self, value: T) -> Result<(), RuntimeError> {
        Ok(self.0.add(value)?)
    }
    fn fire(
        &mut self,
        key: &K,
        window: &TimeWindow,
        out: &mut Vec<(K, TimeWindow, R)>,
    ) -> Result<(), RuntimeError> {
        if let Some(v) = self.0.get()? {
            out.push((key.clone(), *window, v));
        }
        Ok(())
    }
    fn clear(&self) -> Result<(), RuntimeError> {
        Ok(self.0.clear()?)
    }
    fn merge(&self, target: &TimeWindow, sources: &[TimeWindow]) -> Result<(), RuntimeError> {
        Ok(self.0.merge_namespaces(target, sources)?)
    }
}

/// A process window's contents: its records, for the function.
pub(super) struct ProcessContents<T, F> {
    pub(super) state: Rc<dyn InternalListState<TimeWindow, T>>,
    pub(super) function: F,
}

impl<K, T: 'static, OUT, F> Contents<K, T, OUT> for ProcessContents<T, F>
where
    F: FnMut(&K, &TimeWindow, Vec<T>, &mut Vec<OUT>) -> Result<(), RuntimeError> + 'static,
{
    fn set_window(&self, window: TimeWindow) {
        self.state.set_current_namespace(window);
    }
    fn add(&self, value: T) -> Result<(), RuntimeError> {
        Ok(self.state.add(value)?)
    }
    fn fire(
        &mut self,
        key: &K,
        window: &TimeWindow,
        out: &mut Vec<OUT>,
    ) -> Result<(), RuntimeError> {
        let elements = self.state.get()?;
        if elements.is_empty() {
            return Ok(());
        }
        (self.function)(key, window, elements, out)
    }
    fn clear(&self) -> Result<(), RuntimeError> {
        Ok(self.state.clear()?)
    }
    fn merge(&self, target: &TimeWindow, sources: &[TimeWindow]) -> Result<(), RuntimeError> {
        Ok(self.state.merge_namespaces(target, sources)?)
    }
}

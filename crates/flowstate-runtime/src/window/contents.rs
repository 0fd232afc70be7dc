//! What a window keeps and emits: the window contents state of each window function
//! (reduce, aggregate, process), behind one trait the window operator drives; and
//! for sliced windows (`WindowedStream::sliced`), the contents of each slice, merged
//! into a window's result when it fires.

use std::rc::Rc;
use std::sync::Arc;

use flowstate_core::descriptor::{AggregateFunction, ReduceFn};
use flowstate_core::state::{
    InternalAggregatingState, InternalListState, InternalReducingState, InternalValueState,
    ValueState,
};

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

impl<K: 'static, T: 'static, OUT: 'static> Contents<K, T, OUT> for Box<dyn Contents<K, T, OUT>> {
    fn set_window(&self, window: TimeWindow) {
        (**self).set_window(window)
    }
    fn add(&self, value: T) -> Result<(), RuntimeError> {
        (**self).add(value)
    }
    fn fire(
        &mut self,
        key: &K,
        window: &TimeWindow,
        out: &mut Vec<OUT>,
    ) -> Result<(), RuntimeError> {
        (**self).fire(key, window, out)
    }
    fn clear(&self) -> Result<(), RuntimeError> {
        (**self).clear()
    }
    fn merge(&self, target: &TimeWindow, sources: &[TimeWindow]) -> Result<(), RuntimeError> {
        (**self).merge(target, sources)
    }
}

/// The slices of `window`, `slide` ms each, in time order.
fn slices_of(window: &TimeWindow, slide: i64) -> impl Iterator<Item = TimeWindow> {
    let slide = slide.max(1);
    let end = window.end;
    std::iter::successors(Some(window.start), move |s| {
        s.checked_add(slide).filter(|next| *next < end)
    })
    .map(move |s| TimeWindow::new(s, s.saturating_add(slide)))
}

fn no_merge() -> RuntimeError {
    RuntimeError::Config("sliced windows do not merge (session windows cannot be sliced)".into())
}

/// A sliced aggregate window: one accumulator per slice; a window's result merges the
/// accumulators of its slices with the function's `merge`.
pub(super) struct SlicedAggregate<T, ACC, R> {
    pub(super) state: Rc<dyn InternalValueState<TimeWindow, ACC>>,
    pub(super) function: Arc<dyn AggregateFunction<T, ACC, R>>,
    pub(super) slide: i64,
}

impl<K: Clone, T: 'static, ACC: Clone + 'static, R: 'static> Contents<K, T, (K, TimeWindow, R)>
    for SlicedAggregate<T, ACC, R>
{
    fn set_window(&self, slice: TimeWindow) {
        self.state.set_current_namespace(slice);
    }
    fn add(&self, value: T) -> Result<(), RuntimeError> {
        let mut acc =
            ValueState::value(&*self.state)?.unwrap_or_else(|| self.function.create_accumulator());
        self.function.add(value, &mut acc);
        Ok(self.state.update(acc)?)
    }
    fn fire(
        &mut self,
        key: &K,
        window: &TimeWindow,
        out: &mut Vec<(K, TimeWindow, R)>,
    ) -> Result<(), RuntimeError> {
        let mut merged: Option<ACC> = None;
        for slice in slices_of(window, self.slide) {
            self.state.set_current_namespace(slice);
            if let Some(acc) = ValueState::value(&*self.state)? {
                match &mut merged {
                    Some(m) => self.function.merge(m, acc),
                    None => merged = Some(acc),
                }
            }
        }
        if let Some(acc) = merged {
            out.push((key.clone(), *window, self.function.get_result(&acc)));
        }
        Ok(())
    }
    fn clear(&self) -> Result<(), RuntimeError> {
        Ok(ValueState::clear(&*self.state)?)
    }
    fn merge(&self, _: &TimeWindow, _: &[TimeWindow]) -> Result<(), RuntimeError> {
        Err(no_merge())
    }
}

/// A sliced reduce window: one reduced value per slice; a window's result reduces
/// its slices' values in time order.
pub(super) struct SlicedReduce<T> {
    pub(super) state: Rc<dyn InternalValueState<TimeWindow, T>>,
    pub(super) reduce: ReduceFn<T>,
    pub(super) slide: i64,
}

impl<K: Clone, T: 'static> Contents<K, T, (K, TimeWindow, T)> for SlicedReduce<T> {
    fn set_window(&self, slice: TimeWindow) {
        self.state.set_current_namespace(slice);
    }
    fn add(&self, value: T) -> Result<(), RuntimeError> {
        let next = match ValueState::value(&*self.state)? {
            Some(stored) => (self.reduce)(&stored, &value),
            None => value,
        };
        Ok(self.state.update(next)?)
    }
    fn fire(
        &mut self,
        key: &K,
        window: &TimeWindow,
        out: &mut Vec<(K, TimeWindow, T)>,
    ) -> Result<(), RuntimeError> {
        let mut merged: Option<T> = None;
        for slice in slices_of(window, self.slide) {
            self.state.set_current_namespace(slice);
            if let Some(v) = ValueState::value(&*self.state)? {
                merged = Some(match merged {
                    Some(m) => (self.reduce)(&m, &v),
                    None => v,
                });
            }
        }
        if let Some(v) = merged {
            out.push((key.clone(), *window, v));
        }
        Ok(())
    }
    fn clear(&self) -> Result<(), RuntimeError> {
        Ok(ValueState::clear(&*self.state)?)
    }
    fn merge(&self, _: &TimeWindow, _: &[TimeWindow]) -> Result<(), RuntimeError> {
        Err(no_merge())
    }
}

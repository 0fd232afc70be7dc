//! The second stage q5 and q7 share: every key's result for a window, keyed by the
//! window's end, folded into one value per window, which becomes rows when the
//! watermark reaches the end (window results carry the window's last millisecond,
//! so all of them are in by then).

use std::rc::Rc;

use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::{StateValue, ValueState};
use flowstate_runtime::{
    KeyedProcessFunction, OpenContext, ProcessContext, RuntimeError, TimeWindow, TimerContext,
    opened,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Row, WINDOW_MS};

/// Folds `(key, window, value)` results per window end into a state named `name`;
/// at the end, `rows(window start, folded)` are emitted and the state cleared.
pub(super) struct PerWindow<K, V, S> {
    name: &'static str,
    state: Option<Rc<dyn ValueState<S>>>,
    fold: fn(Option<S>, K, V) -> S,
    rows: fn(i64, S) -> Vec<Row>,
}

impl<K, V, S> PerWindow<K, V, S> {
    pub(super) fn new(
        name: &'static str,
        fold: fn(Option<S>, K, V) -> S,
        rows: fn(i64, S) -> Vec<Row>,
    ) -> Self {
        PerWindow {
            name,
            state: None,
            fold,
            rows,
        }
    }
}

impl<K, V, S> KeyedProcessFunction<i64, (K, TimeWindow, V), Row> for PerWindow<K, V, S>
where
    K: 'static,
    V: 'static,
    S: StateValue + Serialize + DeserializeOwned,
{
    fn open(&mut self, ctx: &OpenContext<'_, i64>) -> Result<(), RuntimeError> {
        self.state = Some(ctx.value_state(&ValueStateDescriptor::new(self.name))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (key, window, value): (K, TimeWindow, V),
        ctx: &mut ProcessContext<'_, i64, Row>,
    ) -> Result<(), RuntimeError> {
        let state = opened(&self.state)?;
        let so_far = state.value()?;
        if so_far.is_none() {
            ctx.timer_service().register_event_time_timer(window.end)?;
        }
        Ok(state.update((self.fold)(so_far, key, value))?)
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut TimerContext<'_, i64, Row>,
    ) -> Result<(), RuntimeError> {
        let state = opened(&self.state)?;
        if let Some(folded) = state.value()? {
            for row in (self.rows)(*ctx.current_key() - WINDOW_MS, folded) {
                ctx.collect_at(timestamp, row);
            }
        }
        Ok(state.clear()?)
    }
}

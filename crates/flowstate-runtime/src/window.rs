//! Event-time windows on keyed streams: tumbling, sliding and session windows, with
//! Flink's event-time trigger, allowed lateness, late-data side outputs and reduce,
//! aggregate or process window functions.
//!
//! Window contents are keyed state under the window as namespace (`TimeWindow`), so
//! they live in the configured backend and snapshot and rescale with the key. The
//! trigger registers an event-time timer at the window's last millisecond
//! (`end - 1`); when the watermark passes it the window fires; a cleanup timer at
//! `end - 1 + allowed lateness` clears it. Until then a late record that still falls
//! into the window fires it again at once, with the updated contents (Flink's
//! behaviour). Records whose every window is already cleaned up are late: dropped, or
//! sent to the side output set with [`WindowedStream::side_output_late_data`].
//!
//! Session windows merge: each key keeps its open sessions in a value state
//! (`_window_sessions`); a record's window `[ts, ts + gap)` absorbs every session it
//! intersects (touching counts, as in Flink), and the contents of the absorbed windows
//! are merged into the new one with the backend's namespace merge. Flink keeps a
//! separate "state window" to avoid moving data; merging in the backend is simpler and
//! costs one read-and-write per merge, which sessions (merged rarely) can afford.

use std::rc::Rc;

use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use flowstate_core::state::{
    InternalAggregatingState, InternalListState, InternalReducingState, InternalValueState,
    StateKey, VoidNamespace,
};
use serde::{Deserialize, Serialize};

use crate::RuntimeError;
use crate::backend::AnyBackend;
use crate::keyed::{KeyedCtx, KeyedLogic, OutputTag, keyed_operator};
use crate::query::QueryRegistry;
use crate::stream::{Data, DataStream, KeyedStream};
use crate::timers::TimeDomain;

/// A window of event time, `[start, end)` in milliseconds.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct TimeWindow {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after the window.
    pub end: i64,
}

impl TimeWindow {
    /// `[start, end)`.
    pub fn new(start: i64, end: i64) -> Self {
        TimeWindow { start, end }
    }
    /// The last millisecond in the window; results carry it as their event time.
    pub fn max_timestamp(&self) -> i64 {
        self.end.saturating_sub(1)
    }
    /// Whether the windows overlap or touch (Flink's `TimeWindow.intersects`).
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }
    /// The smallest window containing both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// Which windows a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowAssigner {
    /// Fixed-size, non-overlapping windows aligned to `offset` (ms).
    Tumbling {
        /// Window length, ms.
        size: i64,
        /// Alignment, ms (0: windows start at multiples of `size`).
        offset: i64,
    },
    /// Fixed-size windows starting every `slide` ms; a record is in `size / slide`.
    Sliding {
        /// Window length, ms.
        size: i64,
        /// Distance between window starts, ms.
        slide: i64,
        /// Alignment, ms.
        offset: i64,
    },
    /// Activity sessions: records less than `gap` ms apart share a window.
    Session {
        /// Inactivity that closes a session, ms.
        gap: i64,
    },
}

impl WindowAssigner {
    /// Tumbling windows of `size` ms.
    pub fn tumbling(size: i64) -> Self {
        WindowAssigner::Tumbling { size, offset: 0 }
    }
    /// Sliding windows of `size` ms every `slide` ms.
    pub fn sliding(size: i64, slide: i64) -> Self {
        WindowAssigner::Sliding {
            size,
            slide,
            offset: 0,
        }
    }
    /// Session windows closing after `gap` ms without records.
    pub fn session(gap: i64) -> Self {
        WindowAssigner::Session { gap }
    }

    fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |what: String| Err(RuntimeError::Config(what));
        match *self {
            WindowAssigner::Tumbling { size, offset } if size <= 0 || offset.abs() >= size => {
                bad(format!(
                    "tumbling window needs size > 0 and |offset| < size, got size {size} offset {offset}"
                ))
            }
            WindowAssigner::Sliding {
                size,
                slide,
                offset,
            } if size <= 0 || slide <= 0 || offset.abs() >= slide => bad(format!(
                "sliding window needs size > 0, slide > 0 and |offset| < slide, got size {size} slide {slide} offset {offset}"
            )),
            WindowAssigner::Session { gap } if gap <= 0 => {
                bad(format!("session window needs gap > 0, got {gap}"))
            }
            _ => Ok(()),
        }
    }

    fn is_merging(&self) -> bool {
        matches!(self, WindowAssigner::Session { .. })
    }

    /// The windows of a record at `ts`.
    pub fn assign(&self, ts: i64) -> Vec<TimeWindow> {
        // Flink's TimeWindow.getWindowStartWithOffset, correct for negative times.
        let start_of = |ts: i64, offset: i64, len: i64| ts - (ts - offset).rem_euclid(len);
        match *self {
            WindowAssigner::Tumbling { size, offset } => {
                let start = start_of(ts, offset, size);
                vec![TimeWindow::new(start, start.saturating_add(size))]
            }
            WindowAssigner::Sliding {
                size,
                slide,
                offset,
            } => {
                let mut out = Vec::with_capacity((size / slide).max(1) as usize);
                let mut start = start_of(ts, offset, slide);
                while start > ts.saturating_sub(size) {
                    out.push(TimeWindow::new(start, start.saturating_add(size)));
                    start -= slide;
                }
                out
            }
            WindowAssigner::Session { gap } => vec![TimeWindow::new(ts, ts.saturating_add(gap))],
        }
    }
}

/// A keyed stream cut into windows; finish it with a window function.
pub struct WindowedStream<'scope, K, T> {
    keyed: KeyedStream<'scope, K, T>,
    assigner: WindowAssigner,
    allowed_lateness: i64,
    late: Option<OutputTag<T>>,
    queryable: Option<String>,
}

impl<'scope, K: Data + StateKey, T: Data> KeyedStream<'scope, K, T> {
    /// Groups records per key into the windows of `assigner`.
    pub fn window(self, assigner: WindowAssigner) -> WindowedStream<'scope, K, T> {
        WindowedStream {
            keyed: self,
            assigner,
            allowed_lateness: 0,
            late: None,
            queryable: None,
        }
    }
}

impl<'scope, K: Data + StateKey, T: Data + Sync> WindowedStream<'scope, K, T> {
    /// Keeps windows `lateness` ms past their end: late records within it update the
    /// window and fire it again (default 0).
    pub fn allowed_lateness(mut self, lateness: i64) -> Self {
        self.allowed_lateness = lateness;
        self
    }

    /// Sends records too late for every window to the side output `tag` (read it with
    /// [`DataStream::side_output`] on the window's result) instead of dropping them.
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late = Some(tag.clone());
        self
    }

    /// Exposes each window's contents to queries under `name` (see
    /// [`crate::query`]; a look-up names the key and the window): the reduced value
    /// of [`WindowedStream::reduce`], the records of [`WindowedStream::process`].
    /// [`WindowedStream::aggregate`] refuses it (its accumulator is not its result).
    pub fn queryable(mut self, name: impl Into<String>) -> Self {
        self.queryable = Some(name.into());
        self
    }

    /// Folds each window's records with `reduce`; emits `(key, window, result)` at the
    /// window's last millisecond.
    pub fn reduce(
        self,
        reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static,
    ) -> DataStream<'scope, (K, TimeWindow, T)> {
        let queryable = self.queryable.clone();
        self.build("WindowReduce", move |backend, queries| {
            let desc = ReducingStateDescriptor::new("_window_contents", reduce);
            let state = backend.reducing_state::<TimeWindow, T>(&desc)?;
            if let Some(name) = &queryable {
                queries.window_reduce(name, &desc, &state)?;
            }
            Ok(ReduceContents(state))
        })
    }

    /// Aggregates each window's records incrementally with `function`; emits `(key,
    /// window, result)` at the window's last millisecond.
    pub fn aggregate<ACC: Data + Sync, R: Data>(
        self,
        function: impl AggregateFunction<T, ACC, R>,
    ) -> DataStream<'scope, (K, TimeWindow, R)> {
        let queryable = self.queryable.clone();
        self.build("WindowAggregate", move |backend, _| {
            if let Some(name) = queryable {
                return Err(RuntimeError::Config(format!(
                    "an aggregating window cannot be queryable (as `{name}`): its state is the \
                     accumulator, not the result; use reduce or process windows"
                )));
            }
            let state = backend.aggregating_state::<TimeWindow, T, ACC, R>(
                &AggregatingStateDescriptor::new("_window_contents", function),
            )?;
            Ok(AggregateContents(state))
        })
    }

    /// Hands every window's records (in arrival order) to `function`, which emits any
    /// number of results (Flink's `ProcessWindowFunction`); they carry the window's last
    /// millisecond as event time.
    pub fn process<OUT: Data, F>(self, function: F) -> DataStream<'scope, OUT>
    where
        F: FnMut(&K, &TimeWindow, Vec<T>, &mut Vec<OUT>) -> Result<(), RuntimeError> + 'static,
    {
        let queryable = self.queryable.clone();
        self.build("WindowProcess", move |backend, queries| {
            let desc = ListStateDescriptor::new("_window_contents");
            let state = backend.list_state::<TimeWindow, T>(&desc)?;
            if let Some(name) = &queryable {
                queries.window_contents(name, &desc, &state)?;
            }
            Ok(ProcessContents { state, function })
        })
    }

    fn build<OUT: Data, C: Contents<K, T, OUT>>(
        self,
        name: &str,
        contents: impl FnOnce(&AnyBackend<K>, &QueryRegistry<K>) -> Result<C, RuntimeError> + 'static,
    ) -> DataStream<'scope, OUT> {
        let (assigner, lateness, late) = (self.assigner, self.allowed_lateness, self.late);
        keyed_operator::<K, T, TimeWindow, OUT, _>(self.keyed, name, move |backend, queries| {
            assigner.validate()?;
            if lateness < 0 {
                return Err(RuntimeError::Config(format!(
                    "allowed lateness must be >= 0, got {lateness}"
                )));
            }
            let sessions = if assigner.is_merging() {
                Some(backend.value_state::<VoidNamespace, Vec<TimeWindow>>(
                    &ValueStateDescriptor::new("_window_sessions"),
                )?)
            } else {
                None
            };
            Ok(WindowLogic {
                assigner,
                lateness,
                late,
                sessions,
                contents: contents(backend, queries)?,
            })
        })
    }
}

/// The window contents state and what firing emits.
trait Contents<K, T, OUT>: 'static {
    fn set_window(&self, window: TimeWindow);
    fn add(&self, value: T) -> Result<(), RuntimeError>;
    /// Emits the current window's result into `out`.
    fn fire(
        &mut self,
        key: &K,
        window: &TimeWindow,
        out: &mut Vec<OUT>,
    ) -> Result<(), RuntimeError>;
    fn clear(&self) -> Result<(), RuntimeError>;
    fn merge(&self, target: &TimeWindow, sources: &[TimeWindow]) -> Result<(), RuntimeError>;
}

struct ReduceContents<T>(Rc<dyn InternalReducingState<TimeWindow, T>>);

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

struct AggregateContents<T, R>(Rc<dyn InternalAggregatingState<TimeWindow, T, R>>);

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

struct ProcessContents<T, F> {
    state: Rc<dyn InternalListState<TimeWindow, T>>,
    function: F,
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

/// The window operator's logic (Flink's `WindowOperator` with `EventTimeTrigger`).
struct WindowLogic<T, C> {
    assigner: WindowAssigner,
    lateness: i64,
    late: Option<OutputTag<T>>,
    sessions: Option<Rc<dyn InternalValueState<VoidNamespace, Vec<TimeWindow>>>>,
    contents: C,
}

impl<T, C> WindowLogic<T, C> {
    fn cleanup_time(&self, w: &TimeWindow) -> i64 {
        w.max_timestamp().saturating_add(self.lateness)
    }
}

impl<T: Data, C> WindowLogic<T, C> {
    /// Emits the window's result (the window namespace must be current).
    fn fire<K: StateKey, OUT>(
        &mut self,
        w: &TimeWindow,
        ctx: &mut KeyedCtx<'_, K, TimeWindow, OUT>,
    ) -> Result<(), RuntimeError>
    where
        C: Contents<K, T, OUT>,
    {
        let mut results = Vec::new();
        self.contents.fire(ctx.key, w, &mut results)?;
        for r in results {
            ctx.emit.main(w.max_timestamp(), r);
        }
        Ok(())
    }

    /// Adds `value` to `w` and runs the event-time trigger for it.
    fn add_and_trigger<K: StateKey, OUT>(
        &mut self,
        w: TimeWindow,
        value: T,
        ctx: &mut KeyedCtx<'_, K, TimeWindow, OUT>,
    ) -> Result<(), RuntimeError>
    where
        C: Contents<K, T, OUT>,
    {
        self.contents.set_window(w);
        self.contents.add(value)?;
        if w.max_timestamp() <= ctx.watermark {
            self.fire(&w, ctx)?;
        } else {
            ctx.timers
                .register(TimeDomain::EventTime, ctx.key, w, w.max_timestamp())?;
        }
        let cleanup = self.cleanup_time(&w);
        ctx.timers
            .register(TimeDomain::EventTime, ctx.key, w, cleanup)
    }
}

impl<K, T, OUT, C> KeyedLogic<K, TimeWindow, T, OUT> for WindowLogic<T, C>
where
    K: StateKey,
    T: Data,
    C: Contents<K, T, OUT>,
{
    fn element(
        &mut self,
        value: T,
        ctx: &mut KeyedCtx<'_, K, TimeWindow, OUT>,
    ) -> Result<(), RuntimeError> {
        let ts = ctx.timestamp;
        let wm = ctx.watermark;
        let mut skipped = true;
        if let Some(sessions_state) = self.sessions.clone() {
            for w in self.assigner.assign(ts) {
                let mut sessions = sessions_state.value()?.unwrap_or_default();
                // Absorb every open session the new window touches.
                let mut merged = w;
                let mut absorbed = Vec::new();
                while let Some(i) = sessions.iter().position(|s| s.intersects(&merged)) {
                    let s = sessions.swap_remove(i);
                    merged = merged.cover(&s);
                    absorbed.push(s);
                }
                if self.cleanup_time(&merged) <= wm {
                    continue;
                }
                skipped = false;
                let sources: Vec<TimeWindow> =
                    absorbed.iter().copied().filter(|s| *s != merged).collect();
                if !sources.is_empty() {
                    self.contents.merge(&merged, &sources)?;
                    for s in &sources {
                        ctx.timers
                            .delete(TimeDomain::EventTime, ctx.key, *s, s.max_timestamp())?;
                        let cleanup = self.cleanup_time(s);
                        ctx.timers
                            .delete(TimeDomain::EventTime, ctx.key, *s, cleanup)?;
                    }
                }
                sessions.push(merged);
                sessions_state.update(sessions)?;
                self.add_and_trigger(merged, value.clone(), ctx)?;
            }
        } else {
            for w in self.assigner.assign(ts) {
                if self.cleanup_time(&w) <= wm {
                    continue;
                }
                skipped = false;
                self.add_and_trigger(w, value.clone(), ctx)?;
            }
        }
        if skipped
            && ts.saturating_add(self.lateness) <= wm
            && let Some(tag) = &self.late
        {
            ctx.emit.side(tag, ts, &value)?;
        }
        Ok(())
    }

    fn timer(
        &mut self,
        ts: i64,
        w: TimeWindow,
        domain: TimeDomain,
        ctx: &mut KeyedCtx<'_, K, TimeWindow, OUT>,
    ) -> Result<(), RuntimeError> {
        if domain != TimeDomain::EventTime {
            return Ok(());
        }
        let sessions = match &self.sessions {
            Some(s) => {
                let open = s.value()?.unwrap_or_default();
                if !open.contains(&w) {
                    // Merged into another session since the timer was set.
                    return Ok(());
                }
                Some((s.clone(), open))
            }
            None => None,
        };
        self.contents.set_window(w);
        if ts == w.max_timestamp() {
            self.fire(&w, ctx)?;
        }
        if ts == self.cleanup_time(&w) {
            self.contents.clear()?;
            if let Some((state, mut open)) = sessions {
                open.retain(|s| *s != w);
                if open.is_empty() {
                    state.clear()?;
                } else {
                    state.update(open)?;
                }
            }
        }
        Ok(())
    }
}

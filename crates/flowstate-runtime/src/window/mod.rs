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
//! Session windows merge: a record's window `[ts, ts + gap)` absorbs every open
//! session of its key it intersects (touching counts, as in Flink). As in Flink, a
//! session's contents stay under a stable *state window* while the session grows
//! (`sessions`), so extending a session moves no contents.
//!
//! Modules: `contents` (what each window function keeps), `sessions` (the open
//! sessions of a key and their state windows), `logic` (the operator's per-record and
//! per-timer decisions).

mod contents;
mod logic;
mod sessions;

use std::sync::Arc;

use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, ReduceFn,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use flowstate_core::serializer::SerdeSerializer;
use flowstate_core::state::StateKey;
use serde::{Deserialize, Serialize};

use crate::RuntimeError;
use crate::backend::AnyBackend;
use crate::keyed::{OutputTag, keyed_operator};
use crate::query::QueryRegistry;
use crate::stream::{Data, DataStream, KeyedStream};
use contents::{
    AggregateContents, Contents, ProcessContents, ReduceContents, SlicedAggregate, SlicedReduce,
};
use logic::WindowLogic;

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
    sliced: bool,
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
            sliced: false,
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
    /// [`WindowedStream::aggregate`] refuses it (its accumulator is not its result),
    /// and so do session windows (a session's contents live under the window it
    /// started as, not under the session a look-up would name).
    pub fn queryable(mut self, name: impl Into<String>) -> Self {
        self.queryable = Some(name.into());
        self
    }

    /// Keeps a sliding window's contents per slice (Flink SQL's window slicing): a
    /// record updates the one slice of `slide` ms it falls in, instead of each of the
    /// `size / slide` windows it is in, and a window's result combines its slices'
    /// when it fires. For reduce and aggregate windows whose size is a multiple of the
    /// slide; it changes nothing for tumbling windows. Only for functions that do not
    /// depend on the order of records: a slice's records are reduced (or accumulated)
    /// first, then the slices in time order (with the aggregate's `merge`), not the
    /// window's records in arrival order. The state is then `_window_slices`: a job
    /// restored from per-window contents keeps per-window contents (and says so in
    /// the log), and one restored from slices refuses to run without `sliced`.
    pub fn sliced(mut self) -> Self {
        self.sliced = true;
        self
    }

    /// Folds each window's records with `reduce`; emits `(key, window, result)` at the
    /// window's last millisecond.
    pub fn reduce(
        self,
        reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static,
    ) -> DataStream<'scope, (K, TimeWindow, T)> {
        let queryable = self.queryable.clone();
        self.build("WindowReduce", move |backend, queries, slide| {
            let reduce: ReduceFn<T> = Arc::new(reduce);
            if let Some(slide) = slide {
                let state =
                    backend.value_state::<TimeWindow, T>(&ValueStateDescriptor::new(SLICES))?;
                let contents: Box<dyn Contents<K, T, (K, TimeWindow, T)>> =
                    Box::new(SlicedReduce {
                        state,
                        reduce,
                        slide,
                    });
                return Ok(contents);
            }
            let desc = ReducingStateDescriptor::with_serializer(
                CONTENTS,
                reduce,
                SerdeSerializer::<T>::arc(),
            );
            let state = backend.reducing_state::<TimeWindow, T>(&desc)?;
            if let Some(name) = &queryable {
                queries.window_reduce(name, &desc, &state)?;
            }
            Ok(Box::new(ReduceContents(state)))
        })
    }

    /// Aggregates each window's records incrementally with `function`; emits `(key,
    /// window, result)` at the window's last millisecond.
    pub fn aggregate<ACC: Data + Sync, R: Data>(
        self,
        function: impl AggregateFunction<T, ACC, R>,
    ) -> DataStream<'scope, (K, TimeWindow, R)> {
        let queryable = self.queryable.clone();
        self.build("WindowAggregate", move |backend, _, slide| {
            if let Some(name) = queryable {
                return Err(RuntimeError::Config(format!(
                    "an aggregating window cannot be queryable (as `{name}`): its state is the \
                     accumulator, not the result; use reduce or process windows"
                )));
            }
            let function: Arc<dyn AggregateFunction<T, ACC, R>> = Arc::new(function);
            if let Some(slide) = slide {
                let state =
                    backend.value_state::<TimeWindow, ACC>(&ValueStateDescriptor::new(SLICES))?;
                let contents: Box<dyn Contents<K, T, (K, TimeWindow, R)>> =
                    Box::new(SlicedAggregate {
                        state,
                        function,
                        slide,
                    });
                return Ok(contents);
            }
            let state = backend.aggregating_state::<TimeWindow, T, ACC, R>(
                &AggregatingStateDescriptor::with_serializer(
                    CONTENTS,
                    function,
                    SerdeSerializer::<ACC>::arc(),
                ),
            )?;
            Ok(Box::new(AggregateContents(state)))
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
        self.build("WindowProcess", move |backend, queries, slide| {
            if slide.is_some() {
                return Err(RuntimeError::Config(
                    "process windows cannot be sliced: the function sees the window's records \
                     in arrival order; slice reduce or aggregate windows"
                        .into(),
                ));
            }
            let desc = ListStateDescriptor::new(CONTENTS);
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
        contents: impl FnOnce(&AnyBackend<K>, &QueryRegistry<K>, Option<i64>) -> Result<C, RuntimeError>
        + 'static,
    ) -> DataStream<'scope, OUT> {
        let (assigner, lateness, late) = (self.assigner, self.allowed_lateness, self.late);
        let (queryable, sliced) = (self.queryable, self.sliced);
        keyed_operator::<K, T, TimeWindow, OUT, _>(self.keyed, name, move |backend, queries| {
            assigner.validate()?;
            if let Some(name) = queryable.as_deref().filter(|_| assigner.is_merging()) {
                return Err(RuntimeError::Config(format!(
                    "session windows cannot be queryable (as `{name}`): a session's contents \
                     live under the window it started as, not under the session"
                )));
            }
            if lateness < 0 {
                return Err(RuntimeError::Config(format!(
                    "allowed lateness must be >= 0, got {lateness}"
                )));
            }
            let sessions = if assigner.is_merging() {
                Some(sessions::open(backend)?)
            } else {
                None
            };
            let slide = slice_length(&backend.state_names(), assigner, sliced)?;
            if let Some(name) = queryable.as_deref().filter(|_| slide.is_some()) {
                return Err(RuntimeError::Config(format!(
                    "sliced windows cannot be queryable (as `{name}`): a window's result is \
                     combined from its slices when it fires"
                )));
            }
            Ok(WindowLogic {
                assigner,
                lateness,
                late,
                sessions,
                slide,
                contents: contents(backend, queries, slide)?,
            })
        })
    }
}

/// The window contents state (per window, or per session's state window).
const CONTENTS: &str = "_window_contents";
/// The window contents state of sliced windows (per slice).
const SLICES: &str = "_window_slices";

/// The slice length when this operator keeps its contents per slice; `states` are
/// the state names its backend holds (restored ones included). Slicing must be asked
/// for, and applies to sliding windows whose size is a multiple of the slide; state
/// restored per window stays per window, and state restored per slice cannot be
/// read without slicing.
fn slice_length(
    states: &[String],
    assigner: WindowAssigner,
    asked: bool,
) -> Result<Option<i64>, RuntimeError> {
    let holds = |name: &str| states.iter().any(|s| s == name);
    if !asked {
        if holds(SLICES) {
            return Err(RuntimeError::Config(format!(
                "this window operator's state is kept per slice (`{SLICES}`): it was built \
                 with `sliced()`, and cannot be restored without it"
            )));
        }
        return Ok(None);
    }
    match assigner {
        WindowAssigner::Session { .. } => Err(RuntimeError::Config(
            "session windows cannot be sliced: they merge".into(),
        )),
        WindowAssigner::Tumbling { .. } => Ok(None),
        WindowAssigner::Sliding { size, slide, .. } if size % slide != 0 => {
            Err(RuntimeError::Config(format!(
                "sliced windows need a size that is a multiple of the slide, got size {size} \
                 slide {slide}"
            )))
        }
        WindowAssigner::Sliding { .. } if holds(CONTENTS) => {
            tracing::warn!(
                "window state restored per window (`{CONTENTS}`): this operator keeps its \
                 contents per window, not per slice"
            );
            Ok(None)
        }
        WindowAssigner::Sliding { slide, .. } => Ok(Some(slide)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// What restored state decides: per-window contents stay per window (no state is
    /// left unread), sliced state refuses to run unsliced, a fresh job slices as asked.
    #[test]
    fn slicing_follows_what_was_asked_and_what_was_restored() {
        let sliding = WindowAssigner::sliding(10, 2);
        assert_eq!(slice_length(&[], sliding, false).unwrap(), None);
        assert_eq!(slice_length(&[], sliding, true).unwrap(), Some(2));
        let timers = names(&["_timer_state/event"]);
        assert_eq!(slice_length(&timers, sliding, true).unwrap(), Some(2));
        let slices = names(&[SLICES, "_timer_state/event"]);
        assert_eq!(slice_length(&slices, sliding, true).unwrap(), Some(2));
        assert!(matches!(
            slice_length(&slices, sliding, false),
            Err(RuntimeError::Config(_))
        ));
        let per_window = names(&[CONTENTS]);
        assert_eq!(slice_length(&per_window, sliding, true).unwrap(), None);
        assert_eq!(slice_length(&per_window, sliding, false).unwrap(), None);
        assert_eq!(
            slice_length(&[], WindowAssigner::tumbling(10), true).unwrap(),
            None
        );
        for refused in [WindowAssigner::session(10), WindowAssigner::sliding(10, 3)] {
            assert!(matches!(
                slice_length(&[], refused, true),
                Err(RuntimeError::Config(_))
            ));
        }
    }
}

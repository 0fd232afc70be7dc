//! The window operator's per-record and per-timer logic (Flink's `WindowOperator`
//! with `EventTimeTrigger`): assigning records to windows, merging sessions, firing
//! and cleaning up on event-time timers.

use flowstate_core::state::StateKey;

use super::contents::Contents;
use super::sessions::{self, SessionState};
use super::{TimeWindow, WindowAssigner};
use crate::RuntimeError;
use crate::keyed::{KeyedCtx, KeyedLogic, OutputTag};
use crate::stream::Data;
use crate::timers::TimeDomain;

/// The window operator's logic.
pub(super) struct WindowLogic<T, C> {
    pub(super) assigner: WindowAssigner,
    pub(super) lateness: i64,
    pub(super) late: Option<OutputTag<T>>,
    /// The open sessions of each key, for merging (session) windows.
    pub(super) sessions: Option<SessionState>,
    /// The slice length when the contents are kept per slice (sliced sliding
    /// windows): a record goes into one slice, a window fires from its slices.
    pub(super) slide: Option<i64>,
    pub(super) contents: C,
}

impl<T, C> WindowLogic<T, C> {
    fn cleanup_time(&self, w: &TimeWindow) -> i64 {
        w.max_timestamp().saturating_add(self.lateness)
    }
}

impl<T: Data, C> WindowLogic<T, C> {
    /// Emits `w`'s result (its contents must be current).
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

    /// Adds `value` to `w`, whose contents live under `state_window`, and runs the
    /// event-time trigger for `w`.
    fn add_and_trigger<K: StateKey, OUT>(
        &mut self,
        w: TimeWindow,
        state_window: TimeWindow,
        value: T,
        ctx: &mut KeyedCtx<'_, K, TimeWindow, OUT>,
    ) -> Result<(), RuntimeError>
    where
        C: Contents<K, T, OUT>,
    {
        self.contents.set_window(state_window);
        self.contents.add(value)?;
        self.trigger(w, ctx)
    }

    /// The event-time trigger of `w` after a record was added: fires it at once when
    /// the watermark has passed its end (a late record within the allowed lateness),
    /// else sets its timer; and sets its cleanup timer.
    fn trigger<K: StateKey, OUT>(
        &mut self,
        w: TimeWindow,
        ctx: &mut KeyedCtx<'_, K, TimeWindow, OUT>,
    ) -> Result<(), RuntimeError>
    where
        C: Contents<K, T, OUT>,
    {
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

    /// Adds a record to the key's sessions; returns whether a live session took it.
    fn add_to_session<K: StateKey, OUT>(
        &mut self,
        state: &SessionState,
        w: TimeWindow,
        value: &T,
        ctx: &mut KeyedCtx<'_, K, TimeWindow, OUT>,
    ) -> Result<bool, RuntimeError>
    where
        C: Contents<K, T, OUT>,
    {
        let stored = state.value()?.unwrap_or_default();
        let added = sessions::add(&stored, w);
        if self.cleanup_time(&added.window) <= ctx.watermark {
            return Ok(false);
        }
        if !added.merged_state.is_empty() {
            self.contents
                .merge(&added.state_window, &added.merged_state)?;
        }
        for s in &added.replaced {
            ctx.timers
                .delete(TimeDomain::EventTime, ctx.key, *s, s.max_timestamp())?;
            let cleanup = self.cleanup_time(s);
            ctx.timers
                .delete(TimeDomain::EventTime, ctx.key, *s, cleanup)?;
        }
        if added.changed {
            state.update(added.sessions)?;
        }
        self.add_and_trigger(added.window, added.state_window, value.clone(), ctx)?;
        Ok(true)
    }

    /// Adds a record to its slice and runs the trigger of every window it is in that
    /// is not cleaned up yet; returns whether there was one.
    fn add_to_slice<K: StateKey, OUT>(
        &mut self,
        slide: i64,
        value: T,
        ctx: &mut KeyedCtx<'_, K, TimeWindow, OUT>,
    ) -> Result<bool, RuntimeError>
    where
        C: Contents<K, T, OUT>,
    {
        let windows = self.assigner.assign(ctx.timestamp);
        // The latest window starts where the record's slice starts.
        let Some(start) = windows.iter().map(|w| w.start).max() else {
            return Ok(false);
        };
        let live: Vec<TimeWindow> = windows
            .into_iter()
            .filter(|w| self.cleanup_time(w) > ctx.watermark)
            .collect();
        if live.is_empty() {
            return Ok(false);
        }
        self.contents
            .set_window(TimeWindow::new(start, start.saturating_add(slide)));
        self.contents.add(value)?;
        for w in live {
            self.trigger(w, ctx)?;
        }
        Ok(true)
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
        let windows = match self.slide {
            Some(slide) => {
                skipped = !self.add_to_slice(slide, value.clone(), ctx)?;
                Vec::new()
            }
            None => self.assigner.assign(ts),
        };
        for w in windows {
            if let Some(state) = self.sessions.clone() {
                skipped &= !self.add_to_session(&state, w, &value, ctx)?;
            } else if self.cleanup_time(&w) > wm {
                skipped = false;
                self.add_and_trigger(w, w, value.clone(), ctx)?;
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
        let (state_window, sessions) = match &self.sessions {
            Some(s) => {
                let open = s.value()?.unwrap_or_default();
                let Some(session) = open.iter().find(|o| o.window == w) else {
                    // Merged into another session since the timer was set.
                    return Ok(());
                };
                (session.state_window, Some((s.clone(), open)))
            }
            // A sliced window's first slice is in no later window: it goes with it.
            None => (
                self.slide.map_or(w, |slide| {
                    TimeWindow::new(w.start, w.start.saturating_add(slide))
                }),
                None,
            ),
        };
        self.contents.set_window(state_window);
        if ts == w.max_timestamp() {
            self.fire(&w, ctx)?;
        }
        if ts == self.cleanup_time(&w) {
            // Firing a sliced window moved the contents' namespace across its slices.
            self.contents.set_window(state_window);
            self.contents.clear()?;
            if let Some((state, mut open)) = sessions {
                open.retain(|s| s.window != w);
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

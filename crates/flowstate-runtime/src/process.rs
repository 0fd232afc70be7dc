//! Keyed process functions (Flink's `KeyedProcessFunction`): state declared in
//! `open`, records and timers processed with the current key set on the worker's keyed
//! backend, timers per key, side outputs.
//!
//! They run on the keyed operator of [`crate::keyed`]: records exchanged by key group,
//! processed in watermark-epoch order, timers stored in the keyed backend (namespace
//! [`VoidNamespace`]).

use std::rc::Rc;

use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use flowstate_core::state::{
    AggregatingState, ListState, MapState, ReducingState, StateKey, StateValue, ValueState,
    VoidNamespace,
};

use crate::RuntimeError;
use crate::backend::AnyBackend;
use crate::keyed::{KeyedCtx, KeyedLogic, OutputTag, keyed_operator};
use crate::query::QueryRegistry;
use crate::stream::{Data, DataStream, KeyedStream};
use crate::timers::TimeDomain;

/// The state a function declared in `open`, or [`RuntimeError::NotOpened`] when it is
/// used before: `let s = opened(&self.count)?;` in `process_element`.
///
/// The error is built only when it is returned. `self.count.as_ref()
/// .ok_or(RuntimeError::NotOpened)?` builds it and drops it on every record, and the
/// drop (a jump through the error's drop glue) was not optimized away: 1.7% of the
/// heap `value` job's samples in `perf` (the log, "Session 30").
#[inline]
pub fn opened<T>(state: &Option<T>) -> Result<&T, RuntimeError> {
    match state {
        Some(s) => Ok(s),
        None => Err(RuntimeError::NotOpened),
    }
}

/// Flink's `KeyedProcessFunction`: one instance per worker, called with the current
/// key set.
pub trait KeyedProcessFunction<K, IN, OUT>: 'static {
    /// Declares state (called once per worker before any record).
    fn open(&mut self, ctx: &OpenContext<'_, K>) -> Result<(), RuntimeError> {
        let _ = ctx;
        Ok(())
    }
    /// Processes one record of the current key.
    fn process_element(
        &mut self,
        value: IN,
        ctx: &mut ProcessContext<'_, K, OUT>,
    ) -> Result<(), RuntimeError>;
    /// A timer of the current key fired at `timestamp`.
    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut TimerContext<'_, K, OUT>,
    ) -> Result<(), RuntimeError> {
        let _ = (timestamp, ctx);
        Ok(())
    }
}

/// Declares keyed state in [`KeyedProcessFunction::open`].
pub struct OpenContext<'a, K> {
    backend: &'a AnyBackend<K>,
    queries: &'a QueryRegistry<K>,
}

impl<'a, K> OpenContext<'a, K> {
    pub(crate) fn new(backend: &'a AnyBackend<K>, queries: &'a QueryRegistry<K>) -> Self {
        OpenContext { backend, queries }
    }
}

/// States declared with a queryable name (`descriptor.queryable("name")`) are exposed
/// to queries when the job has a query hub ([`crate::query`]).
impl<K: StateKey> OpenContext<'_, K> {
    /// A value state of the operator's keyed backend.
    pub fn value_state<T: StateValue>(
        &self,
        desc: &ValueStateDescriptor<T>,
    ) -> Result<Rc<dyn ValueState<T>>, RuntimeError> {
        let state: Rc<dyn ValueState<T>> = self.backend.value_state::<VoidNamespace, T>(desc)?;
        self.queries.value(desc, &state)?;
        Ok(state)
    }
    /// A list state.
    pub fn list_state<T: StateValue>(
        &self,
        desc: &ListStateDescriptor<T>,
    ) -> Result<Rc<dyn ListState<T>>, RuntimeError> {
        let state: Rc<dyn ListState<T>> = self.backend.list_state::<VoidNamespace, T>(desc)?;
        self.queries.list(desc, &state)?;
        Ok(state)
    }
    /// A map state.
    pub fn map_state<UK: StateKey, UV: StateValue>(
        &self,
        desc: &MapStateDescriptor<UK, UV>,
    ) -> Result<Rc<dyn MapState<UK, UV>>, RuntimeError> {
        let state: Rc<dyn MapState<UK, UV>> =
            self.backend.map_state::<VoidNamespace, UK, UV>(desc)?;
        self.queries.map(desc, &state)?;
        Ok(state)
    }
    /// A reducing state.
    pub fn reducing_state<T: StateValue>(
        &self,
        desc: &ReducingStateDescriptor<T>,
    ) -> Result<Rc<dyn ReducingState<T>>, RuntimeError> {
        let state: Rc<dyn ReducingState<T>> =
            self.backend.reducing_state::<VoidNamespace, T>(desc)?;
        self.queries.reducing(desc, &state)?;
        Ok(state)
    }
    /// An aggregating state (not queryable: its result type need not serialize).
    pub fn aggregating_state<IN: 'static, ACC: StateValue, OUT: 'static>(
        &self,
        desc: &AggregatingStateDescriptor<IN, ACC, OUT>,
    ) -> Result<Rc<dyn AggregatingState<IN, OUT>>, RuntimeError> {
        if let Some(name) = desc.queryable_name() {
            return Err(RuntimeError::Config(format!(
                "aggregating state `{}` cannot be queryable (as `{name}`): query the \
                 accumulator through a value state instead",
                desc.name()
            )));
        }
        Ok(self
            .backend
            .aggregating_state::<VoidNamespace, IN, ACC, OUT>(desc)?)
    }
}

/// Registers and deletes timers of the current key.
pub struct TimerService<'c, 'a, K, OUT> {
    ctx: &'c mut KeyedCtx<'a, K, VoidNamespace, OUT>,
}

impl<K: StateKey, OUT> TimerService<'_, '_, K, OUT> {
    /// Fires `on_timer(ts)` once the watermark reaches `ts` (once per key and time).
    pub fn register_event_time_timer(&mut self, ts: i64) -> Result<(), RuntimeError> {
        let c = &mut *self.ctx;
        c.timers
            .register(TimeDomain::EventTime, c.key, VoidNamespace, ts)
    }
    /// Cancels an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, ts: i64) -> Result<(), RuntimeError> {
        let c = &mut *self.ctx;
        c.timers
            .delete(TimeDomain::EventTime, c.key, VoidNamespace, ts)
    }
    /// Fires `on_timer(ts)` once the processing-time clock reaches `ts`.
    pub fn register_processing_time_timer(&mut self, ts: i64) -> Result<(), RuntimeError> {
        let c = &mut *self.ctx;
        c.timers
            .register(TimeDomain::ProcessingTime, c.key, VoidNamespace, ts)
    }
    /// Cancels a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, ts: i64) -> Result<(), RuntimeError> {
        let c = &mut *self.ctx;
        c.timers
            .delete(TimeDomain::ProcessingTime, c.key, VoidNamespace, ts)
    }
    /// The operator's current watermark (`i64::MIN` before the first).
    pub fn current_watermark(&self) -> i64 {
        self.ctx.watermark
    }
    /// The processing-time clock, in ms.
    pub fn current_processing_time(&self) -> i64 {
        self.ctx.clock.now_ms()
    }
}

/// What [`KeyedProcessFunction::process_element`] sees besides the record.
pub struct ProcessContext<'a, K, OUT> {
    ctx: KeyedCtx<'a, K, VoidNamespace, OUT>,
    domain: Option<TimeDomain>,
}

impl<'a, K, OUT> ProcessContext<'a, K, OUT> {
    pub(crate) fn new(
        ctx: &'a mut KeyedCtx<'_, K, VoidNamespace, OUT>,
        domain: Option<TimeDomain>,
    ) -> Self {
        ProcessContext {
            ctx: reborrow(ctx),
            domain,
        }
    }
}

impl<'a, K: StateKey, OUT> ProcessContext<'a, K, OUT> {
    /// The current key.
    pub fn current_key(&self) -> &K {
        self.ctx.key
    }
    /// The record's event time (for a timer: the timer's timestamp).
    pub fn timestamp(&self) -> i64 {
        self.ctx.timestamp
    }
    /// In [`KeyedProcessFunction::on_timer`]: which clock fired the timer.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.domain
    }
    /// Emits a record with the input record's event time.
    pub fn collect(&mut self, value: OUT) {
        let ts = self.ctx.timestamp;
        self.ctx.emit.main(ts, value);
    }
    /// Emits a record with the given event time.
    pub fn collect_at(&mut self, timestamp: i64, value: OUT) {
        self.ctx.emit.main(timestamp, value);
    }
    /// Emits `value` to the side output `tag` (read it with
    /// [`DataStream::side_output`]), with the input record's event time.
    pub fn output<T: Data>(&mut self, tag: &OutputTag<T>, value: T) -> Result<(), RuntimeError> {
        let ts = self.ctx.timestamp;
        self.ctx.emit.side(tag, ts, &value)
    }
    /// Timers of the current key.
    pub fn timer_service(&mut self) -> TimerService<'_, 'a, K, OUT> {
        TimerService { ctx: &mut self.ctx }
    }
}

/// The context of [`KeyedProcessFunction::on_timer`]: the same as for records, with
/// the timer's timestamp as the event time of what it emits.
pub type TimerContext<'a, K, OUT> = ProcessContext<'a, K, OUT>;

/// Runs a user's process function on the keyed operator.
struct ProcessLogic<F>(F);

fn reborrow<'s, K, OUT>(
    c: &'s mut KeyedCtx<'_, K, VoidNamespace, OUT>,
) -> KeyedCtx<'s, K, VoidNamespace, OUT> {
    KeyedCtx {
        key: c.key,
        timestamp: c.timestamp,
        emit: crate::keyed::Emitter {
            out: &mut *c.emit.out,
        },
        timers: &mut *c.timers,
        watermark: c.watermark,
        clock: c.clock,
    }
}

impl<K, IN, OUT, F> KeyedLogic<K, VoidNamespace, IN, OUT> for ProcessLogic<F>
where
    K: StateKey,
    F: KeyedProcessFunction<K, IN, OUT>,
{
    fn element(
        &mut self,
        value: IN,
        ctx: &mut KeyedCtx<'_, K, VoidNamespace, OUT>,
    ) -> Result<(), RuntimeError> {
        let mut pc = ProcessContext::new(ctx, None);
        self.0.process_element(value, &mut pc)
    }
    fn timer(
        &mut self,
        ts: i64,
        _namespace: VoidNamespace,
        domain: TimeDomain,
        ctx: &mut KeyedCtx<'_, K, VoidNamespace, OUT>,
    ) -> Result<(), RuntimeError> {
        let mut pc = ProcessContext::new(ctx, Some(domain));
        self.0.on_timer(ts, &mut pc)
    }
}

impl<'scope, K, T> KeyedStream<'scope, K, T>
where
    K: Data + StateKey,
    T: Data,
{
    /// Runs `function` on every record, with `function`'s keyed state held by the
    /// configured backend for the worker's key groups.
    pub fn process<OUT: Data, F: KeyedProcessFunction<K, T, OUT>>(
        self,
        mut function: F,
    ) -> DataStream<'scope, OUT> {
        keyed_operator::<K, T, VoidNamespace, OUT, _>(
            self,
            "KeyedProcess",
            move |backend, queries| {
                function.open(&OpenContext::new(backend, queries))?;
                Ok(ProcessLogic(function))
            },
        )
    }
}

//! Keyed process functions: state declared in `open`, records and timers processed
//! with the current key set on the worker's keyed backend.
//!
//! The operator receives records exchanged by key group (each worker owns the
//! key-group range of its index), creates the configured backend for that range,
//! sets the current key before every record and timer, and fires event-time timers in
//! timestamp order as its input frontier (the watermark) passes them, deduplicated per
//! (key, timestamp). Processing-time timers fire by the job's clock.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

use flowstate_core::backend::{KeyedBackendConfig, KeyedStateBackend};
use flowstate_core::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use flowstate_core::keygroup::key_group_range_for_operator;
use flowstate_core::serializer::SerdeSerializer;
use flowstate_core::state::{
    AggregatingState, ListState, MapState, ReducingState, StateKey, StateValue, ValueState,
    VoidNamespace,
};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::backend::AnyBackend;
use crate::stream::{Data, DataStream, KeyedStream};
use crate::{Clock, RuntimeError, record_error};

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
}

impl<K: StateKey> OpenContext<'_, K> {
    /// A value state of the operator's keyed backend.
    pub fn value_state<T: StateValue>(
        &self,
        desc: &ValueStateDescriptor<T>,
    ) -> Result<Rc<dyn ValueState<T>>, RuntimeError> {
        Ok(self.backend.value_state::<VoidNamespace, T>(desc)?)
    }
    /// A list state.
    pub fn list_state<T: StateValue>(
        &self,
        desc: &ListStateDescriptor<T>,
    ) -> Result<Rc<dyn ListState<T>>, RuntimeError> {
        Ok(self.backend.list_state::<VoidNamespace, T>(desc)?)
    }
    /// A map state.
    pub fn map_state<UK: StateKey, UV: StateValue>(
        &self,
        desc: &MapStateDescriptor<UK, UV>,
    ) -> Result<Rc<dyn MapState<UK, UV>>, RuntimeError> {
        Ok(self.backend.map_state::<VoidNamespace, UK, UV>(desc)?)
    }
    /// A reducing state.
    pub fn reducing_state<T: StateValue>(
        &self,
        desc: &ReducingStateDescriptor<T>,
    ) -> Result<Rc<dyn ReducingState<T>>, RuntimeError> {
        Ok(self.backend.reducing_state::<VoidNamespace, T>(desc)?)
    }
    /// An aggregating state.
    pub fn aggregating_state<IN: 'static, ACC: StateValue, OUT: 'static>(
        &self,
        desc: &AggregatingStateDescriptor<IN, ACC, OUT>,
    ) -> Result<Rc<dyn AggregatingState<IN, OUT>>, RuntimeError> {
        Ok(self
            .backend
            .aggregating_state::<VoidNamespace, IN, ACC, OUT>(desc)?)
    }
}

/// Pending timers of one domain: timestamp -> keys, so they fire in timestamp order
/// and a (key, timestamp) pair is registered at most once.
struct TimerQueue<K> {
    by_time: BTreeMap<i64, HashSet<K>>,
}

impl<K: Hash + Eq + Clone> TimerQueue<K> {
    fn new() -> Self {
        TimerQueue {
            by_time: BTreeMap::new(),
        }
    }
    fn register(&mut self, key: &K, ts: i64) {
        self.by_time.entry(ts).or_default().insert(key.clone());
    }
    fn delete(&mut self, key: &K, ts: i64) {
        if let Some(keys) = self.by_time.get_mut(&ts) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_time.remove(&ts);
            }
        }
    }
    /// Removes and returns the earliest timer at or before `limit`.
    fn pop_due(&mut self, limit: i64) -> Option<(i64, K)> {
        let mut entry = self.by_time.first_entry()?;
        if *entry.key() > limit {
            return None;
        }
        let ts = *entry.key();
        let keys = entry.get_mut();
        let key = keys.iter().next().cloned();
        if let Some(k) = &key {
            keys.remove(k);
        }
        if keys.is_empty() {
            entry.remove();
        }
        key.map(|k| (ts, k))
    }
    fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }
}

/// The timers of one operator instance and its watermark.
struct Timers<K> {
    event: TimerQueue<K>,
    processing: TimerQueue<K>,
    watermark: i64,
}

impl<K: StateKey> Timers<K> {
    fn new() -> Self {
        Timers {
            event: TimerQueue::new(),
            processing: TimerQueue::new(),
            watermark: i64::MIN,
        }
    }

    /// Makes `key` current and runs `f` (a record or a timer at `ts`) with a context
    /// whose output goes to `out`.
    fn run<OUT>(
        &mut self,
        backend: &AnyBackend<K>,
        key: &K,
        ts: i64,
        clock: &Arc<dyn Clock>,
        out: &mut Vec<(i64, OUT)>,
        f: impl FnOnce(&mut ProcessContext<'_, K, OUT>) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        backend.set_current_key(key.clone())?;
        f(&mut ProcessContext {
            timestamp: ts,
            out,
            timers: TimerService {
                key,
                event: &mut self.event,
                processing: &mut self.processing,
                watermark: self.watermark,
                clock,
            },
        })
    }
}

/// Registers and deletes timers of the current key.
pub struct TimerService<'a, K> {
    key: &'a K,
    event: &'a mut TimerQueue<K>,
    processing: &'a mut TimerQueue<K>,
    watermark: i64,
    clock: &'a Arc<dyn Clock>,
}

impl<K: Hash + Eq + Clone> TimerService<'_, K> {
    /// Fires `on_timer(ts)` once the watermark reaches `ts` (once per key and time).
    pub fn register_event_time_timer(&mut self, ts: i64) {
        self.event.register(self.key, ts);
    }
    /// Cancels an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, ts: i64) {
        self.event.delete(self.key, ts);
    }
    /// Fires `on_timer(ts)` once the processing-time clock reaches `ts`.
    pub fn register_processing_time_timer(&mut self, ts: i64) {
        self.processing.register(self.key, ts);
    }
    /// Cancels a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, ts: i64) {
        self.processing.delete(self.key, ts);
    }
    /// The operator's current watermark (`i64::MIN` before the first).
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }
    /// The processing-time clock, in ms.
    pub fn current_processing_time(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// What [`KeyedProcessFunction::process_element`] sees besides the record.
pub struct ProcessContext<'a, K, OUT> {
    timestamp: i64,
    out: &'a mut Vec<(i64, OUT)>,
    timers: TimerService<'a, K>,
}

impl<'a, K: Hash + Eq + Clone, OUT> ProcessContext<'a, K, OUT> {
    /// The current key.
    pub fn current_key(&self) -> &K {
        self.timers.key
    }
    /// The record's event time.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
    /// Emits a record with the input record's event time.
    pub fn collect(&mut self, value: OUT) {
        self.out.push((self.timestamp, value));
    }
    /// Emits a record with the given event time.
    pub fn collect_at(&mut self, timestamp: i64, value: OUT) {
        self.out.push((timestamp, value));
    }
    /// Timers of the current key.
    pub fn timer_service(&mut self) -> &mut TimerService<'a, K> {
        &mut self.timers
    }
}

/// The context of [`KeyedProcessFunction::on_timer`]: the same as for records, with
/// the timer's timestamp as the event time of what it emits.
pub type TimerContext<'a, K, OUT> = ProcessContext<'a, K, OUT>;

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
        let stream = self.inner;
        let config = stream.config.clone();
        let errors = stream.errors.clone();
        let scope = stream.scope;
        let (index, peers) = (scope.index() as u32, scope.peers() as u32);
        let max_p = config.max_parallelism;
        let backend = key_group_range_for_operator(max_p, peers, index)
            .map_err(RuntimeError::from)
            .and_then(|range| {
                Ok(config.backend.create(KeyedBackendConfig {
                    max_parallelism: max_p,
                    key_group_range: range,
                    key_serializer: SerdeSerializer::<K>::arc(),
                })?)
            })
            .and_then(|b| {
                function.open(&OpenContext { backend: &b })?;
                Ok(b)
            });
        let backend = match backend {
            Ok(b) => Some(b),
            Err(e) => {
                record_error(&errors, e);
                None
            }
        };
        let clock = config.clock.clone();
        let inner = stream
            .inner
            .clone()
            .unary_frontier::<CapacityContainerBuilder<Vec<(i64, OUT)>>, _, _, _>(
                Exchange::new(|(_, (target, _, _, _)): &(i64, (u32, u32, K, T))| *target as u64),
                "KeyedProcess",
                move |cap, info| {
                    let activator = scope.activator_for(info.address);
                    let mut cap = Some(cap);
                    let mut timers = Timers::<K>::new();
                    let mut out: Vec<(i64, OUT)> = Vec::new();
                    move |(input, frontier), output| {
                        let Some(backend) = backend.as_ref() else {
                            // Failed to start: drain and drop everything.
                            input.for_each(|_, data| data.clear());
                            cap = None;
                            return;
                        };
                        input.for_each(|time, data| {
                            for (ts, (_, _, key, value)) in data.drain(..) {
                                if errors.borrow().is_some() {
                                    continue;
                                }
                                let r = timers.run(backend, &key, ts, &clock, &mut out, |ctx| {
                                    function.process_element(value, ctx)
                                });
                                if let Err(e) = r {
                                    record_error(&errors, e);
                                }
                            }
                            output.session(&time).give_iterator(out.drain(..));
                        });
                        // The watermark: everything below the frontier is complete.
                        let frontier_min = frontier.frontier().first().copied();
                        timers.watermark = match frontier_min {
                            Some(f) => i64::try_from(f).unwrap_or(i64::MAX).saturating_sub(1),
                            None => i64::MAX,
                        };
                        let now = clock.now_ms();
                        if let Some(c) = cap.as_mut() {
                            if let Some(f) = frontier_min
                                && f > *c.time()
                            {
                                c.downgrade(&f);
                            }
                            // Event-time timers in timestamp order, then processing time.
                            for (queue_is_event, limit) in [(true, timers.watermark), (false, now)]
                            {
                                loop {
                                    let due = if queue_is_event {
                                        timers.event.pop_due(limit)
                                    } else {
                                        timers.processing.pop_due(limit)
                                    };
                                    let Some((ts, key)) = due else { break };
                                    if errors.borrow().is_some() {
                                        break;
                                    }
                                    let r =
                                        timers.run(backend, &key, ts, &clock, &mut out, |ctx| {
                                            function.on_timer(ts, ctx)
                                        });
                                    if let Err(e) = r {
                                        record_error(&errors, e);
                                    }
                                    output.session(&*c).give_iterator(out.drain(..));
                                }
                            }
                        }
                        if frontier_min.is_none() {
                            // Input done and every event-time timer fired; processing
                            // timers still pending at the end are dropped (bounded input).
                            cap = None;
                        } else if !timers.processing.is_empty() {
                            activator.activate();
                        }
                    }
                },
            );
        DataStream {
            inner,
            config,
            errors: stream.errors,
            scope,
        }
    }
}

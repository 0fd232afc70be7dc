//! The keyed operator every keyed transformation runs on (process functions, windows,
//! broadcast joins): a keyed backend for the worker's key groups, timers in that
//! backend, event-time ordering by watermark epochs, and main plus side outputs.
//!
//! **Epoch order.** Records arrive in timely batches stamped with the watermark epoch
//! they were sent in (epoch `t` = sent after watermark `t - 1`). The operator processes
//! a batch of epoch `t` only once nothing earlier can still arrive (its input frontier
//! has reached `t`); before it, every event-time timer up to `t - 1` fires. So a record
//! sees exactly the watermark its source had emitted before it, whatever the thread
//! timing: lateness and timer order are deterministic, which Flink (watermarks racing
//! on several channels) does not promise. Batches of later epochs wait in a stash;
//! with no event time every record is in epoch 0 and nothing waits.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate_core::backend::{KeyedBackendConfig, KeyedStateBackend};
use flowstate_core::keygroup::key_group_range_for_operator;
use flowstate_core::serializer::{SerdeSerializer, TypeSerializer};
use flowstate_core::state::{Namespace, StateKey};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::{Operator, OutputBuilderSession};
use timely::scheduling::Activator;

use crate::backend::AnyBackend;
use crate::stream::{Data, DataStream, KeyedStream};
use crate::timers::{TimeDomain, TimerState};
use crate::{Clock, RuntimeError, record_error};

/// A record on its way out of a keyed operator: main output, or a side output's tag
/// name with the serialized value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Tagged<T> {
    Main(T),
    Side(String, Vec<u8>),
}

/// Names a side output of type `T` (Flink's `OutputTag`). Emit with
/// [`crate::ProcessContext::output`], read with [`DataStream::side_output`].
///
/// ```
/// use flowstate_runtime::OutputTag;
/// let late: OutputTag<(String, i64)> = OutputTag::new("late");
/// assert_eq!(late.name(), "late");
/// ```
pub struct OutputTag<T> {
    name: String,
    serializer: SerdeSerializer<T>,
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        OutputTag {
            name: self.name.clone(),
            serializer: self.serializer.clone(),
        }
    }
}

impl<T: Data> OutputTag<T> {
    /// A tag; side outputs are matched by name.
    pub fn new(name: impl Into<String>) -> Self {
        OutputTag {
            name: name.into(),
            serializer: SerdeSerializer::new(),
        }
    }
    /// The tag's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    pub(crate) fn encode(&self, value: &T) -> Result<Vec<u8>, RuntimeError> {
        let mut buf = Vec::new();
        self.serializer
            .serialize_into(value, &mut buf)
            .map_err(|e| flowstate_core::StateError::serialization(&self.name, e))?;
        Ok(buf)
    }
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<T, RuntimeError> {
        Ok(self
            .serializer
            .deserialize(bytes)
            .map_err(|e| flowstate_core::StateError::serialization(&self.name, e))?)
    }
}

/// Where a keyed operator's user code emits to.
pub(crate) struct Emitter<'a, OUT> {
    pub(crate) out: &'a mut Vec<(i64, Tagged<OUT>)>,
}

impl<OUT> Emitter<'_, OUT> {
    pub(crate) fn main(&mut self, ts: i64, value: OUT) {
        self.out.push((ts, Tagged::Main(value)));
    }
    pub(crate) fn side<T: Data>(
        &mut self,
        tag: &OutputTag<T>,
        ts: i64,
        value: &T,
    ) -> Result<(), RuntimeError> {
        let bytes = tag.encode(value)?;
        self.out.push((ts, Tagged::Side(tag.name.clone(), bytes)));
        Ok(())
    }
}

/// Everything a keyed operator's logic sees for one record or timer.
pub(crate) struct KeyedCtx<'a, K, N, OUT> {
    /// The current key (already set on the backend).
    pub(crate) key: &'a K,
    /// Event time of the record, or the timer's timestamp.
    pub(crate) timestamp: i64,
    pub(crate) emit: Emitter<'a, OUT>,
    pub(crate) timers: &'a mut TimerState<K, N>,
    pub(crate) watermark: i64,
    pub(crate) clock: &'a Arc<dyn Clock>,
}

/// What a keyed operator does with records and timers.
pub(crate) trait KeyedLogic<K, N, IN, OUT>: 'static {
    fn element(&mut self, value: IN, ctx: &mut KeyedCtx<'_, K, N, OUT>)
    -> Result<(), RuntimeError>;
    fn timer(
        &mut self,
        ts: i64,
        namespace: N,
        domain: TimeDomain,
        ctx: &mut KeyedCtx<'_, K, N, OUT>,
    ) -> Result<(), RuntimeError>;
    /// Called once the input is exhausted and every event-time timer fired.
    fn finish(&mut self) -> Result<(), RuntimeError> {
        Ok(())
    }
}

/// The output handle of a keyed operator.
pub(crate) type TaggedOutput<'a, OUT> =
    OutputBuilderSession<'a, u64, CapacityContainerBuilder<Vec<(i64, Tagged<OUT>)>>>;

/// A record of a keyed stream: event time, (target worker, key group, key, value).
pub(crate) type KeyedRecord<K, T> = (i64, (u32, u32, K, T));

/// The watermark an epoch stands for (epochs are unsigned; epoch 0 is "none yet").
pub(crate) fn watermark_before(epoch: u64) -> i64 {
    if epoch == 0 {
        i64::MIN
    } else {
        i64::try_from(epoch - 1).unwrap_or(i64::MAX)
    }
}

/// The per-worker running part of a keyed operator.
pub(crate) struct KeyedRunner<K: StateKey, N: Namespace, L> {
    pub(crate) backend: AnyBackend<K>,
    pub(crate) timers: TimerState<K, N>,
    pub(crate) logic: L,
    pub(crate) watermark: i64,
    pub(crate) clock: Arc<dyn Clock>,
}

impl<K: StateKey + Data, N: Namespace, L> KeyedRunner<K, N, L> {
    /// Sets up the backend of this worker's key-group range and its timers, then
    /// `open` builds the logic (declaring its state).
    pub(crate) fn start(
        config: &crate::JobConfig,
        index: u32,
        peers: u32,
        open: impl FnOnce(&AnyBackend<K>) -> Result<L, RuntimeError>,
    ) -> Result<Self, RuntimeError> {
        let max_p = config.max_parallelism;
        let range = key_group_range_for_operator(max_p, peers, index)?;
        let backend = config.backend.create(KeyedBackendConfig {
            max_parallelism: max_p,
            key_group_range: range,
            key_serializer: SerdeSerializer::<K>::arc(),
        })?;
        let logic = open(&backend)?;
        let timers = TimerState::rebuild(&backend)?;
        Ok(KeyedRunner {
            backend,
            timers,
            logic,
            watermark: i64::MIN,
            clock: config.clock.clone(),
        })
    }

    /// Runs one record of `key`.
    pub(crate) fn element<IN, OUT>(
        &mut self,
        key: &K,
        ts: i64,
        value: IN,
        out: &mut Vec<(i64, Tagged<OUT>)>,
    ) -> Result<(), RuntimeError>
    where
        L: KeyedLogic<K, N, IN, OUT>,
    {
        self.backend.set_current_key(key.clone())?;
        let mut ctx = KeyedCtx {
            key,
            timestamp: ts,
            emit: Emitter { out },
            timers: &mut self.timers,
            watermark: self.watermark,
            clock: &self.clock,
        };
        self.logic.element(value, &mut ctx)
    }

    /// Fires every timer of `domain` due at `limit`, in timestamp order.
    pub(crate) fn fire<IN, OUT>(
        &mut self,
        domain: TimeDomain,
        limit: i64,
        out: &mut Vec<(i64, Tagged<OUT>)>,
    ) -> Result<(), RuntimeError>
    where
        L: KeyedLogic<K, N, IN, OUT>,
    {
        while let Some((ts, key, ns)) = self.timers.pop_due(domain, limit, &self.backend)? {
            let mut ctx = KeyedCtx {
                key: &key,
                timestamp: ts,
                emit: Emitter { out: &mut *out },
                timers: &mut self.timers,
                watermark: self.watermark,
                clock: &self.clock,
            };
            self.logic.timer(ts, ns, domain, &mut ctx)?;
        }
        Ok(())
    }

    /// Raises the watermark (never lowers it) and fires the event-time timers it passes.
    pub(crate) fn advance_watermark<IN, OUT>(
        &mut self,
        watermark: i64,
        out: &mut Vec<(i64, Tagged<OUT>)>,
    ) -> Result<(), RuntimeError>
    where
        L: KeyedLogic<K, N, IN, OUT>,
    {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.fire::<IN, OUT>(TimeDomain::EventTime, watermark, out)?;
        }
        Ok(())
    }
}

impl<K: StateKey + Data, N: Namespace, L> KeyedRunner<K, N, L> {
    /// The end of an operator activation, once the epochs that were ready are done:
    /// the frontier's own watermark and the due processing-time timers fire, pending
    /// output goes out, and the capability is held at the earliest time still to come
    /// (`frontier`, or a `stashed` epoch). Returns `false` once everything is done
    /// (input ended, every event-time timer fired): the caller drops its capability.
    /// Processing-time timers still pending then are dropped (a bounded input ended).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn end_activation<IN, OUT: 'static>(
        &mut self,
        frontier: Option<u64>,
        stashed: Option<u64>,
        errors: &crate::ErrorSlot,
        cap: &mut Capability<u64>,
        out: &mut Vec<(i64, Tagged<OUT>)>,
        output: &mut TaggedOutput<'_, OUT>,
        activator: &Activator,
    ) -> bool
    where
        L: KeyedLogic<K, N, IN, OUT>,
    {
        if errors.borrow().is_none() {
            let wm = frontier.map_or(i64::MAX, watermark_before);
            if let Err(e) = self.advance_watermark::<IN, OUT>(wm, out) {
                record_error(errors, e);
            }
            let now = self.clock.now_ms();
            if let Err(e) = self.fire::<IN, OUT>(TimeDomain::ProcessingTime, now, out) {
                record_error(errors, e);
            }
        }
        let hold = match (frontier, stashed) {
            (Some(f), Some(s)) => Some(f.min(s)),
            (f, s) => f.or(s),
        };
        if !out.is_empty() {
            let emit_at = hold.map_or(*cap.time(), |h| h.max(*cap.time()));
            output
                .session(&cap.delayed(&emit_at))
                .give_iterator(out.drain(..));
        }
        match hold {
            Some(h) => {
                if h > *cap.time() {
                    cap.downgrade(&h);
                }
                if !self.timers.is_empty(TimeDomain::ProcessingTime) {
                    activator.activate();
                }
                true
            }
            None => {
                if let Err(e) = self.logic.finish() {
                    record_error(errors, e);
                }
                false
            }
        }
    }
}

/// Builds the keyed operator: records exchanged by key group to the worker that owns
/// it, processed in epoch order by `L` (built per worker by `open`).
pub(crate) fn keyed_operator<'scope, K, T, N, OUT, L>(
    stream: KeyedStream<'scope, K, T>,
    name: &str,
    open: impl FnOnce(&AnyBackend<K>) -> Result<L, RuntimeError>,
) -> DataStream<'scope, OUT>
where
    K: Data + StateKey,
    T: Data,
    N: Namespace,
    OUT: Data,
    L: KeyedLogic<K, N, T, OUT>,
{
    let stream = stream.inner;
    let errors = stream.errors.clone();
    let scope = stream.scope;
    let (index, peers) = (scope.index() as u32, scope.peers() as u32);
    let runner = match KeyedRunner::<K, N, L>::start(&stream.config, index, peers, open) {
        Ok(r) => Some(r),
        Err(e) => {
            record_error(&errors, e);
            None
        }
    };
    let op_errors = errors.clone();
    let raw = stream
        .inner
        .clone()
        .unary_frontier::<CapacityContainerBuilder<Vec<(i64, Tagged<OUT>)>>, _, _, _>(
            Exchange::new(|(_, (target, _, _, _)): &KeyedRecord<K, T>| *target as u64),
            name,
            move |cap, info| {
                let activator = scope.activator_for(info.address);
                let mut cap = Some(cap);
                let mut runner = runner;
                let mut stash: BTreeMap<u64, Vec<KeyedRecord<K, T>>> = BTreeMap::new();
                let mut out: Vec<(i64, Tagged<OUT>)> = Vec::new();
                let errors = op_errors;
                move |(input, frontier), output| {
                    let frontier_min = frontier.frontier().first().copied();
                    input.for_each(|time, data| {
                        // Unstamped messages claim no time; they are processed as epoch 0.
                        let epoch = time.least().copied().unwrap_or(0);
                        stash.entry(epoch).or_default().append(data);
                    });
                    let (Some(r), Some(c)) = (runner.as_mut(), cap.as_mut()) else {
                        stash.clear();
                        cap = None;
                        return;
                    };
                    let failed = |errors: &crate::ErrorSlot| errors.borrow().is_some();
                    // Epochs nothing earlier can precede any more, in order.
                    let ready = frontier_min.unwrap_or(u64::MAX);
                    while let Some(entry) = stash.first_entry() {
                        if *entry.key() > ready {
                            break;
                        }
                        let (epoch, records) = entry.remove_entry();
                        if !failed(&errors) {
                            if let Err(e) =
                                r.advance_watermark::<T, OUT>(watermark_before(epoch), &mut out)
                            {
                                record_error(&errors, e);
                            }
                            for (ts, (_, _, key, value)) in records {
                                if failed(&errors) {
                                    break;
                                }
                                if let Err(e) = r.element(&key, ts, value, &mut out) {
                                    record_error(&errors, e);
                                }
                            }
                        }
                        output
                            .session(&c.delayed(&epoch))
                            .give_iterator(out.drain(..));
                    }
                    if !r.end_activation::<T, OUT>(
                        frontier_min,
                        stash.keys().next().copied(),
                        &errors,
                        c,
                        &mut out,
                        output,
                        &activator,
                    ) {
                        cap = None;
                    }
                }
            },
        );
    DataStream::from_tagged(raw, stream.config, errors, scope)
}

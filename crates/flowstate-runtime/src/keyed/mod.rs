//! The keyed operator every keyed transformation runs on (process functions, windows,
//! broadcast joins): a keyed backend for the worker's key groups, timers in that
//! backend, event-time ordering by watermark epochs, and main plus side outputs.
//! The types its logic sees are here; an instance at run time is in `runner`, its
//! place in the dataflow in `operator`.
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
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use flowstate_core::backend::{KeyedBackendConfig, KeyedStateBackend};
use flowstate_core::descriptor::ListStateDescriptor;
use flowstate_core::keygroup::key_group_range_for_operator;
use flowstate_core::operator::{OperatorSnapshot, OperatorStateStore};
use flowstate_core::serializer::{SerdeSerializer, TypeSerializer};
use flowstate_core::snapshot::AsyncKeyedSnapshot;
use flowstate_core::state::VoidNamespace;
use flowstate_core::state::{Namespace, StateKey};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::{Operator, OutputBuilderSession};
use timely::scheduling::Activator;

use crate::backend::AnyBackend;
use crate::checkpoint::{OperatorSnapshotMeta, SnapshotKind};
use crate::metrics::OperatorMetrics;
use crate::query::{LiveQueries, QueryRegistry};
use crate::stream::{Data, DataStream, KeyedStream};
use crate::task::{
    KeyedWrite, Started, TaskId, TaskIdentity, TaskRef, WorkerCheckpoints, start_later,
};
use crate::time::{
    Time, epoch_after, frontier_clocks, frontier_least, time, time_at, watermark_before,
};
use crate::timers::{TimeDomain, TimerState};
use crate::{Clock, RuntimeError, record_error};

mod operator;
mod runner;

pub(crate) use operator::{keyed_operator, start_keyed_later};
pub(crate) use runner::KeyedRunner;
use runner::inflight_first;

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

/// Output a keyed operator's user code emitted and the operator has not handed on
/// yet: main records and side outputs apart. A main record is kept as `(timestamp,
/// value)`, written straight from registers; built as a `Tagged` (56 bytes for a
/// `u64`) it went through the stack, and that copy's load waited for every earlier
/// store, a state write's cache miss included (most of `process_element`'s samples
/// in the heap `value` job, which gained 4%). The two go to
/// different streams (see [`DataStream::side_output`]), so only the order within
/// each matters, and it is kept.
pub(crate) struct Outbox<OUT> {
    main: Vec<(i64, OUT)>,
    side: Vec<(i64, String, Vec<u8>)>,
}

impl<OUT> Outbox<OUT> {
    pub(crate) fn new() -> Self {
        Outbox {
            main: Vec::new(),
            side: Vec::new(),
        }
    }

    /// Records waiting, main and side.
    pub(crate) fn len(&self) -> usize {
        self.main.len() + self.side.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.main.is_empty() && self.side.is_empty()
    }

    /// Takes every waiting record, tagged for the operator's output stream.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (i64, Tagged<OUT>)> + '_ {
        let main = self.main.drain(..).map(|(ts, v)| (ts, Tagged::Main(v)));
        let side = self
            .side
            .drain(..)
            .map(|(ts, name, bytes)| (ts, Tagged::Side(name, bytes)));
        main.chain(side)
    }
}

/// Where a keyed operator's user code emits to.
pub(crate) struct Emitter<'a, OUT> {
    pub(crate) out: &'a mut Outbox<OUT>,
}

impl<OUT> Emitter<'_, OUT> {
    pub(crate) fn main(&mut self, ts: i64, value: OUT) {
        self.out.main.push((ts, value));
    }
    pub(crate) fn side<T: Data>(
        &mut self,
        tag: &OutputTag<T>,
        ts: i64,
        value: &T,
    ) -> Result<(), RuntimeError> {
        let bytes = tag.encode(value)?;
        self.out.side.push((ts, tag.name.clone(), bytes));
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

/// Hands pending output on (to the operator's output, in the given epoch or, if the
/// operator's capability is already later, at the capability): firing many timers at
/// once flushes every [`FLUSH_EVERY`] records instead of buffering all their output.
pub(crate) type Flush<'a, OUT> = &'a mut dyn FnMut(&mut Outbox<OUT>, u64);

/// The [`Flush`] of a keyed operator's output: counts the records in `metrics`, then
/// gives them at the epoch it is called with (or the capability's, if later) and the
/// inner time of `emit_at`.
pub(crate) fn flush_to<'a, OUT: 'static>(
    metrics: Option<OperatorMetrics>,
    cap: &'a Capability<Time>,
    emit_at: Time,
    output: &'a mut TaggedOutput<'_, OUT>,
) -> impl FnMut(&mut Outbox<OUT>, u64) + 'a {
    move |o, epoch| {
        if let Some(m) = &metrics {
            m.output(o.len());
        }
        let at = time_at(epoch.max(cap.time().outer), emit_at.inner);
        output.session(&cap.delayed(&at)).give_iterator(o.drain());
    }
}

/// Output records a keyed operator buffers at most while firing or running records.
pub(crate) const FLUSH_EVERY: usize = 1024;

/// The output handle of a keyed operator.
pub(crate) type TaggedOutput<'a, OUT> =
    OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<(i64, Tagged<OUT>)>>>;

/// A record of a keyed stream: event time, (target worker, key group, key, value).
pub(crate) type KeyedRecord<K, T> = (i64, (u32, u32, K, T));

/// A stash of records waiting for their epoch, by (epoch, checkpoint interval).
pub(crate) type Stash<K, T> = BTreeMap<(u64, u64), Vec<KeyedRecord<K, T>>>;

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
use timely::dataflow::channels::pact::Exchange;
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
mod output;
mod runner;

pub(crate) use operator::{keyed_operator, start_keyed_later};
pub(crate) use output::{
    Emitter, FLUSH_EVERY, Flush, KeyedCaps, KeyedOutput, Outbox, flush_to, keyed_binary,
    keyed_unary,
};
pub(crate) use runner::KeyedRunner;
use runner::inflight_first;

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

/// A record of a keyed stream: event time, (target worker, key group, key, value).
pub(crate) type KeyedRecord<K, T> = (i64, (u32, u32, K, T));

/// A stash of records waiting for their epoch, by (epoch, checkpoint interval).
pub(crate) type Stash<K, T> = BTreeMap<(u64, u64), Vec<KeyedRecord<K, T>>>;

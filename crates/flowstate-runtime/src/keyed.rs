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

/// Hands pending output on (to the operator's output, in the given epoch or, if the
/// operator's capability is already later, at the capability): firing many timers at
/// once flushes every [`FLUSH_EVERY`] records instead of buffering all their output.
pub(crate) type Flush<'a, OUT> = &'a mut dyn FnMut(&mut Vec<(i64, Tagged<OUT>)>, u64);

/// Output records a keyed operator buffers at most while firing timers.
pub(crate) const FLUSH_EVERY: usize = 1024;

/// The output handle of a keyed operator.
pub(crate) type TaggedOutput<'a, OUT> =
    OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<(i64, Tagged<OUT>)>>>;

/// A record of a keyed stream: event time, (target worker, key group, key, value).
pub(crate) type KeyedRecord<K, T> = (i64, (u32, u32, K, T));

/// A stash of records waiting for their epoch, by (epoch, checkpoint interval).
pub(crate) type Stash<K, T> = BTreeMap<(u64, u64), Vec<KeyedRecord<K, T>>>;

/// Keyed state holding the records a snapshot caught waiting in the stash:
/// per key, `(epoch, event time, serialized value)`.
const INFLIGHT_STATE: &str = "_inflight";

type InflightEntry = (u64, i64, Vec<u8>);

fn inflight_descriptor() -> ListStateDescriptor<InflightEntry> {
    ListStateDescriptor::new(INFLIGHT_STATE)
}

/// A keyed operator instance's part in checkpoints.
pub(crate) struct KeyedTask {
    pub(crate) id: TaskId,
    pub(crate) ctx: Rc<WorkerCheckpoints>,
    /// Checkpoints up to this one are snapshotted.
    pub(crate) snapshotted: u64,
    /// Completion delivered to the backend up to this one.
    notified: u64,
}

/// The per-worker running part of a keyed operator.
pub(crate) struct KeyedRunner<K: StateKey, N: Namespace, L> {
    pub(crate) backend: AnyBackend<K>,
    pub(crate) timers: TimerState<K, N>,
    pub(crate) logic: L,
    pub(crate) watermark: i64,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) task: Option<KeyedTask>,
    /// Its queryable states, when it has any and the job serves queries.
    pub(crate) queries: Option<LiveQueries<K>>,
    /// Records in and out (set by the operator once its id is known).
    pub(crate) metrics: Option<OperatorMetrics>,
}

impl<K: StateKey + Data, N: Namespace, L> KeyedRunner<K, N, L> {
    /// Sets up the backend of this worker's key-group range (restored from the
    /// snapshot when the job restores) and its timers, then `open` builds the logic
    /// (declaring its state). Returns the runner, the records the snapshot caught in
    /// flight, and the task's restored snapshot (for operator state).
    #[allow(clippy::type_complexity)]
    pub(crate) fn start<T: Data>(
        config: &crate::JobConfig,
        checkpoints: Option<(&Rc<WorkerCheckpoints>, &TaskIdentity)>,
        index: u32,
        peers: u32,
        open: impl FnOnce(&AnyBackend<K>, &QueryRegistry<K>) -> Result<L, RuntimeError>,
    ) -> Result<(Self, Stash<K, T>, Option<OperatorSnapshotMeta>), RuntimeError> {
        let max_p = config.max_parallelism;
        let range = key_group_range_for_operator(max_p, peers, index)?;
        let backend_config = KeyedBackendConfig {
            max_parallelism: max_p,
            key_group_range: range,
            key_serializer: SerdeSerializer::<K>::arc(),
        };
        let mut task = None;
        let mut restored_meta = None;
        let backend = match checkpoints {
            None => config.backend.create(backend_config)?,
            Some((ctx, identity)) => {
                let (id, restored) = ctx.resolve(identity);
                let start = ctx.coordinator.start();
                task = Some(KeyedTask {
                    id,
                    ctx: ctx.clone(),
                    snapshotted: start.saturating_sub(1),
                    notified: 0,
                });
                let backend = match (&restored, &ctx.restored) {
                    (Some(meta), Some(r)) if !meta.keyed.is_empty() => config
                        .backend
                        .restore(backend_config, r.storage.as_ref(), &meta.keyed)
                        .map_err(|e| r.error(e))?,
                    _ => config.backend.create(backend_config)?,
                };
                restored_meta = restored;
                backend
            }
        };
        let registry = QueryRegistry::new(config.queries.is_some(), max_p, peers);
        let logic = open(&backend, &registry)?;
        let queries = registry.finish(
            config.queries.as_ref(),
            index,
            task.as_ref().map(|t| t.id.uid.clone()),
        )?;
        let timers = TimerState::open(&backend)?;
        let mut stash: Stash<K, T> = BTreeMap::new();
        if let Some(t) = &task {
            load_inflight(&backend, index, t.snapshotted + 1, &mut stash)?;
        }
        Ok((
            KeyedRunner {
                backend,
                timers,
                logic,
                watermark: i64::MIN,
                clock: config.clock.clone(),
                task,
                queries,
                metrics: None,
            },
            stash,
            restored_meta,
        ))
    }
    /// Answers a slice of the look-ups waiting for this instance (between record
    /// batches: never while a record or timer runs); returns whether more wait.
    pub(crate) fn serve_queries(&self) -> bool {
        match &self.queries {
            Some(q) => q.serve(
                &self.backend,
                self.snapshotted().unwrap_or(0),
                self.watermark,
            ),
            None => false,
        }
    }

    /// Runs one record of `key`.
    pub(crate) fn element<IN, OUT>(
        &mut self,
        key: &K,
        key_group: u32,
        ts: i64,
        value: IN,
        out: &mut Vec<(i64, Tagged<OUT>)>,
    ) -> Result<(), RuntimeError>
    where
        L: KeyedLogic<K, N, IN, OUT>,
    {
        // `key_by` computed the key group to route the record: not again here.
        self.backend
            .set_current_key_in_group(key.clone(), key_group)?;
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

    /// Runs `records` in order; after a failure (recorded in `errors`) the rest are
    /// dropped.
    pub(crate) fn elements<IN, OUT>(
        &mut self,
        records: Vec<KeyedRecord<K, IN>>,
        errors: &crate::ErrorSlot,
        out: &mut Vec<(i64, Tagged<OUT>)>,
    ) where
        L: KeyedLogic<K, N, IN, OUT>,
    {
        for (ts, (_, key_group, key, value)) in records {
            if errors.borrow().is_some() {
                break;
            }
            if let Err(e) = self.element(&key, key_group, ts, value, out) {
                record_error(errors, e);
            }
        }
    }

    /// Fires every timer of `domain` due at `limit`, in timestamp order, handing
    /// output to `flush` (for `epoch`) whenever [`FLUSH_EVERY`] records are pending.
    pub(crate) fn fire<IN, OUT>(
        &mut self,
        domain: TimeDomain,
        limit: i64,
        epoch: u64,
        out: &mut Vec<(i64, Tagged<OUT>)>,
        flush: Flush<'_, OUT>,
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
            if out.len() >= FLUSH_EVERY {
                flush(out, epoch);
            }
        }
        Ok(())
    }

    /// Before the records of `epoch`: raises the watermark to the one before it,
    /// firing the event-time timers it passes, their output going to `output` at
    /// `emit_at` every [`FLUSH_EVERY`] records; a failure is recorded in `errors`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn enter_epoch<IN, OUT: 'static>(
        &mut self,
        epoch: u64,
        emit_at: Time,
        cap: &Capability<Time>,
        output: &mut TaggedOutput<'_, OUT>,
        out: &mut Vec<(i64, Tagged<OUT>)>,
        errors: &crate::ErrorSlot,
    ) where
        L: KeyedLogic<K, N, IN, OUT>,
    {
        let metrics = self.metrics.clone();
        let flush = &mut |o: &mut Vec<(i64, Tagged<OUT>)>, e: u64| {
            if let Some(m) = &metrics {
                m.output(o.len());
            }
            let at = time_at(e.max(cap.time().outer), emit_at.inner);
            output.session(&cap.delayed(&at)).give_iterator(o.drain(..));
        };
        if let Err(e) = self.advance_watermark::<IN, OUT>(watermark_before(epoch), out, flush) {
            record_error(errors, e);
        }
    }

    /// Raises the watermark (never lowers it) and fires the event-time timers it
    /// passes (output to `flush` as they go; see [`KeyedRunner::fire`]).
    ///
    /// Their output goes out in the epoch after the *previous* watermark: Flink emits
    /// what a watermark's timers produce before it forwards the watermark, so
    /// downstream sees a window's result (stamped with the window's last millisecond)
    /// before its own timers for that watermark fire, and never as late. In the epoch
    /// of the new watermark a downstream window would drop it whenever the watermark
    /// jumped past the window's end.
    pub(crate) fn advance_watermark<IN, OUT>(
        &mut self,
        watermark: i64,
        out: &mut Vec<(i64, Tagged<OUT>)>,
        flush: Flush<'_, OUT>,
    ) -> Result<(), RuntimeError>
    where
        L: KeyedLogic<K, N, IN, OUT>,
    {
        if watermark > self.watermark {
            let epoch = epoch_after(self.watermark);
            self.watermark = watermark;
            self.fire::<IN, OUT>(TimeDomain::EventTime, watermark, epoch, out, flush)?;
            if !out.is_empty() {
                flush(out, epoch);
            }
        }
        Ok(())
    }
}

/// The restored records in flight of a keyed operator, all to be processed first
/// (epoch 0), in their order (by epoch, then arrival): records read after the restore
/// may carry a lower epoch than these (a restored source whose splits moved can run at
/// a lower watermark) and must not overtake them (see the `checkpoint` module docs).
/// The broadcast operator keeps their epochs instead: there a keyed record must see
/// the broadcast state of its own epoch.
fn inflight_first<K, T>(restored: Stash<K, T>) -> Stash<K, T> {
    let mut first: Stash<K, T> = BTreeMap::new();
    for ((_, interval), records) in restored {
        first.entry((0, interval)).or_default().extend(records);
    }
    first
}

/// Puts records the restored snapshot caught in flight back into the stash, in
/// interval `interval` (the first of this run), and clears their state.
fn load_inflight<K: StateKey + Data, T: Data>(
    backend: &AnyBackend<K>,
    index: u32,
    interval: u64,
    stash: &mut Stash<K, T>,
) -> Result<(), RuntimeError> {
    let state = backend.list_state::<VoidNamespace, InflightEntry>(&inflight_descriptor())?;
    let ser = SerdeSerializer::<T>::new();
    for key in backend.keys(INFLIGHT_STATE, &VoidNamespace)? {
        backend.set_current_key(key.clone())?;
        let kg = backend.key_group_of(&key)?;
        for (epoch, ts, bytes) in state.get()? {
            let value = ser
                .deserialize(&bytes)
                .map_err(|e| flowstate_core::StateError::serialization(INFLIGHT_STATE, e))?;
            stash
                .entry((epoch, interval))
                .or_default()
                .push((ts, (index, kg, key.clone(), value)));
        }
        state.clear()?;
    }
    Ok(())
}

impl<K: StateKey + Data, N: Namespace, L> KeyedRunner<K, N, L> {
    /// Takes the snapshots of every checkpoint up to `through` not taken yet: the
    /// synchronous part here (stashed records of those checkpoints into `_inflight`,
    /// the backend's snapshot, `operator`'s state holding `held_bytes` of other
    /// held-back records), the files on another thread.
    pub(crate) fn checkpoint_through<T: Data>(
        &mut self,
        through: u64,
        stash: &Stash<K, T>,
        operator: Option<&OperatorStateStore>,
        held_bytes: u64,
    ) -> Result<(), RuntimeError> {
        let Some(task) = self.task.as_mut() else {
            return Ok(());
        };
        while task.snapshotted < through {
            task.snapshotted += 1;
            let id = task.snapshotted;
            let started = Instant::now();
            let backend = &self.backend;
            let mut keys = Vec::new();
            let mut inflight_bytes = held_bytes;
            // A failure here (e.g. RocksDB cannot write its checkpoint: full disk)
            // declines this checkpoint, which counts against the tolerable failures
            // like a failed upload; it does not fail the job.
            let inflight =
                backend.list_state::<VoidNamespace, InflightEntry>(&inflight_descriptor())?;
            let taken =
                (|| -> Result<(Option<KeyedWrite>, Option<OperatorSnapshot>), RuntimeError> {
                    crate::failpoint::error("sync-snapshot").map_err(RuntimeError::Checkpoint)?;
                    let ser = SerdeSerializer::<T>::new();
                    for ((epoch, interval), records) in stash {
                        if *interval > id {
                            continue;
                        }
                        for (ts, (_, _, key, value)) in records {
                            let mut bytes = Vec::new();
                            ser.serialize_into(value, &mut bytes).map_err(|e| {
                                flowstate_core::StateError::serialization(INFLIGHT_STATE, e)
                            })?;
                            backend.set_current_key(key.clone())?;
                            inflight_bytes += bytes.len() as u64;
                            inflight.add((*epoch, *ts, bytes))?;
                            keys.push(key.clone());
                        }
                    }
                    let keyed: KeyedWrite = match task.ctx.coordinator.kind_of(id) {
                        SnapshotKind::Checkpoint => {
                            let snap = backend.snapshot(id)?;
                            Box::new(move |storage, path| snap.write(storage, path))
                        }
                        SnapshotKind::Savepoint => {
                            let snap = backend.savepoint()?;
                            Box::new(move |storage, path| snap.write(storage, path))
                        }
                        SnapshotKind::NativeSavepoint => {
                            let dir = format!("{}/sst", task.ctx.coordinator.location(id));
                            let snap = backend.native_savepoint(&dir)?;
                            Box::new(move |storage, path| snap.write(storage, path))
                        }
                    };
                    let op = operator.map(OperatorStateStore::snapshot).transpose()?;
                    crate::metrics::backend_properties(
                        &task.id.uid,
                        task.ctx.index as usize,
                        backend.kind_name(),
                        &backend.properties(),
                    );
                    Ok((Some(keyed), op))
                })();
            // The stashed records stay in the stash; their copies in state go either way.
            for key in keys {
                backend.set_current_key(key)?;
                inflight.clear()?;
            }
            task.ctx
                .snapshot_taken(id, &task.id, taken, started, inflight_bytes);
        }
        Ok(())
    }

    /// The checkpoint to cut at the start of an activation, before any record is
    /// processed: the one before the input frontier's interval; once the input has
    /// ended, the one before the final checkpoint. (The frontier can jump from an
    /// earlier interval straight to empty: those checkpoints must still be cut before
    /// records of later intervals are processed and before the end of input fires
    /// every timer; records of theirs still waiting go into `_inflight`.)
    pub(crate) fn cut_before(&self, clocks: Option<(u64, u64)>) -> Option<u64> {
        match clocks {
            Some((_, interval)) => Some(interval.saturating_sub(1)),
            None => self.final_checkpoint().map(|f| f.saturating_sub(1)),
        }
    }

    /// Once the input has ended (no frontier) and a final checkpoint is declared, what
    /// is emitted belongs to the final checkpoint's interval: moves the capability
    /// there, so output of records processed after an earlier cut is never committed
    /// with that earlier checkpoint.
    pub(crate) fn hold_for_final(&self, cap: &mut Capability<Time>, clocks: Option<(u64, u64)>) {
        if clocks.is_none()
            && let Some(f) = self.final_checkpoint()
        {
            let at = *cap.time();
            if at.interval() < f {
                cap.downgrade(&time(at.outer, f));
            }
        }
    }

    /// Tells the backend about checkpoints the worker saw complete.
    pub(crate) fn deliver_completions(&mut self) -> Result<(), RuntimeError> {
        if let Some(task) = self.task.as_mut() {
            let done = task.ctx.notified.get();
            if done > task.notified {
                task.notified = done;
                self.backend.notify_checkpoint_complete(done)?;
            }
        }
        Ok(())
    }

    /// The newest checkpoint this operator snapshotted (`None`: no checkpointing).
    pub(crate) fn snapshotted(&self) -> Option<u64> {
        self.task.as_ref().map(|t| t.snapshotted)
    }

    /// The event-time watermark the operator has reached.
    pub(crate) fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The checkpoint ids this operator snapshots at the end of its input.
    pub(crate) fn final_checkpoint(&self) -> Option<u64> {
        self.task.as_ref()?.ctx.coordinator.final_id()
    }
    /// The end of an operator activation, once the epochs that were ready are done:
    /// the frontier's own watermark and the due processing-time timers fire, pending
    /// output goes out, and the capability is held at the earliest time still to come
    /// (the frontier's `least` time, or a `stashed` epoch). Returns `false` once everything is
    /// done (input ended, every event-time timer fired): the caller takes the final
    /// checkpoint and drops its capability. Processing-time timers still pending then
    /// are dropped (a bounded input ended).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn end_activation<IN, OUT: 'static>(
        &mut self,
        least: Option<Time>,
        stashed: Option<u64>,
        errors: &crate::ErrorSlot,
        cap: &mut Capability<Time>,
        out: &mut Vec<(i64, Tagged<OUT>)>,
        output: &mut TaggedOutput<'_, OUT>,
        activator: &Activator,
    ) -> bool
    where
        L: KeyedLogic<K, N, IN, OUT>,
    {
        // The earliest time still to come: the frontier's least time, not past a
        // stashed batch (records waiting for a checkpoint's alignment must not turn
        // late). Its round is the input's: flow control sees what is still queued.
        let hold = least.map(|t| time_at(stashed.map_or(t.outer, |s| s.min(t.outer)), t.inner));
        let at = *cap.time();
        let emit_at = hold.map_or(at, |h| {
            time_at(h.outer.max(at.outer), h.inner.max(at.inner))
        });
        let metrics = self.metrics.clone();
        if errors.borrow().is_none() {
            let flush = &mut |o: &mut Vec<(i64, Tagged<OUT>)>, e: u64| {
                if let Some(m) = &metrics {
                    m.output(o.len());
                }
                let at = time_at(e.max(cap.time().outer), emit_at.inner);
                output.session(&cap.delayed(&at)).give_iterator(o.drain(..));
            };
            let wm = hold.map_or(i64::MAX, |h| watermark_before(h.outer));
            if let Err(e) = self.advance_watermark::<IN, OUT>(wm, out, flush) {
                record_error(errors, e);
            }
            let now = self.clock.now_ms();
            if let Err(e) =
                self.fire::<IN, OUT>(TimeDomain::ProcessingTime, now, emit_at.outer, out, flush)
            {
                record_error(errors, e);
            }
            if let Err(e) = self.deliver_completions() {
                record_error(errors, e);
            }
        }
        if !out.is_empty() {
            if let Some(m) = &metrics {
                m.output(out.len());
            }
            output
                .session(&cap.delayed(&emit_at))
                .give_iterator(out.drain(..));
        }
        match hold {
            Some(h) => {
                let at = *cap.time();
                let next = time_at(h.outer.max(at.outer), h.inner.max(at.inner));
                if next != at {
                    cap.downgrade(&next);
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

/// Registers a keyed operator of `kind` on `stream`'s worker and starts it once the
/// job is described (see [`start_later`]): [`KeyedRunner::start`] with `open`, then
/// `then` with the runner, its restored stash, its restored snapshot and the worker's
/// checkpointing; a failure is recorded and leaves `failed()`.
#[allow(clippy::type_complexity)]
pub(crate) fn start_keyed_later<K, N, L, T, R>(
    stream: &DataStream<'_, (u32, u32, K, T)>,
    kind: &str,
    open: impl FnOnce(&AnyBackend<K>, &QueryRegistry<K>) -> Result<L, RuntimeError> + 'static,
    then: impl FnOnce(
        KeyedRunner<K, N, L>,
        Stash<K, T>,
        Option<OperatorSnapshotMeta>,
        Option<&Rc<WorkerCheckpoints>>,
    ) -> Result<R, RuntimeError>
    + 'static,
    failed: impl FnOnce() -> R + 'static,
) -> (Option<TaskRef>, Started<R>)
where
    K: StateKey + Data,
    N: Namespace,
    L: 'static,
    T: Data,
    R: 'static,
{
    let (index, peers) = (stream.scope.index() as u32, stream.scope.peers() as u32);
    let identity = stream.checkpoints.as_ref().map(|c| c.register(kind, false));
    let (config, ctx, task) = (
        stream.config.clone(),
        stream.checkpoints.clone(),
        identity.clone(),
    );
    let errors = stream.errors.clone();
    let started = start_later(stream.checkpoints.as_ref(), move || {
        let task = ctx.as_ref().zip(task.as_deref());
        let started = KeyedRunner::<K, N, L>::start::<T>(&config, task, index, peers, open)
            .and_then(|(r, stash, meta)| then(r, stash, meta, ctx.as_ref()));
        started.unwrap_or_else(|e| {
            record_error(&errors, e);
            failed()
        })
    });
    (identity, started)
}

/// Builds the keyed operator: records exchanged by key group to the worker that owns
/// it, processed in epoch order by `L` (built per worker by `open`), snapshotted at
/// every checkpoint.
pub(crate) fn keyed_operator<'scope, K, T, N, OUT, L>(
    stream: KeyedStream<'scope, K, T>,
    name: &str,
    open: impl FnOnce(&AnyBackend<K>, &QueryRegistry<K>) -> Result<L, RuntimeError> + 'static,
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
    let (identity, started) = start_keyed_later::<K, N, L, T, _>(
        &stream,
        "keyed",
        open,
        |r, stash, _, _| Ok((Some(r), inflight_first(stash))),
        || (None, BTreeMap::new()),
    );
    let op_errors = errors.clone();
    // Metrics name the operator by its uid (or derived id); without checkpoints it
    // has none, and its name stands in.
    let op_identity = identity.clone();
    let op_name = name.to_string();
    let raw = stream
        .inner
        .clone()
        .unary_frontier::<CapacityContainerBuilder<Vec<(i64, Tagged<OUT>)>>, _, _, _>(
            Exchange::new(|(_, (target, _, _, _)): &KeyedRecord<K, T>| *target as u64),
            name,
            move |cap, info| {
                let sync_activator = scope.worker().sync_activator_for(info.address.to_vec());
                let activator = scope.activator_for(info.address);
                let mut cap = Some(cap);
                let mut runner = None;
                let mut stash: Stash<K, T> = BTreeMap::new();
                let mut out: Vec<(i64, Tagged<OUT>)> = Vec::new();
                let errors = op_errors;
                move |(input, frontier), output| {
                    // Started (restored) once the job was described: see `start_later`.
                    if let Some((r, restored)) = started.borrow_mut().take() {
                        runner = r;
                        stash = restored;
                        if let Some(r) = runner.as_mut() {
                            let id = op_identity
                                .as_ref()
                                .map_or_else(|| op_name.clone(), |i| i.id());
                            r.metrics = Some(OperatorMetrics::new(&id));
                        }
                        if let Some(q) = runner.as_ref().and_then(|r| r.queries.as_ref()) {
                            q.set_activator(sync_activator.clone());
                        }
                    }
                    // Look-ups first, between the batches of two activations.
                    if runner.as_ref().is_some_and(|r| r.serve_queries()) {
                        activator.activate();
                    }
                    let clocks = frontier_clocks(&frontier.frontier());
                    let least = frontier_least(&frontier.frontier());
                    input.for_each(|stamp, data| {
                        let t = crate::time::stamp_time(stamp.stamp().elements());
                        stash
                            .entry((t.outer, t.interval()))
                            .or_default()
                            .append(data);
                    });
                    let (Some(r), Some(c)) = (runner.as_mut(), cap.as_mut()) else {
                        stash.clear();
                        cap = None;
                        return;
                    };
                    let failed = |errors: &crate::ErrorSlot| errors.borrow().is_some();
                    // Checkpoints whose records have all arrived, before any record of
                    // a later one.
                    if let Some(through) = r.cut_before(clocks)
                        && !failed(&errors)
                        && let Err(e) = r.checkpoint_through(through, &stash, None, 0)
                    {
                        record_error(&errors, e);
                    }
                    r.hold_for_final(c, clocks);
                    let (ready_epoch, ready_interval) = clocks.unwrap_or((u64::MAX, u64::MAX));
                    let current = least.map_or(c.time().inner, |t| t.inner);
                    // Epochs nothing earlier can precede any more, in order, up to the
                    // first batch of a checkpoint interval still being aligned: a batch
                    // that arrived ahead of a checkpoint holds back every later epoch (and
                    // the watermark, in `end_activation`), as Flink's aligned channels
                    // hold back their watermarks.
                    let ready: Vec<(u64, u64)> = stash
                        .keys()
                        .take_while(|(e, i)| *e <= ready_epoch && *i <= ready_interval)
                        .copied()
                        .collect();
                    for key in ready {
                        let Some(records) = stash.remove(&key) else {
                            continue;
                        };
                        let epoch = key.0;
                        let at = *c.time();
                        let emit_at = time_at(epoch.max(at.outer), current);
                        if !failed(&errors) {
                            r.enter_epoch::<T, OUT>(epoch, emit_at, c, output, &mut out, &errors);
                            if let Some(m) = &r.metrics {
                                m.input(records.len());
                            }
                            r.elements(records, &errors, &mut out);
                        }
                        if let Some(m) = &r.metrics {
                            m.output(out.len());
                        }
                        output
                            .session(&c.delayed(&emit_at))
                            .give_iterator(out.drain(..));
                    }
                    let stashed = stash.keys().map(|(e, _)| *e).min();
                    if !r.end_activation::<T, OUT>(
                        least, stashed, &errors, c, &mut out, output, &activator,
                    ) {
                        if !failed(&errors)
                            && let Some(last) = r.final_checkpoint()
                            && let Err(e) = r.checkpoint_through(last, &stash, None, 0)
                        {
                            record_error(&errors, e);
                        }
                        cap = None;
                    }
                }
            },
        );
    DataStream::from_tagged(raw, &stream, identity)
}

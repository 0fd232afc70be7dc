//! The broadcast state pattern: a broadcast stream connected to a keyed stream.
//!
//! Every worker receives every broadcast record and applies it to its broadcast state
//! (a map per [`MapStateDescriptor`], kept in the worker's operator state store, so it
//! snapshots as Flink's broadcast state does). Keyed records see that state through
//! [`ReadOnlyBroadcastState`], which has no writing methods: writing from the keyed
//! side does not compile, because only the broadcast side may change what must stay
//! identical on every worker.
//!
//! ```compile_fail
//! # use flowstate_runtime::ReadOnlyBroadcastState;
//! fn keyed_side_writes(rules: &ReadOnlyBroadcastState<String, u64>) {
//!     rules.put("limit".to_string(), 10); // no such method: the keyed side only reads
//! }
//! ```
//!
//! **Order.** Flink gives no order between the two inputs. Here, on the watermark epochs
//! of [`crate::keyed`], a broadcast record takes effect at epoch `max(epoch it was sent
//! in, its event time)`, and every broadcast record effective at epoch `e` or earlier
//! is applied before any keyed record of epoch `e`, on every worker. So a rule with
//! event time `t` applies to keyed records sent once their watermark reached `t - 1`,
//! all workers see the same state for the same keyed record, and runs repeat exactly. A broadcast source without event
//! time stays in epoch 0 until it ends, so its whole input is applied first. Within an
//! epoch, records are applied in the order (sending worker, position there): the same
//! on every worker. Read a rules source on one worker ([`crate::Job::source_vec_unsplit`])
//! to have them applied in input order, as Flink users set the rules source's
//! parallelism to 1.
//!
//! **Checkpoints.** Each instance snapshots its keyed side as a keyed operator does
//! (state, timers, keyed records held back in `_inflight`) and its broadcast state
//! with two more broadcast states: the broadcast records it held back for later
//! epochs (`_broadcast_inflight`) and the watermark its keyed side had reached
//! (`_broadcast_watermark`). Instances snapshot at different watermarks, so their
//! copies differ in which broadcast records are applied and which held back. Restored
//! at the same parallelism, each instance takes its own copy (exact). Rescaled, every
//! instance takes the copy with the lowest watermark and replays the rest, so no key's
//! held-back records meet a broadcast state newer than their epoch; output that
//! `process_broadcast_element` emitted between the instances' watermarks is then
//! emitted again (per instance, as such output always is).

use std::collections::BTreeMap;

use flowstate_core::operator::OperatorStateStore;
use flowstate_core::state::{StateKey, VoidNamespace};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::vec::Broadcast;

use crate::keyed::{
    Emitter, KeyedCtx, KeyedLogic, KeyedRecord, Outbox, Stash, flush_to, keyed_binary,
    start_keyed_later,
};
use crate::process::{OpenContext, ProcessContext};
use crate::stream::{Data, DataStream, KeyedStream};
use crate::time::{Time, frontier_clocks, frontier_least, time_at};
use crate::timers::TimeDomain;
use crate::{RuntimeError, record_error};

mod context;
mod snapshot;

pub use context::{
    BroadcastContext, KeyedBroadcastProcessFunction, ReadOnlyBroadcastState, ReadOnlyContext,
};
use snapshot::{checkpoint_through, restore_broadcast};

/// A broadcast record: event time, (sending worker, run generation, sequence number
/// there, value). The generation (the run's first checkpoint id) keeps records a
/// snapshot held back ahead of those sent after the restore, as they were sent.
type BroadcastRecord<B> = (i64, (u32, u64, u64, B));

/// Broadcast records a snapshot held back, with the epoch each takes effect in.
type HeldBack<B> = Vec<(u64, BroadcastRecord<B>)>;

/// Broadcast records waiting for their epoch, by (epoch, checkpoint interval).
type BroadcastStash<B> = BTreeMap<(u64, u64), Vec<BroadcastRecord<B>>>;

/// A stream whose records go to every worker; connect it to a keyed stream.
pub struct BroadcastStream<'scope, B> {
    /// Records tagged with (sending worker, generation, sequence number there): every
    /// receiver applies one epoch's records in that order, so all end in the same
    /// state.
    inner: StreamVec<'scope, Time, BroadcastRecord<B>>,
}

impl<'scope, T: Data> DataStream<'scope, T> {
    /// Sends every record to every worker (Flink's `broadcast(descriptor)`; the states
    /// are declared where they are used, in [`BroadcastContext::broadcast_state`]).
    pub fn broadcast(self) -> BroadcastStream<'scope, T> {
        let origin = self.scope.index() as u32;
        let generation = self
            .checkpoints
            .as_ref()
            .map_or(0, |c| c.coordinator.start());
        let mut seq = 0u64;
        let tagged = crate::stream::flat_map_stream(&self.inner, "BroadcastOrder", move |v| {
            seq += 1;
            Some((origin, generation, seq, v))
        });
        BroadcastStream {
            inner: tagged.broadcast(),
        }
    }
}

/// A keyed stream connected to a broadcast stream.
pub struct BroadcastConnectedStream<'scope, K, T, B> {
    keyed: KeyedStream<'scope, K, T>,
    broadcast: BroadcastStream<'scope, B>,
}

impl<'scope, K: Data + StateKey, T: Data> KeyedStream<'scope, K, T> {
    /// Connects a broadcast stream; process both with a
    /// [`KeyedBroadcastProcessFunction`].
    pub fn connect<B: Data>(
        self,
        broadcast: BroadcastStream<'scope, B>,
    ) -> BroadcastConnectedStream<'scope, K, T, B> {
        BroadcastConnectedStream {
            keyed: self,
            broadcast,
        }
    }
}

/// The keyed side's logic plus the worker's broadcast state.
struct BroadcastLogic<F, B> {
    function: F,
    store: OperatorStateStore,
    _broadcast: std::marker::PhantomData<fn(B)>,
}

impl<K, IN, B: 'static, OUT, F> KeyedLogic<K, VoidNamespace, IN, OUT> for BroadcastLogic<F, B>
where
    K: StateKey,
    F: KeyedBroadcastProcessFunction<K, IN, B, OUT>,
{
    fn element(
        &mut self,
        value: IN,
        ctx: &mut KeyedCtx<'_, K, VoidNamespace, OUT>,
    ) -> Result<(), RuntimeError> {
        let mut c = ReadOnlyContext {
            inner: ProcessContext::new(ctx, None),
            store: &self.store,
        };
        self.function.process_element(value, &mut c)
    }
    fn timer(
        &mut self,
        ts: i64,
        _namespace: VoidNamespace,
        domain: TimeDomain,
        ctx: &mut KeyedCtx<'_, K, VoidNamespace, OUT>,
    ) -> Result<(), RuntimeError> {
        let mut c = ReadOnlyContext {
            inner: ProcessContext::new(ctx, Some(domain)),
            store: &self.store,
        };
        self.function.on_timer(ts, &mut c)
    }
}

impl<'scope, K, T, B> BroadcastConnectedStream<'scope, K, T, B>
where
    K: Data + StateKey,
    T: Data,
    B: Data,
{
    /// Runs `function` on both inputs.
    pub fn process<OUT: Data, F>(self, mut function: F) -> DataStream<'scope, OUT>
    where
        F: KeyedBroadcastProcessFunction<K, T, B, OUT>,
    {
        let stream = self.keyed.inner;
        let errors = stream.errors.clone();
        let scope = stream.scope;
        let (index, peers) = (scope.index() as u32, scope.peers() as u32);
        let (identity, started) = start_keyed_later::<K, VoidNamespace, _, T, _>(
            &stream,
            "broadcast",
            move |b, queries| {
                function.open(&OpenContext::new(b, queries))?;
                Ok(BroadcastLogic {
                    function,
                    store: OperatorStateStore::new(index),
                    _broadcast: std::marker::PhantomData,
                })
            },
            move |mut r, keyed_stash, meta, ctx| {
                let mut bcast_stash: BroadcastStash<B> = BTreeMap::new();
                if let Some(ctx) = ctx {
                    let (store, held) = restore_broadcast::<B>(ctx, meta.as_ref(), index, peers)?;
                    r.logic.store = store;
                    for (epoch, rec) in held {
                        bcast_stash
                            .entry((epoch, ctx.coordinator.start()))
                            .or_default()
                            .push(rec);
                    }
                }
                Ok((Some(r), keyed_stash, bcast_stash))
            },
            || (None, BTreeMap::new(), BTreeMap::new()),
        );
        let op_errors = errors.clone();
        let op_identity = identity.clone();
        // The operator's name, and its metrics' without checkpoints (no uid then).
        let name = "KeyedBroadcastProcess";
        let (main, side) = keyed_binary(
            stream.inner.clone(),
            self.broadcast.inner,
            Exchange::new(|(_, (target, _, _, _)): &KeyedRecord<K, T>| *target as u64),
            Pipeline,
            name,
            move |mut cap, info| {
                let sync_activator = scope.worker().sync_activator_for(info.address.to_vec());
                let activator = scope.activator_for(info.address);
                let mut runner = None;
                let mut keyed_stash: Stash<K, T> = BTreeMap::new();
                let mut bcast_stash: BroadcastStash<B> = BTreeMap::new();
                let mut out: Outbox<OUT> = Outbox::new();
                let errors = op_errors;
                move |(keyed_in, keyed_frontier), (bcast_in, bcast_frontier), output| {
                    // Started (restored) once the job was described.
                    if let Some((r, k, b)) = started.borrow_mut().take() {
                        runner = r;
                        keyed_stash = k;
                        bcast_stash = b;
                        if let Some(r) = runner.as_mut() {
                            r.count_as(op_identity.as_ref(), name);
                        }
                        if let Some(q) = runner.as_ref().and_then(|r| r.queries.as_ref()) {
                            q.set_activator(sync_activator.clone());
                        }
                    }
                    // Look-ups first, between the batches of two activations.
                    if runner.as_ref().is_some_and(|r| r.serve_queries()) {
                        activator.activate();
                    }
                    let ck = frontier_clocks(&keyed_frontier.frontier());
                    let cb = frontier_clocks(&bcast_frontier.frontier());
                    let (fk, fb) = (ck.map(|c| c.0), cb.map(|c| c.0));
                    keyed_in.for_each(|stamp, data| {
                        let t = crate::time::stamp_time(stamp.stamp().elements());
                        keyed_stash
                            .entry((t.outer, t.interval()))
                            .or_default()
                            .append(data);
                    });
                    bcast_in.for_each(|stamp, data| {
                        let t = crate::time::stamp_time(stamp.stamp().elements());
                        // A broadcast record takes effect at the epoch of its own
                        // event time, or when it arrives if that is later.
                        for rec in data.drain(..) {
                            let at = t.outer.max(u64::try_from(rec.0).unwrap_or(0));
                            bcast_stash.entry((at, t.interval())).or_default().push(rec);
                        }
                    });
                    let (Some(r), Some(c)) = (runner.as_mut(), cap.as_mut()) else {
                        keyed_stash.clear();
                        bcast_stash.clear();
                        cap = None;
                        return;
                    };
                    let failed = || errors.borrow().is_some();
                    let both = match (ck, cb) {
                        (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.min(b.1))),
                        (a, b) => a.or(b),
                    };
                    // Checkpoints whose records have all arrived on both inputs,
                    // before any record of a later one.
                    if let Some(through) = r.cut_before(both)
                        && !failed()
                        && let Err(e) = checkpoint_through(r, through, &keyed_stash, &bcast_stash)
                    {
                        record_error(&errors, e);
                    }
                    r.hold_for_final(c, both);
                    let ready_interval = both.map_or(u64::MAX, |b| b.1);
                    // The least time either input may still bring.
                    let least = frontier_least(
                        &keyed_frontier
                            .frontier()
                            .iter()
                            .chain(bcast_frontier.frontier().iter())
                            .copied()
                            .collect::<Vec<_>>(),
                    );
                    let current = least.map_or(c.time().inner, |t| t.inner);
                    loop {
                        // An epoch is processed once complete on the broadcast side
                        // (no broadcast record of it or earlier can still come) and
                        // no earlier keyed record can come; its broadcast records
                        // are applied whole, in canonical order, before the keyed
                        // records of the same epoch. A batch of a checkpoint
                        // interval still being aligned holds back everything later.
                        let next_b = bcast_stash.first_key_value().map(|(k, _)| *k);
                        let next_k = keyed_stash.first_key_value().map(|(k, _)| *k);
                        let (key, is_bcast) = match (next_b, next_k) {
                            (Some(b), Some(k)) if b.0 <= k.0 => (b, true),
                            (_, Some(k)) => (k, false),
                            (Some(b), None) => (b, true),
                            (None, None) => break,
                        };
                        let (epoch, interval) = key;
                        let ready = interval <= ready_interval
                            && fb.is_none_or(|b| epoch < b)
                            && fk.is_none_or(|k| epoch <= k);
                        if !ready {
                            break;
                        }
                        let at = *c.time();
                        let emit_at = time_at(epoch.max(at.outer), current);
                        if !failed() {
                            r.enter_epoch::<T, OUT>(epoch, emit_at, c, output, &mut out, &errors);
                        }
                        let flush = &mut flush_to(r.metrics.clone(), c, emit_at, output);
                        if is_bcast {
                            let mut batch = bcast_stash.remove(&key).unwrap_or_default();
                            batch.sort_by_key(|(_, (origin, generation, seq, _))| {
                                (*origin, *generation, *seq)
                            });
                            if let Some(m) = &r.metrics {
                                m.input(batch.len());
                            }
                            for (ts, (_, _, _, value)) in batch {
                                if failed() {
                                    break;
                                }
                                let mut ctx = BroadcastContext {
                                    timestamp: ts,
                                    emit: Emitter { out: &mut out },
                                    store: &r.logic.store,
                                };
                                if let Err(e) =
                                    r.logic.function.process_broadcast_element(value, &mut ctx)
                                {
                                    record_error(&errors, e);
                                }
                            }
                        } else {
                            let records = keyed_stash.remove(&key).unwrap_or_default();
                            if let Some(m) = &r.metrics {
                                m.input(records.len());
                            }
                            r.elements(records, epoch, &errors, &mut out, flush);
                        }
                        flush(&mut out, epoch);
                    }
                    let stashed = [
                        keyed_stash.keys().next().map(|k| k.0),
                        bcast_stash.keys().next().map(|k| k.0),
                    ]
                    .into_iter()
                    .flatten()
                    .min();
                    if !r.end_activation::<T, OUT>(
                        least, stashed, &errors, c, &mut out, output, &activator,
                    ) {
                        if !failed()
                            && let Some(last) = r.final_checkpoint()
                            && let Err(e) = checkpoint_through(r, last, &keyed_stash, &bcast_stash)
                        {
                            record_error(&errors, e);
                        }
                        cap = None;
                    }
                }
            },
        );
        DataStream::from_keyed(main, side, &stream, identity)
    }
}

//! A keyed operator instance at run time: its backend, timers and logic; records and
//! timers in epoch order; its part in checkpoints (the records a snapshot caught in
//! the stash included).

use super::*;
use smallvec::SmallVec;

/// Keyed state holding the records a snapshot caught waiting in the stash:
/// per key, `(epoch, event time, serialized value)`.
const INFLIGHT_STATE: &str = "_inflight";

type InflightEntry = (u64, i64, Vec<u8>);

fn inflight_descriptor() -> ListStateDescriptor<InflightEntry> {
    ListStateDescriptor::new(INFLIGHT_STATE)
}

/// How many records' keys the keyed operator prefetches at a time: enough for their
/// cache misses to overlap, few enough that their entries stay in cache until used.
const PREFETCH_AHEAD: usize = 32;

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
    /// Counts the operator's records from now on under its uid (or derived id); an
    /// operator without checkpoints has none, and `name` stands in.
    pub(crate) fn count_as(&mut self, identity: Option<&TaskRef>, name: &str) {
        let id = identity.map_or_else(|| name.to_string(), |i| i.id());
        self.metrics = Some(OperatorMetrics::new(&id));
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
        out: &mut Outbox<OUT>,
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

    /// Runs `records` of `epoch` in order, handing output to `flush` whenever
    /// [`FLUSH_EVERY`] records are pending (so the output buffer stays in cache); after
    /// a failure (recorded in `errors`) the rest are dropped.
    pub(crate) fn elements<IN, OUT>(
        &mut self,
        records: Vec<KeyedRecord<K, IN>>,
        epoch: u64,
        errors: &crate::ErrorSlot,
        out: &mut Outbox<OUT>,
        flush: Flush<'_, OUT>,
    ) where
        L: KeyedLogic<K, N, IN, OUT>,
    {
        let mut records = records.into_iter();
        let mut until_prefetch = 0;
        loop {
            if until_prefetch == 0 {
                self.prefetch(records.as_slice());
                until_prefetch = PREFETCH_AHEAD;
            }
            until_prefetch -= 1;
            let Some((ts, (_, key_group, key, value))) = records.next() else {
                break;
            };
            if errors.borrow().is_some() {
                break;
            }
            if let Err(e) = self.element(&key, key_group, ts, value, out) {
                record_error(errors, e);
            }
            if out.len() >= FLUSH_EVERY {
                flush(out, epoch);
            }
        }
    }

    /// Hands the keys of the first [`PREFETCH_AHEAD`] of `upcoming` to the backend's
    /// prefetch, which fetches their entries together (heap: prefetch instructions, so
    /// the cache misses overlap; RocksDB: one `MultiGet`), not once per record.
    fn prefetch<IN>(&self, upcoming: &[KeyedRecord<K, IN>]) {
        // On the stack: a `Vec` here was an allocation per 32 records.
        let keys: SmallVec<[(u32, &K); PREFETCH_AHEAD]> = upcoming
            .iter()
            .take(PREFETCH_AHEAD)
            .map(|(_, (_, kg, k, _))| (*kg, k))
            .collect();
        self.backend.prefetch(&keys);
    }

    /// Fires every timer of `domain` due at `limit`, in timestamp order, handing
    /// output to `flush` (for `epoch`) whenever [`FLUSH_EVERY`] records are pending.
    pub(crate) fn fire<IN, OUT>(
        &mut self,
        domain: TimeDomain,
        limit: i64,
        epoch: u64,
        out: &mut Outbox<OUT>,
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
        cap: &KeyedCaps,
        output: &mut KeyedOutput<'_, OUT>,
        out: &mut Outbox<OUT>,
        errors: &crate::ErrorSlot,
    ) where
        L: KeyedLogic<K, N, IN, OUT>,
    {
        let flush = &mut flush_to(self.metrics.clone(), cap, emit_at, output);
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
        out: &mut Outbox<OUT>,
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
pub(super) fn inflight_first<K, T>(restored: Stash<K, T>) -> Stash<K, T> {
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
    pub(crate) fn hold_for_final(&self, cap: &mut KeyedCaps, clocks: Option<(u64, u64)>) {
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
        cap: &mut KeyedCaps,
        out: &mut Outbox<OUT>,
        output: &mut KeyedOutput<'_, OUT>,
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
        if errors.borrow().is_none() {
            let flush = &mut flush_to(self.metrics.clone(), cap, emit_at, output);
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
            if let Some(m) = &self.metrics {
                m.output(out.len());
            }
            output.give(cap, &emit_at, out);
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

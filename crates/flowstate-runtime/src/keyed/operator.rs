//! Building the keyed operator in the dataflow: registered on a worker, started once
//! the job is described, records exchanged by key group.

use super::*;

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
    let (main, side) = keyed_unary(
        stream.inner.clone(),
        Exchange::new(|(_, (target, _, _, _)): &KeyedRecord<K, T>| *target as u64),
        name,
        move |mut cap, info| {
            let sync_activator = scope.worker().sync_activator_for(info.address.to_vec());
            let activator = scope.activator_for(info.address);
            let mut runner = None;
            let mut stash: Stash<K, T> = BTreeMap::new();
            let mut out: Outbox<OUT> = Outbox::new();
            let errors = op_errors;
            move |(input, frontier), output| {
                // Started (restored) once the job was described: see `start_later`.
                if let Some((r, restored)) = started.borrow_mut().take() {
                    runner = r;
                    stash = restored;
                    if let Some(r) = runner.as_mut() {
                        r.count_as(op_identity.as_ref(), &op_name);
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
                    }
                    let flush = &mut flush_to(r.metrics.clone(), c, emit_at, output);
                    if !failed(&errors) {
                        if let Some(m) = &r.metrics {
                            m.input(records.len());
                        }
                        r.elements(records, epoch, &errors, &mut out, flush);
                    }
                    flush(&mut out, epoch);
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
    DataStream::from_keyed(main, side, &stream, identity)
}

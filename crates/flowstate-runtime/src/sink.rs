//! Exactly-once sinks: the public two-phase-commit sink trait
//! ([`TransactionalSink`], Flink's `TwoPhaseCommitSinkFunction`) and the operator that
//! drives any implementation through checkpoints ([`DataStream::sink_to`]).
//!
//! **The protocol.** Records of checkpoint interval `c` (everything a source read
//! between checkpoints `c - 1` and `c`) go to transaction `c` of the sink instance.
//! When the instance's snapshot for checkpoint `c` is taken, transaction `c` is
//! *pre-committed* (made durable but invisible) and the handle it returns is stored in
//! the sink's operator state ([`crate::SINK_TRANSACTIONS_STATE`]). When checkpoint `c`
//! completes, every pre-committed transaction up to `c` is *committed* (made visible).
//! On restore from checkpoint `r`, the stored handles are committed again (the
//! checkpoint completed, so they must be visible; some already are) and everything
//! written after `r` by the failed run is *recovered*: thrown away, since the job
//! writes it again. Without checkpointing, everything commits when the input ends.

use std::cell::RefCell;
use std::rc::Rc;

use flowstate_core::descriptor::ListStateDescriptor;
use flowstate_core::operator::{OperatorListState, OperatorStateStore};
use flowstate_core::state::ListState;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::metrics::OperatorMetrics;
use crate::stream::{Data, DataSink, DataStream};
use crate::task::{TaskId, WorkerCheckpoints, start_later};
use crate::{BoxError, RuntimeError, record_error};

/// Name of the operator list state holding a sink's pre-committed transactions.
pub const SINK_TRANSACTIONS_STATE: &str = "sink-transactions";

/// Where a sink instance stands when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkContext {
    /// This instance (the worker's index).
    pub index: usize,
    /// Instances of the sink in this run (the job's parallelism).
    pub instances: usize,
    /// The checkpoint the job restored (0: none). Transactions of intervals after it
    /// belong to a failed run.
    pub restored: u64,
}

impl SinkContext {
    /// Whether this instance cleans up after instance `i` of an earlier run: its own,
    /// and on instance 0 also those of instances this run no longer has (the job was
    /// rescaled down).
    pub fn recovers(&self, i: usize) -> bool {
        i == self.index || (self.index == 0 && i >= self.instances)
    }
}

/// A sink that commits its output exactly once, in two phases, with the checkpoints
/// (Flink's `TwoPhaseCommitSinkFunction`). [`DataStream::sink_to`] drives it; see the
/// module docs for the protocol.
///
/// What an implementation must guarantee:
/// - **`pre_commit` is durable**: once it returns, the transaction survives a crash of
///   the process and can be committed later from its handle alone, by another process
///   (a restarted job restores the handle from the checkpoint).
/// - **Nothing is visible before `commit`**: readers of the sink's output never see a
///   transaction that is only written or pre-committed.
/// - **`commit` is idempotent**: committing a handle twice (a crash after the commit
///   but before the job learned of it) leaves the output as after one commit.
/// - **`recover` is idempotent** and throws away the uncommitted transactions of the
///   instances [`SinkContext::recovers`] names for intervals after
///   [`SinkContext::restored`]. Committed ones stay: a job falls back past a
///   completed checkpoint only when that checkpoint is damaged, and then writes those
///   intervals again, so committing an interval that is already committed must leave
///   one copy (record what was committed, e.g. the interval in the same store).
/// - Each instance runs on one worker thread; a sink need not be `Send`.
pub trait TransactionalSink<T>: 'static {
    /// What a pre-committed transaction is remembered by, in the checkpoint.
    type Transaction: Data + Sync;

    /// Called once per instance before anything else, on a fresh start and on
    /// restore (before the restored checkpoint's transactions are committed again):
    /// open what the sink writes to, and throw away what a failed run wrote after
    /// the restored checkpoint (see the trait docs).
    fn recover(&mut self, ctx: &SinkContext) -> Result<(), BoxError>;

    /// Writes `record` into the transaction of checkpoint interval `interval`
    /// (opening it on its first record).
    fn write(&mut self, interval: u64, record: &T) -> Result<(), BoxError>;

    /// Pre-commits the transaction of `interval` (durable, not visible); `None` when
    /// nothing was written in it. Called once per interval, in order.
    fn pre_commit(&mut self, interval: u64) -> Result<Option<Self::Transaction>, BoxError>;

    /// Commits a pre-committed transaction (visible). Idempotent.
    fn commit(&mut self, transaction: &Self::Transaction) -> Result<(), BoxError>;
}

/// A sink instance's pre-committed transactions and what drives them.
struct Driver<T, S: TransactionalSink<T>> {
    sink: S,
    /// Pre-committed, not yet committed: (interval, handle).
    pending: Vec<(u64, S::Transaction)>,
    /// What failures name.
    name: String,
    _records: std::marker::PhantomData<T>,
}

impl<T, S: TransactionalSink<T>> Driver<T, S> {
    fn failed(&self, what: &str, e: BoxError) -> RuntimeError {
        RuntimeError::Connector {
            what: format!("sink {} failed to {what}", self.name),
            source: e,
        }
    }

    fn pre_commit_through(&mut self, from: u64, through: u64) -> Result<(), RuntimeError> {
        for interval in from..=through {
            match self.sink.pre_commit(interval) {
                Ok(Some(t)) => self.pending.push((interval, t)),
                Ok(None) => {}
                Err(e) => return Err(self.failed("pre-commit", e)),
            }
        }
        Ok(())
    }

    fn commit_through(&mut self, done: u64) -> Result<(), RuntimeError> {
        let (ready, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(i, _)| *i <= done);
        self.pending = keep;
        for (_, t) in ready {
            crate::failpoint::hit("sink-commit");
            self.sink.commit(&t).map_err(|e| self.failed("commit", e))?;
        }
        Ok(())
    }
}

/// A sink instance's part in checkpoints.
struct SinkTask<X: Data> {
    ctx: Rc<WorkerCheckpoints>,
    id: TaskId,
    store: OperatorStateStore,
    state: Rc<OperatorListState<X>>,
    /// Checkpoints up to this one are snapshotted.
    snapshotted: u64,
}

impl<T: Data> DataStream<'_, T> {
    /// Writes every record through a [`TransactionalSink`], exactly once across
    /// failures when the job checkpoints (Flink's `sinkTo` with a two-phase-commit
    /// sink). `name` names the sink in errors and in the id it gets without a uid.
    pub fn sink_to<S: TransactionalSink<T>>(self, name: &str, sink: S) -> DataSink {
        let errors = self.errors.clone();
        let (index, instances) = (self.scope.index(), self.scope.peers());
        let driver = Rc::new(RefCell::new(Driver {
            sink,
            pending: Vec::new(),
            name: name.to_string(),
            _records: std::marker::PhantomData,
        }));
        let identity = self.checkpoints.as_ref().map(|c| c.register(name, false));
        let (ctx, identity2) = (self.checkpoints.clone(), identity.clone());
        let (setup_driver, setup_errors) = (driver.clone(), errors.clone());
        // Restored once the job is described (the uid is known then).
        let started = start_later(self.checkpoints.as_ref(), move || {
            let setup = (|| -> Result<Option<SinkTask<S::Transaction>>, RuntimeError> {
                let mut d = setup_driver.borrow_mut();
                let restored = ctx
                    .as_ref()
                    .and_then(|c| c.restored.as_ref())
                    .map_or(0, |r| r.metadata.id);
                let sc = SinkContext {
                    index,
                    instances,
                    restored,
                };
                d.sink.recover(&sc).map_err(|e| d.failed("recover", e))?;
                let (Some(ctx), Some(identity)) = (ctx, identity2) else {
                    return Ok(None);
                };
                let (id, meta) = ctx.resolve(&identity);
                let store = ctx.operator_store(meta.as_ref())?;
                let state = store.list_state::<S::Transaction>(&ListStateDescriptor::new(
                    SINK_TRANSACTIONS_STATE,
                ))?;
                // The restored checkpoint completed: its transactions commit now.
                d.pending = state.get()?.into_iter().map(|t| (0, t)).collect();
                d.commit_through(0)?;
                state.update(Vec::new())?;
                let listener = setup_driver.clone();
                ctx.on_complete(move |done| listener.borrow_mut().commit_through(done));
                let snapshotted = ctx.coordinator.start().saturating_sub(1);
                Ok(Some(SinkTask {
                    ctx,
                    id,
                    store,
                    state,
                    snapshotted,
                }))
            })();
            match setup {
                Ok(t) => t,
                Err(e) => {
                    record_error(&setup_errors, e);
                    None
                }
            }
        });
        let mut task: Option<SinkTask<S::Transaction>> = None;
        // Records in, named by the sink's uid once known (its name without checkpoints).
        let (metric_identity, metric_name) = (identity.clone(), name.to_string());
        let mut metrics: Option<OperatorMetrics> = None;
        // Without checkpointing: everything is one transaction per interval, all
        // committed at the end of the input.
        let mut unchecked_through = 0u64;
        self.inner.sink(Pipeline, name, move |(input, frontier)| {
            if let Some(t) = started.borrow_mut().take() {
                task = t;
            }
            let m = metrics.get_or_insert_with(|| {
                let id = metric_identity
                    .as_ref()
                    .map_or_else(|| metric_name.clone(), |i| i.id());
                OperatorMetrics::new(&id)
            });
            let mut d = driver.borrow_mut();
            input.for_each(|time, data| {
                if errors.borrow().is_some() {
                    data.clear();
                    return;
                }
                m.input(data.len());
                let interval = crate::time::stamp_time(time.stamp().elements()).interval();
                unchecked_through = unchecked_through.max(interval);
                for (_, v) in data.iter() {
                    if let Err(e) = d.sink.write(interval, v) {
                        let e = d.failed("write", e);
                        record_error(&errors, e);
                        break;
                    }
                }
                data.clear();
            });
            if errors.borrow().is_some() {
                return;
            }
            let clocks = crate::time::frontier_clocks(&frontier.frontier());
            let result = match task.as_mut() {
                None => match clocks {
                    None => d
                        .pre_commit_through(0, unchecked_through)
                        .and_then(|()| d.commit_through(u64::MAX)),
                    Some(_) => Ok(()),
                },
                Some(t) => snapshot_through(&mut d, t, clocks),
            };
            if let Err(e) = result {
                record_error(&errors, e);
            }
        });
        DataSink { task: identity }
    }
}

/// Pre-commits and snapshots every checkpoint whose records have all arrived.
fn snapshot_through<T, S: TransactionalSink<T>>(
    d: &mut Driver<T, S>,
    t: &mut SinkTask<S::Transaction>,
    clocks: Option<(u64, u64)>,
) -> Result<(), RuntimeError> {
    let through = match clocks {
        Some((_, c)) => c.saturating_sub(1),
        None => t.ctx.coordinator.final_id().unwrap_or(t.snapshotted),
    };
    while t.snapshotted < through {
        t.snapshotted += 1;
        let id = t.snapshotted;
        let started = std::time::Instant::now();
        d.pre_commit_through(id, id)?;
        let stored: Vec<S::Transaction> = d.pending.iter().map(|(_, x)| x.clone()).collect();
        let taken = t
            .state
            .update(stored)
            .and_then(|()| t.store.snapshot())
            .map(|snap| (None, Some(snap)))
            .map_err(RuntimeError::from);
        t.ctx.snapshot_taken(id, &t.id, taken, started, 0);
    }
    Ok(())
}

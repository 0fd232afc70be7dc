//! Replayable sources: every source reads *splits* (a worker's share of a vec, of a
//! file's bytes, of the Nexmark sequence) and keeps each split's read position and
//! largest event time in operator list state ([`SOURCE_SPLITS_STATE`]), as Flink's
//! FLIP-27 sources keep split state.
//!
//! A fresh job gives worker `i` of `W` split `i`. A restored job gives each worker its
//! share of the stored splits (list state's even redistribution), so a job resumed at
//! another parallelism still reads every record exactly once: a split is never cut,
//! only moved. With the same parallelism each worker gets its own split back and
//! replays exactly what it would have read.
//!
//! A source's watermark is the least over its unfinished splits of their largest event
//! time minus the bound, so reading several splits never makes one split's records
//! late because of another's.
//!
//! `split.rs` holds the API a source implements, `seq.rs` the sequence source; this
//! module drives a source instance on its worker.
use std::rc::Rc;
use std::time::Instant;

use flowstate_core::descriptor::ListStateDescriptor;
use flowstate_core::operator::{OperatorListState, OperatorStateStore};
use flowstate_core::state::ListState;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;

use crate::flow::{Pacer, Paused, RecordSize};
use crate::metrics::OperatorMetrics;
use crate::stream::{Data, WatermarkStrategy};
use crate::task::{TaskId, TaskRef, WorkerCheckpoints};
use crate::time::{Time, epoch_after, time_at};
use crate::{BoxError, ErrorSlot, RuntimeError, record_error};

mod seq;
mod split;

pub(crate) use seq::SeqSource;
#[cfg(feature = "nexmark")]
pub(crate) use seq::SeqSplit;
pub use split::{Read, SOURCE_SPLITS_STATE, SplitPosition, SplitReader, SplitSource, SplitState};
pub(crate) use split::{SplitFactory, StoredReader, split_factory};

/// A split being read: its reader, the largest event time read from it, and whether
/// it has ended.
struct Split<T> {
    reader: Box<dyn StoredReader<T>>,
    max_ts: i64,
    finished: bool,
}

/// What the worker loop drives: one source instance.
pub(crate) trait SourceDriver {
    /// Follows the checkpoint clock (snapshots the position for every checkpoint it
    /// passes) and closes the input when the source is done. `false` once closed.
    fn sync(&mut self) -> bool;
    /// Sends the next batch; `false` once every split is read.
    fn step(&mut self) -> bool;
}

/// The timely input a source feeds.
pub(crate) type SourceInput<T> = InputHandle<Time, CapacityContainerBuilder<Vec<(i64, T)>>>;

/// A source of records `T` over splits.
pub(crate) struct Source<T: Data> {
    splits: Vec<Split<T>>,
    next_split: usize,
    timestamp: Box<dyn Fn(&T) -> i64>,
    strategy: WatermarkStrategy,
    input: Option<SourceInput<T>>,
    epoch: u64,
    interval: u64,
    exhausted: bool,
    errors: ErrorSlot,
    checkpoint: Option<SourceTask>,
    /// What errors name.
    name: String,
    /// Flow control: this worker's view of the dataflow's progress.
    pacer: Pacer,
    /// Flow-control round (one per step).
    round: u64,
    /// Time spent waiting for flow control.
    paused: Paused,
    /// What the records weigh (sizes a round's batch).
    size: RecordSize,
    /// Records out.
    metrics: OperatorMetrics,
}

struct SourceTask {
    id: TaskId,
    ctx: Rc<WorkerCheckpoints>,
    store: OperatorStateStore,
    state: Rc<OperatorListState<SplitState>>,
}

impl<T: Data> Source<T> {
    /// Builds a source; on restore its splits come from the snapshot.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        task: Option<(Rc<WorkerCheckpoints>, TaskRef)>,
        mut input: SourceInput<T>,
        make: SplitFactory<T>,
        timestamp: Box<dyn Fn(&T) -> i64>,
        strategy: WatermarkStrategy,
        errors: ErrorSlot,
        pacer: Pacer,
    ) -> Result<Self, RuntimeError> {
        let mut stored: Option<Vec<SplitState>> = None;
        let mut checkpoint = None;
        let mut interval = 0;
        if let Some((ctx, identity)) = task {
            let (id, restored) = ctx.resolve(&identity);
            let store = ctx.operator_store(restored.as_ref())?;
            let state =
                store.list_state::<SplitState>(&ListStateDescriptor::new(SOURCE_SPLITS_STATE))?;
            if restored.is_some() {
                stored = Some(state.get()?);
            }
            interval = ctx.coordinator.start();
            checkpoint = Some(SourceTask {
                id,
                ctx,
                store,
                state,
            });
        }
        let max_ts: Vec<i64> = stored
            .as_ref()
            .map(|s| s.iter().map(|s| s.max_ts).collect())
            .unwrap_or_default();
        let readers = make(stored).map_err(|e| RuntimeError::Connector {
            what: format!("source {name} could not open its splits"),
            source: e,
        })?;
        let splits = readers
            .into_iter()
            .enumerate()
            .map(|(i, reader)| Split {
                reader,
                max_ts: max_ts.get(i).copied().unwrap_or(i64::MIN),
                finished: false,
            })
            .collect();
        input.advance_to(time_at(0, (interval, 0)));
        let mut s = Source {
            splits,
            next_split: 0,
            timestamp,
            strategy,
            input: Some(input),
            epoch: 0,
            interval,
            exhausted: false,
            errors,
            checkpoint,
            metrics: OperatorMetrics::new(&name),
            name,
            pacer,
            round: 0,
            paused: Paused::default(),
            size: RecordSize::new(),
        };
        // A restored source resumes at the watermark it had reached.
        s.advance_epoch();
        Ok(s)
    }

    /// The time the source's input is at.
    fn now(&self) -> Time {
        time_at(self.epoch, (self.interval, self.round))
    }

    /// Moves the input to the current time (epoch, interval and round only grow).
    fn advance_input(&mut self) {
        let now = self.now();
        if let Some(input) = self.input.as_mut() {
            input.advance_to(now);
        }
    }

    fn watermark_ts(&self) -> Option<i64> {
        self.splits
            .iter()
            .filter(|s| !s.finished)
            .map(|s| s.max_ts)
            .min()
    }

    /// Moves the input to the epoch after the source's watermark (never back).
    fn advance_epoch(&mut self) {
        let WatermarkStrategy::BoundedOutOfOrderness(bound) = self.strategy else {
            return;
        };
        let Some(max_ts) = self.watermark_ts() else {
            return;
        };
        let watermark = max_ts.saturating_sub(bound).saturating_sub(1);
        let epoch = epoch_after(watermark);
        if epoch > self.epoch {
            self.epoch = epoch;
            self.advance_input();
        }
    }

    /// Snapshots the read position for checkpoint `id` (synchronous: the split states
    /// into operator state; asynchronous: the file).
    fn snapshot(&mut self, id: u64) -> Result<(), RuntimeError> {
        let Some(task) = self.checkpoint.as_ref() else {
            return Ok(());
        };
        tracing::debug!(
            source = %self.name,
            checkpoint = id,
            paused_ms = self.paused.total().as_millis() as u64,
            "source {} at checkpoint {id}: paused by flow control for {} ms so far",
            self.name,
            self.paused.total().as_millis()
        );
        let started = Instant::now();
        let states = self
            .splits
            .iter()
            .map(|s| {
                Ok(SplitState {
                    position: s.reader.position()?,
                    max_ts: s.max_ts,
                })
            })
            .collect::<Result<Vec<_>, BoxError>>();
        let taken = match states {
            Ok(states) => task
                .state
                .update(states)
                .and_then(|()| task.store.snapshot())
                .map(|snap| (None, Some(snap)))
                .map_err(RuntimeError::from),
            Err(e) => Err(RuntimeError::Connector {
                what: format!("source {} could not store its positions", self.name),
                source: e,
            }),
        };
        task.ctx.snapshot_taken(id, &task.id, taken, started, 0);
        Ok(())
    }
}

impl<T: Data> SourceDriver for Source<T> {
    fn sync(&mut self) -> bool {
        if self.input.is_none() {
            return false;
        }
        let Some(task) = self.checkpoint.as_ref() else {
            if self.exhausted {
                self.input = None;
                return false;
            }
            return true;
        };
        let coordinator = task.ctx.coordinator.clone();
        let target = coordinator.interval();
        while self.interval < target {
            if let Err(e) = self.snapshot(self.interval) {
                record_error(&self.errors, e);
                self.input = None;
                return false;
            }
            self.interval += 1;
            self.advance_input();
        }
        if self.exhausted
            && let Some(f) = coordinator.final_id()
            && self.interval == f
        {
            if let Err(e) = self.snapshot(f) {
                record_error(&self.errors, e);
            }
            self.input = None;
            return false;
        }
        true
    }

    fn step(&mut self) -> bool {
        if self.exhausted || self.input.is_none() {
            return false;
        }
        // Nothing after the cut of a savepoint that stops the job.
        if self
            .checkpoint
            .as_ref()
            .is_some_and(|t| t.ctx.coordinator.stopping())
        {
            return false;
        }
        if self.errors.borrow().is_some() {
            return self.finish();
        }
        // Flow control: wait while this source's oldest batches are still in flight.
        if !self.pacer.may_send(self.round) {
            self.paused.waiting();
            return false;
        }
        if let Some(waited) = self.paused.going() {
            crate::metrics::flow_control_paused(&self.name, waited);
        }
        let sent = self.send_batch();
        // The next round, whether this one sent or not: an idle source must not hold
        // the others back.
        if !self.exhausted {
            self.round += 1;
            self.advance_input();
        }
        sent
    }
}

impl<T: Data> Source<T> {
    /// Sends up to a batch (one round's worth: see [`Pacer::batch`]) from the next
    /// split that has records; `false` when none had any (every split idle or
    /// finished).
    fn send_batch(&mut self) -> bool {
        let n = self.splits.len();
        let batch = self.pacer.batch(self.size.bytes());
        for _ in 0..n {
            let i = self.next_split % n;
            self.next_split = self.next_split.wrapping_add(1);
            if self.splits[i].finished {
                continue;
            }
            let mut sent = false;
            let mut sent_records = 0;
            for _ in 0..batch {
                let split = &mut self.splits[i];
                match split.reader.next() {
                    Ok(Read::End) => {
                        split.finished = true;
                        break;
                    }
                    Ok(Read::Idle) => break,
                    Err(e) => {
                        let e = RuntimeError::Connector {
                            what: format!("source {} failed", self.name),
                            source: e,
                        };
                        record_error(&self.errors, e);
                        return self.finish();
                    }
                    Ok(Read::Record(v)) => {
                        self.size.observe(&v);
                        let ts = (self.timestamp)(&v);
                        split.max_ts = split.max_ts.max(ts);
                        if let Some(input) = self.input.as_mut() {
                            input.send((ts, v));
                            sent_records += 1;
                        }
                        sent = true;
                        // The watermark follows every record (Flink's periodic emission
                        // would make lateness depend on wall-clock timing).
                        self.advance_epoch();
                    }
                }
            }
            self.advance_epoch();
            if sent {
                self.metrics.output(sent_records);
                return true;
            }
        }
        if self.splits.iter().all(|s| s.finished) {
            return self.finish();
        }
        // Every unfinished split is idle: nothing to send now.
        false
    }
}

impl<T: Data> Source<T> {
    fn finish(&mut self) -> bool {
        if !self.exhausted {
            self.exhausted = true;
            // Its input stays open until the final checkpoint; meanwhile it must hold
            // nothing back: its watermark is the end of time (Flink's finished
            // sources emit the maximum watermark), so a worker left without splits
            // (rescaled to more workers) never stalls event time, and its round is the
            // last, so flow control never waits for it.
            self.epoch = u64::MAX;
            self.round = u64::MAX;
            self.advance_input();
            tracing::info!(
                source = %self.name,
                paused_ms = self.paused.total().as_millis() as u64,
                "source {} read every split; flow control paused it for {} ms",
                self.name,
                self.paused.total().as_millis()
            );
            if let Some(task) = self.checkpoint.as_ref() {
                task.ctx.coordinator.source_exhausted();
            }
        }
        false
    }
}

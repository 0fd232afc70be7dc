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

use std::rc::Rc;
use std::time::Instant;

use flowstate_core::descriptor::ListStateDescriptor;
use flowstate_core::operator::{OperatorListState, OperatorStateStore};
use flowstate_core::state::ListState;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;

use crate::connectors::FilePosition;
use crate::flow::{Pacer, Paused, RecordSize};
use crate::metrics::OperatorMetrics;
use crate::stream::{Data, WatermarkStrategy};
use crate::task::{TaskId, TaskRef, WorkerCheckpoints};
use crate::time::{Time, epoch_after, time_at};
use crate::{BoxError, ErrorSlot, RuntimeError, record_error};

/// Name of the operator list state holding a source's splits.
pub const SOURCE_SPLITS_STATE: &str = "source-splits";

/// Where a split is read up to, as stored in the source's operator state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitPosition {
    /// Elements `index`, `index + of`, ... of a sequence; `consumed` of them were read.
    Seq {
        /// First element.
        index: u64,
        /// Step between elements.
        of: u64,
        /// Elements already read.
        consumed: u64,
    },
    /// A byte range of a file.
    File(FilePosition),
    /// A split of a user-defined [`SplitSource`]: its `Split` value in postcard's
    /// encoding (the default of [`SplitSource::store_split`]).
    Custom(Vec<u8>),
}

/// One split's stored state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitState {
    /// Read position.
    pub position: SplitPosition,
    /// Largest event time read from the split (`i64::MIN`: none yet).
    pub max_ts: i64,
}

/// What reading a split gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<T> {
    /// A record.
    Record(T),
    /// Nothing for now (an unbounded split waiting for data): asked again later.
    Idle,
    /// The split is read to its end.
    End,
}

/// Reads one split of a [`SplitSource`] from a position.
///
/// `position` must name exactly the records returned so far: a reader opened at it
/// returns the next record after them, and nothing before (the source replays from
/// it after a failure, so anything else loses or repeats records).
pub trait SplitReader<T, S> {
    /// The next record, [`Read::Idle`] when none is available yet, or [`Read::End`];
    /// an error fails the job (it restarts from its last checkpoint).
    fn next(&mut self) -> Result<Read<T>, BoxError>;
    /// The position after the last record returned.
    fn position(&self) -> S;
}

/// A replayable source of records `T`, read as splits (Flink's FLIP-27 `Source`).
///
/// A fresh job asks every worker for its [`SplitSource::initial_splits`]. At every
/// checkpoint each worker stores the position of each of its splits and the largest
/// event time read from it in the source's operator state; a restored job gives each
/// worker its share of the stored splits (at any parallelism) and opens them at their
/// positions. Watermarks follow the [`WatermarkStrategy`] given to [`Job::source`]
/// per split, the source's watermark being the least over its unfinished splits.
///
/// What an implementation must guarantee: the same split opened at the same position
/// gives the same records in the same order (replay), and initial splits of all
/// workers together cover the input once.
pub trait SplitSource<T>: 'static {
    /// A split and where it is read up to.
    type Split: Data;

    /// The splits worker `index` of `workers` reads in a fresh job.
    fn initial_splits(
        &mut self,
        index: usize,
        workers: usize,
    ) -> Result<Vec<Self::Split>, BoxError>;

    /// Opens `split` at its position.
    fn open_split(
        &mut self,
        split: Self::Split,
    ) -> Result<Box<dyn SplitReader<T, Self::Split>>, BoxError>;

    /// How a split is stored; the default suits any serde type
    /// ([`SplitPosition::Custom`]).
    fn store_split(split: &Self::Split) -> Result<SplitPosition, BoxError>
    where
        Self: Sized,
    {
        Ok(SplitPosition::Custom(postcard::to_stdvec(split)?))
    }

    /// Reads a stored split back; the inverse of [`SplitSource::store_split`].
    fn load_split(stored: SplitPosition) -> Result<Self::Split, BoxError>
    where
        Self: Sized,
    {
        match stored {
            SplitPosition::Custom(bytes) => Ok(postcard::from_bytes(&bytes)?),
            other => Err(format!("this source cannot resume from {other:?}").into()),
        }
    }
}

/// A reader whose positions are stored as [`SplitPosition`]s.
pub(crate) trait StoredReader<T> {
    fn next(&mut self) -> Result<Read<T>, BoxError>;
    fn position(&self) -> Result<SplitPosition, BoxError>;
}

/// A [`SplitReader`] of a [`SplitSource`] with the source's way of storing positions.
struct Stored<T, S> {
    reader: Box<dyn SplitReader<T, S>>,
    store: fn(&S) -> Result<SplitPosition, BoxError>,
}

impl<T, S> StoredReader<T> for Stored<T, S> {
    fn next(&mut self) -> Result<Read<T>, BoxError> {
        self.reader.next()
    }
    fn position(&self) -> Result<SplitPosition, BoxError> {
        (self.store)(&self.reader.position())
    }
}

/// How a source finds its splits: `None` for a fresh job (make this worker's
/// initial splits), or the stored splits handed to this worker on restore.
pub(crate) type SplitFactory<T> =
    Box<dyn FnOnce(Option<Vec<SplitState>>) -> Result<Vec<Box<dyn StoredReader<T>>>, BoxError>>;

/// The split factory of `source` on worker `index` of `workers`.
pub(crate) fn split_factory<T: 'static, S: SplitSource<T>>(
    mut source: S,
    index: usize,
    workers: usize,
) -> SplitFactory<T> {
    Box::new(move |stored| {
        let splits = match stored {
            None => source.initial_splits(index, workers)?,
            Some(stored) => stored
                .into_iter()
                .map(|s| S::load_split(s.position))
                .collect::<Result<_, _>>()?,
        };
        splits
            .into_iter()
            .map(|split| {
                Ok(Box::new(Stored {
                    reader: source.open_split(split)?,
                    store: S::store_split,
                }) as Box<dyn StoredReader<T>>)
            })
            .collect()
    })
}

/// A split of a sequence: elements `index`, `index + of`, ..., `consumed` of them
/// read (the vec and Nexmark sources).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SeqSplit {
    pub(crate) index: u64,
    pub(crate) of: u64,
    pub(crate) consumed: u64,
}

/// A sequence source over elements `0..len` given by `element` (made per split).
pub(crate) struct SeqSource<T> {
    /// This worker's fresh split (index, of); `None`: it reads nothing.
    pub(crate) fresh: Option<(u64, u64)>,
    pub(crate) len: u64,
    #[allow(clippy::type_complexity)]
    pub(crate) element: Box<dyn FnMut(&SeqSplit) -> Box<dyn FnMut(u64) -> Option<T>>>,
}

impl<T: 'static> SplitSource<T> for SeqSource<T> {
    type Split = SeqSplit;
    fn initial_splits(&mut self, _: usize, _: usize) -> Result<Vec<SeqSplit>, BoxError> {
        Ok(self
            .fresh
            .map(|(index, of)| SeqSplit {
                index,
                of,
                consumed: 0,
            })
            .into_iter()
            .collect())
    }
    fn open_split(
        &mut self,
        split: SeqSplit,
    ) -> Result<Box<dyn SplitReader<T, SeqSplit>>, BoxError> {
        Ok(Box::new(SeqReader {
            element: (self.element)(&split),
            split,
            len: self.len,
        }))
    }
    fn store_split(s: &SeqSplit) -> Result<SplitPosition, BoxError> {
        Ok(SplitPosition::Seq {
            index: s.index,
            of: s.of,
            consumed: s.consumed,
        })
    }
    fn load_split(stored: SplitPosition) -> Result<SeqSplit, BoxError> {
        match stored {
            SplitPosition::Seq {
                index,
                of,
                consumed,
            } => Ok(SeqSplit {
                index,
                of: of.max(1),
                consumed,
            }),
            other => Err(format!("a sequence source cannot resume from {other:?}").into()),
        }
    }
}

/// Reads a [`SeqSplit`].
struct SeqReader<T> {
    split: SeqSplit,
    len: u64,
    element: Box<dyn FnMut(u64) -> Option<T>>,
}

impl<T> SplitReader<T, SeqSplit> for SeqReader<T> {
    fn next(&mut self) -> Result<Read<T>, BoxError> {
        let s = &self.split;
        let Some(i) = s
            .consumed
            .checked_mul(s.of)
            .and_then(|o| s.index.checked_add(o))
            .filter(|i| *i < self.len)
        else {
            return Ok(Read::End);
        };
        let Some(v) = (self.element)(i) else {
            return Ok(Read::End);
        };
        self.split.consumed += 1;
        Ok(Read::Record(v))
    }
    fn position(&self) -> SeqSplit {
        self.split.clone()
    }
}

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

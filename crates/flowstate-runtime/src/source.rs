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
use crate::stream::{Data, WatermarkStrategy};
use crate::task::WorkerCheckpoints;
use crate::time::{Time, time};
use crate::{ErrorSlot, RuntimeError, record_error};

/// Name of the operator list state holding a source's splits.
pub const SOURCE_SPLITS_STATE: &str = "source-splits";

/// Records per source step: bounds memory between dataflow steps.
const SOURCE_BATCH: usize = 1024;

/// Where a split is read up to.
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
}

/// One split's stored state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitState {
    /// Read position.
    pub position: SplitPosition,
    /// Largest event time read from the split (`i64::MIN`: none yet).
    pub max_ts: i64,
}

/// Reads one split.
pub(crate) trait SplitReader<T> {
    /// The next record; `None` at the end of the split; an error names what was wrong.
    fn next(&mut self) -> Option<Result<T, String>>;
    /// The position after the last record returned.
    fn position(&self) -> SplitPosition;
}

/// A split of a sequence given by an element function (vec elements, generated events).
pub(crate) struct SeqReader<T> {
    pub(crate) index: u64,
    pub(crate) of: u64,
    pub(crate) consumed: u64,
    pub(crate) len: u64,
    pub(crate) element: Box<dyn FnMut(u64) -> Option<T>>,
}

impl<T> SplitReader<T> for SeqReader<T> {
    fn next(&mut self) -> Option<Result<T, String>> {
        let i = self
            .index
            .checked_add(self.consumed.checked_mul(self.of)?)?;
        if i >= self.len {
            return None;
        }
        let v = (self.element)(i)?;
        self.consumed += 1;
        Some(Ok(v))
    }
    fn position(&self) -> SplitPosition {
        SplitPosition::Seq {
            index: self.index,
            of: self.of,
            consumed: self.consumed,
        }
    }
}

/// The sequence splits a source reads, as (first element, step, elements read): the
/// stored ones on restore, else `fresh` = (first, step) for a new job (`None`: this
/// worker reads nothing). `what` names the source in the error for a split of
/// another kind.
pub(crate) fn seq_splits(
    stored: Option<Vec<SplitState>>,
    fresh: Option<(u64, u64)>,
    what: &str,
) -> Result<Vec<(u64, u64, u64)>, String> {
    match stored {
        None => Ok(fresh
            .map(|(index, of)| (index, of, 0))
            .into_iter()
            .collect()),
        Some(splits) => splits
            .into_iter()
            .map(|s| match s.position {
                SplitPosition::Seq {
                    index,
                    of,
                    consumed,
                } => Ok((index, of.max(1), consumed)),
                other => Err(format!("a {what} source cannot resume from {other:?}")),
            })
            .collect(),
    }
}

struct Split<T> {
    reader: Box<dyn SplitReader<T>>,
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
}

struct SourceTask {
    uid: String,
    ctx: Rc<WorkerCheckpoints>,
    store: OperatorStateStore,
    state: Rc<OperatorListState<SplitState>>,
}

/// How a source finds its splits: `None` for a fresh job (make this worker's
/// initial splits), or the stored splits handed to this worker on restore.
pub(crate) type SplitFactory<T> =
    Box<dyn FnOnce(Option<Vec<SplitState>>) -> Result<Vec<Box<dyn SplitReader<T>>>, String>>;

impl<T: Data> Source<T> {
    /// Builds a source; on restore its splits come from the snapshot.
    pub(crate) fn new(
        kind: &str,
        ctx: Option<Rc<WorkerCheckpoints>>,
        mut input: SourceInput<T>,
        make: SplitFactory<T>,
        timestamp: Box<dyn Fn(&T) -> i64>,
        strategy: WatermarkStrategy,
        errors: ErrorSlot,
    ) -> Result<Self, RuntimeError> {
        let mut stored: Option<Vec<SplitState>> = None;
        let mut checkpoint = None;
        let mut interval = 0;
        if let Some(ctx) = ctx {
            let (uid, restored) = ctx.task(kind, true);
            let store = ctx.operator_store(restored.as_ref())?;
            let state =
                store.list_state::<SplitState>(&ListStateDescriptor::new(SOURCE_SPLITS_STATE))?;
            if restored.is_some() {
                stored = Some(state.get()?);
            }
            interval = ctx.coordinator.start();
            checkpoint = Some(SourceTask {
                uid,
                ctx,
                store,
                state,
            });
        }
        let max_ts: Vec<i64> = stored
            .as_ref()
            .map(|s| s.iter().map(|s| s.max_ts).collect())
            .unwrap_or_default();
        let readers = make(stored).map_err(RuntimeError::Source)?;
        let splits = readers
            .into_iter()
            .enumerate()
            .map(|(i, reader)| Split {
                reader,
                max_ts: max_ts.get(i).copied().unwrap_or(i64::MIN),
                finished: false,
            })
            .collect();
        input.advance_to(time(0, interval));
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
        };
        // A restored source resumes at the watermark it had reached.
        s.advance_epoch();
        Ok(s)
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
        // Epoch w + 1 carries everything after watermark w (epochs are unsigned).
        let epoch = u64::try_from(watermark.saturating_add(1)).unwrap_or(0);
        if epoch > self.epoch {
            self.epoch = epoch;
            if let Some(input) = self.input.as_mut() {
                input.advance_to(time(self.epoch, self.interval));
            }
        }
    }

    /// Snapshots the read position for checkpoint `id` (synchronous: the split states
    /// into operator state; asynchronous: the file).
    fn snapshot(&mut self, id: u64) -> Result<(), RuntimeError> {
        let Some(task) = self.checkpoint.as_ref() else {
            return Ok(());
        };
        let started = Instant::now();
        let states = self
            .splits
            .iter()
            .map(|s| SplitState {
                position: s.reader.position(),
                max_ts: s.max_ts,
            })
            .collect();
        let taken = task
            .state
            .update(states)
            .and_then(|()| task.store.snapshot())
            .map(|snap| (None, Some(snap)))
            .map_err(RuntimeError::from);
        task.ctx.snapshot_taken(id, &task.uid, taken, started);
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
            if let Some(input) = self.input.as_mut() {
                input.advance_to(time(self.epoch, self.interval));
            }
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
        let n = self.splits.len();
        for _ in 0..n {
            let i = self.next_split % n;
            self.next_split = self.next_split.wrapping_add(1);
            if self.splits[i].finished {
                continue;
            }
            for _ in 0..SOURCE_BATCH {
                let split = &mut self.splits[i];
                match split.reader.next() {
                    None => {
                        split.finished = true;
                        break;
                    }
                    Some(Err(e)) => {
                        record_error(&self.errors, RuntimeError::Source(e));
                        return self.finish();
                    }
                    Some(Ok(v)) => {
                        let ts = (self.timestamp)(&v);
                        split.max_ts = split.max_ts.max(ts);
                        if let Some(input) = self.input.as_mut() {
                            input.send((ts, v));
                        }
                        // The watermark follows every record (Flink's periodic emission
                        // would make lateness depend on wall-clock timing).
                        self.advance_epoch();
                    }
                }
            }
            self.advance_epoch();
            return true;
        }
        self.finish()
    }
}

impl<T: Data> Source<T> {
    fn finish(&mut self) -> bool {
        if !self.exhausted {
            self.exhausted = true;
            if let Some(task) = self.checkpoint.as_ref() {
                task.ctx.coordinator.source_exhausted();
            }
        }
        false
    }
}

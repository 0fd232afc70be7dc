//! The dataflow-building API: a [`Job`] makes sources, [`DataStream`]s are transformed
//! and keyed, [`KeyedStream`]s are processed with state.
//!
//! Every record travels as `(event time, value)`; the timely timestamp of the batch
//! is the watermark epoch it was sent in (see the crate docs).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use flowstate_core::keygroup::{key_group_for_serialized_key, operator_index_for_key_group};
use flowstate_core::serializer::{SerdeSerializer, TypeSerializer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Input, Inspect};
use timely::dataflow::{InputHandle, Scope, StreamVec};

use crate::keyed::{OutputTag, Tagged};
use crate::{ErrorSlot, JobConfig};

/// Records exchanged between workers: any owned, serializable value.
pub trait Data: Clone + Serialize + DeserializeOwned + Send + 'static {}
impl<T: Clone + Serialize + DeserializeOwned + Send + 'static> Data for T {}

/// How a source derives watermarks from its records' event times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatermarkStrategy {
    /// No event time: one watermark at the end of the input.
    None,
    /// Flink's bounded out-of-orderness: watermark = max event time seen - bound - 1.
    BoundedOutOfOrderness(i64),
}

/// A source that feeds one worker's input, a batch per call.
pub(crate) trait SourceDriver {
    /// Sends the next batch; `false` once exhausted (the input is then closed).
    fn step(&mut self) -> bool;
}

/// Records per source step: bounds memory between dataflow steps.
const SOURCE_BATCH: usize = 1024;

/// A source over an iterator (a vec's split, a generator).
pub(crate) struct IterSource<T: Data> {
    pub(crate) items: Box<dyn Iterator<Item = T>>,
    pub(crate) timestamp: Box<dyn Fn(&T) -> i64>,
    pub(crate) strategy: WatermarkStrategy,
    pub(crate) max_ts: i64,
    pub(crate) input: InputHandle<u64, CapacityContainerBuilder<Vec<(i64, T)>>>,
}

impl<T: Data> SourceDriver for IterSource<T> {
    fn step(&mut self) -> bool {
        for _ in 0..SOURCE_BATCH {
            let Some(item) = self.items.next() else {
                return false;
            };
            let ts = (self.timestamp)(&item);
            self.input.send((ts, item));
            // The watermark follows every record (Flink's periodic emission would make
            // lateness depend on wall-clock timing).
            self.max_ts = self.max_ts.max(ts);
            advance_epoch(&mut self.input, self.strategy, self.max_ts);
        }
        true
    }
}

/// Moves a source's input to the epoch after its watermark: records sent from now on
/// come after watermark `max_ts - bound - 1`.
pub(crate) fn advance_epoch<T: Data>(
    input: &mut InputHandle<u64, CapacityContainerBuilder<Vec<(i64, T)>>>,
    strategy: WatermarkStrategy,
    max_ts: i64,
) {
    if let WatermarkStrategy::BoundedOutOfOrderness(bound) = strategy {
        let watermark = max_ts.saturating_sub(bound).saturating_sub(1);
        // Epoch w + 1 carries everything after watermark w (epochs are unsigned).
        let epoch = u64::try_from(watermark.saturating_add(1)).unwrap_or(0);
        if epoch > *input.time() {
            input.advance_to(epoch);
        }
    }
}

/// The dataflow under construction on one worker.
pub struct Job<'scope> {
    pub(crate) scope: Scope<'scope, u64>,
    pub(crate) config: Arc<JobConfig>,
    pub(crate) errors: ErrorSlot,
    pub(crate) drivers: Vec<Box<dyn SourceDriver>>,
}

impl<'scope> Job<'scope> {
    pub(crate) fn new(
        scope: Scope<'scope, u64>,
        config: Arc<JobConfig>,
        errors: ErrorSlot,
    ) -> Self {
        Job {
            scope,
            config,
            errors,
            drivers: Vec::new(),
        }
    }

    pub(crate) fn into_drivers(self) -> Vec<Box<dyn SourceDriver>> {
        self.drivers
    }

    /// This worker's index.
    pub fn worker_index(&self) -> usize {
        self.scope.index()
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.scope.peers()
    }

    /// A source over `items`, split across workers (worker `i` reads items `i`,
    /// `i + workers`, ...), with event times from `timestamp`.
    pub fn source_vec<T: Data>(
        &mut self,
        items: Vec<T>,
        timestamp: impl Fn(&T) -> i64 + 'static,
        strategy: WatermarkStrategy,
    ) -> DataStream<'scope, T> {
        let (index, peers) = (self.worker_index(), self.workers());
        let mine: Vec<T> = items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % peers == index)
            .map(|(_, t)| t)
            .collect();
        self.vec_source(mine, timestamp, strategy)
    }

    /// A source over `items` read by worker 0 alone, in order (a source of parallelism
    /// 1: e.g. rules for the broadcast pattern, applied in input order).
    pub fn source_vec_unsplit<T: Data>(
        &mut self,
        items: Vec<T>,
        timestamp: impl Fn(&T) -> i64 + 'static,
        strategy: WatermarkStrategy,
    ) -> DataStream<'scope, T> {
        let mine = if self.worker_index() == 0 {
            items
        } else {
            Vec::new()
        };
        self.vec_source(mine, timestamp, strategy)
    }

    fn vec_source<T: Data>(
        &mut self,
        mine: Vec<T>,
        timestamp: impl Fn(&T) -> i64 + 'static,
        strategy: WatermarkStrategy,
    ) -> DataStream<'scope, T> {
        let (input, stream) = self.scope.new_input::<Vec<(i64, T)>>();
        self.drivers.push(Box::new(IterSource {
            items: Box::new(mine.into_iter()),
            timestamp: Box::new(timestamp),
            strategy,
            max_ts: i64::MIN,
            input,
        }));
        self.stream(stream)
    }

    pub(crate) fn stream<T>(
        &self,
        inner: StreamVec<'scope, u64, (i64, T)>,
    ) -> DataStream<'scope, T> {
        DataStream {
            inner,
            side: None,
            config: self.config.clone(),
            errors: self.errors.clone(),
            scope: self.scope,
        }
    }
}

/// A stream of records of type `T` with event times.
pub struct DataStream<'scope, T> {
    pub(crate) inner: StreamVec<'scope, u64, (i64, T)>,
    /// Side outputs of the operator that made this stream: (tag name, value bytes).
    pub(crate) side: Option<SideStream<'scope>>,
    pub(crate) config: Arc<JobConfig>,
    pub(crate) errors: ErrorSlot,
    pub(crate) scope: Scope<'scope, u64>,
}

/// Side outputs of a keyed operator: `(event time, (tag name, value bytes))`.
pub(crate) type SideStream<'scope> = StreamVec<'scope, u64, (i64, (String, Vec<u8>))>;

impl<'scope, T: Data> DataStream<'scope, T> {
    /// Splits a keyed operator's output into the main stream and its side outputs.
    pub(crate) fn from_tagged(
        raw: StreamVec<'scope, u64, (i64, Tagged<T>)>,
        config: Arc<JobConfig>,
        errors: ErrorSlot,
        scope: Scope<'scope, u64>,
    ) -> Self {
        let main = flat_map_stream(&raw, "Main", |t| match t {
            Tagged::Main(v) => Some(v),
            Tagged::Side(..) => None,
        });
        let side = flat_map_stream(&raw, "Side", |t| match t {
            Tagged::Main(_) => None,
            Tagged::Side(name, bytes) => Some((name, bytes)),
        });
        DataStream {
            inner: main,
            side: Some(side),
            config,
            errors,
            scope,
        }
    }

    /// The side output `tag` of the operator that made this stream (Flink's
    /// `getSideOutput`); empty when that operator emitted none by this name. Only
    /// keyed operators (process functions, windows, broadcast joins) have side outputs:
    /// on any other stream the job fails with [`crate::RuntimeError::Config`] instead of
    /// silently giving nothing.
    pub fn side_output<U: Data>(&self, tag: &OutputTag<U>) -> DataStream<'scope, U> {
        let tag = tag.clone();
        let errors = self.errors.clone();
        let inner = match &self.side {
            Some(side) => flat_map_stream(side, "SideOutput", move |(name, bytes)| {
                if name != tag.name() {
                    return None;
                }
                match tag.decode(&bytes) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        crate::record_error(&errors, e);
                        None
                    }
                }
            }),
            None => {
                crate::record_error(
                    &self.errors,
                    crate::RuntimeError::Config(format!(
                        "side output {:?} asked of a stream without side outputs; ask the \
                         result of process/window/broadcast process directly",
                        tag.name()
                    )),
                );
                flat_map_stream(&self.inner, "NoSideOutput", |_| None)
            }
        };
        self.with(inner)
    }

    fn with<U>(&self, inner: StreamVec<'scope, u64, (i64, U)>) -> DataStream<'scope, U> {
        DataStream {
            inner,
            side: None,
            config: self.config.clone(),
            errors: self.errors.clone(),
            scope: self.scope,
        }
    }

    /// Zero or more records per record, keeping its event time.
    pub fn flat_map<U: Data, I: IntoIterator<Item = U>>(
        self,
        f: impl FnMut(T) -> I + 'static,
    ) -> DataStream<'scope, U> {
        let inner = flat_map_stream(&self.inner, "FlatMap", f);
        self.with(inner)
    }

    /// One record per record.
    pub fn map<U: Data>(self, mut f: impl FnMut(T) -> U + 'static) -> DataStream<'scope, U> {
        self.flat_map(move |t| std::iter::once(f(t)))
    }

    /// Only the records `f` accepts.
    pub fn filter(self, mut f: impl FnMut(&T) -> bool + 'static) -> DataStream<'scope, T> {
        self.flat_map(move |t| f(&t).then_some(t))
    }

    /// Partitions by key: records go to the worker owning their key's key group.
    pub fn key_by<K: Data + std::hash::Hash + Eq + Sync>(
        self,
        key: impl Fn(&T) -> K + 'static,
    ) -> KeyedStream<'scope, K, T> {
        let max_p = self.config.max_parallelism;
        let peers = self.scope.peers() as u32;
        let ser = SerdeSerializer::<K>::new();
        let errors = self.errors.clone();
        let mut buf = Vec::new();
        // Key groups are computed on the sending side, as in Flink's KeyGroupStreamPartitioner.
        let keyed = self.flat_map(move |t| {
            let k = key(&t);
            buf.clear();
            match ser.serialize_into(&k, &mut buf) {
                Ok(()) => {
                    let kg = key_group_for_serialized_key(&buf, max_p);
                    match operator_index_for_key_group(max_p, peers, kg) {
                        Ok(target) => Some((target, kg, k, t)),
                        Err(e) => {
                            crate::record_error(&errors, e.into());
                            None
                        }
                    }
                }
                Err(e) => {
                    crate::record_error(
                        &errors,
                        flowstate_core::StateError::serialization("<key>", e).into(),
                    );
                    None
                }
            }
        });
        KeyedStream { inner: keyed }
    }

    /// Calls `f` with every record (on the worker that holds it).
    pub fn sink(self, mut f: impl FnMut(&T) + 'static) {
        self.inner.inspect(move |(_, v)| f(v));
    }

    /// Prints every record to stdout, prefixed with the worker index.
    pub fn print(self)
    where
        T: std::fmt::Debug,
    {
        let index = self.scope.index();
        self.sink(move |v| println!("{index}> {v:?}"));
    }

    /// Gathers this worker's records; [`crate::execute`] returns them per worker.
    pub fn collect(self) -> Collected<T> {
        let out = Collected(Rc::new(RefCell::new(Vec::new())));
        let o = out.0.clone();
        self.sink(move |v| o.borrow_mut().push(v.clone()));
        out
    }

    /// Like [`DataStream::collect`], keeping each record's event time.
    pub fn collect_with_time(self) -> Collected<(i64, T)> {
        let out = Collected(Rc::new(RefCell::new(Vec::new())));
        let o = out.0.clone();
        self.inner
            .inspect(move |(ts, v)| o.borrow_mut().push((*ts, v.clone())));
        out
    }
}

/// A pipelined (same-worker) operator emitting zero or more records per record, each
/// with the event time of the record it came from.
pub(crate) fn flat_map_stream<
    'scope,
    T: Clone + 'static,
    U: Clone + 'static,
    I: IntoIterator<Item = U>,
>(
    stream: &StreamVec<'scope, u64, (i64, T)>,
    name: &str,
    mut f: impl FnMut(T) -> I + 'static,
) -> StreamVec<'scope, u64, (i64, U)> {
    stream
        .clone()
        .unary::<CapacityContainerBuilder<Vec<(i64, U)>>, _, _, _>(Pipeline, name, |_cap, _info| {
            move |input, output| {
                input.for_each(|time, data| {
                    let mut session = output.session(&time);
                    for (ts, v) in data.drain(..) {
                        for u in f(v) {
                            session.give((ts, u));
                        }
                    }
                });
            }
        })
}

/// Records of one worker gathered by [`DataStream::collect`].
pub struct Collected<T>(Rc<RefCell<Vec<T>>>);

/// What a job's build function hands back per worker.
pub trait JobResult {
    /// What [`crate::execute`] returns for the worker.
    type Output: Send + 'static;
    /// Extracts it once the job is done.
    fn finish(self) -> Self::Output;
}

impl<T: Send + 'static> JobResult for Collected<T> {
    type Output = Vec<T>;
    fn finish(self) -> Vec<T> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

impl JobResult for () {
    type Output = ();
    fn finish(self) {}
}

impl<A: JobResult, B: JobResult> JobResult for (A, B) {
    type Output = (A::Output, B::Output);
    fn finish(self) -> Self::Output {
        (self.0.finish(), self.1.finish())
    }
}

/// A stream partitioned by key `K`; records carry their target worker and key group.
pub struct KeyedStream<'scope, K, T> {
    pub(crate) inner: DataStream<'scope, (u32, u32, K, T)>,
}

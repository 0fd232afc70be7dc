//! The dataflow-building API: a [`Job`] makes sources, [`DataStream`]s are transformed
//! and keyed, [`KeyedStream`]s are processed with state.
//!
//! Every record travels as `(event time, value)`; the timely timestamp of the batch
//! is the watermark epoch it was sent in (see the crate docs).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use flowstate_core::keygroup::{KeyGroupOwners, key_group_for_hash, key_hash};
use flowstate_core::serializer::{IntegerEncoding, SerdeSerializer, TypeSerializer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Input, Inspect};
use timely::dataflow::{Scope, StreamVec};

use crate::flow::Pacer;
use crate::keyed::OutputTag;
use crate::source::{SeqSource, Source, SourceDriver, SplitFactory, SplitSource, split_factory};
use crate::task::{TaskRef, WorkerCheckpoints, start_later};
use crate::time::Time;
use crate::{ErrorSlot, JobConfig, record_error};

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

/// The dataflow under construction on one worker.
pub struct Job<'scope> {
    pub(crate) scope: Scope<'scope, Time>,
    pub(crate) config: Arc<JobConfig>,
    pub(crate) errors: ErrorSlot,
    /// Sources; shared because a source is made once the job is described (see
    /// `WorkerCheckpoints::seal`).
    pub(crate) drivers: Rc<RefCell<Vec<Box<dyn SourceDriver>>>>,
    pub(crate) checkpoints: Option<Rc<WorkerCheckpoints>>,
    /// Flow control: the probe keyed operators report to and sources wait on.
    pub(crate) pacer: Pacer,
}

impl<'scope> Job<'scope> {
    pub(crate) fn new(
        scope: Scope<'scope, Time>,
        config: Arc<JobConfig>,
        errors: ErrorSlot,
        checkpoints: Option<Rc<WorkerCheckpoints>>,
    ) -> Self {
        let pacer = Pacer::new(config.flow_control);
        Job {
            scope,
            config,
            errors,
            drivers: Rc::new(RefCell::new(Vec::new())),
            checkpoints,
            pacer,
        }
    }

    /// Ends the build: every operator's uid is known, so each restores its state now
    /// (a bad or duplicate uid fails the job); returns the sources to drive.
    pub(crate) fn into_drivers(self) -> Vec<Box<dyn SourceDriver>> {
        if let Some(ctx) = &self.checkpoints
            && let Err(e) = ctx.seal()
        {
            record_error(&self.errors, e);
        }
        std::mem::take(&mut *self.drivers.borrow_mut())
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
        let (index, peers) = (self.worker_index() as u64, self.workers() as u64);
        self.seq_source(items, Some((index, peers)), timestamp, strategy)
    }

    /// A source over `items` read by worker 0 alone, in order (a source of parallelism
    /// 1: e.g. rules for the broadcast pattern, applied in input order).
    pub fn source_vec_unsplit<T: Data>(
        &mut self,
        items: Vec<T>,
        timestamp: impl Fn(&T) -> i64 + 'static,
        strategy: WatermarkStrategy,
    ) -> DataStream<'scope, T> {
        let split = (self.worker_index() == 0).then_some((0, 1));
        self.seq_source(items, split, timestamp, strategy)
    }

    /// A vec source whose fresh split on this worker is `split` = (index, of).
    fn seq_source<T: Data>(
        &mut self,
        items: Vec<T>,
        split: Option<(u64, u64)>,
        timestamp: impl Fn(&T) -> i64 + 'static,
        strategy: WatermarkStrategy,
    ) -> DataStream<'scope, T> {
        let items = Rc::new(items);
        let source = SeqSource {
            fresh: split,
            len: items.len() as u64,
            element: Box::new(move |_| {
                let items = items.clone();
                Box::new(move |i| items.get(usize::try_from(i).ok()?).cloned())
            }),
        };
        self.source("source", source, timestamp, strategy)
    }

    /// A source reading the splits of a user-defined [`SplitSource`] (see its docs:
    /// split positions live in the source's operator state, so the job replays from
    /// them after a failure), with event times from `timestamp` and watermarks by
    /// `strategy`. `name` names the source in errors and in the id it gets without a
    /// uid ([`DataStream::uid`]).
    pub fn source<T: Data, S: SplitSource<T>>(
        &mut self,
        name: &str,
        source: S,
        timestamp: impl Fn(&T) -> i64 + 'static,
        strategy: WatermarkStrategy,
    ) -> DataStream<'scope, T> {
        let make = split_factory(source, self.worker_index(), self.workers());
        self.add_source(name, make, Box::new(timestamp), strategy)
    }

    /// Adds a source reading the splits `make` gives.
    fn add_source<T: Data>(
        &mut self,
        kind: &str,
        make: SplitFactory<T>,
        timestamp: Box<dyn Fn(&T) -> i64>,
        strategy: WatermarkStrategy,
    ) -> DataStream<'scope, T> {
        let (input, stream) = self.scope.new_input::<Vec<(i64, T)>>();
        let identity = self.checkpoints.as_ref().map(|c| c.register(kind, true));
        let (ctx, task) = (self.checkpoints.clone(), identity.clone());
        let (drivers, errors) = (self.drivers.clone(), self.errors.clone());
        let name = kind.to_string();
        let pacer = self.pacer.clone();
        start_later(self.checkpoints.as_ref(), move || {
            let task = ctx.zip(task);
            let (errs, made) = (errors.clone(), (input, make, timestamp));
            match Source::new(name, task, made.0, made.1, made.2, strategy, errs, pacer) {
                Ok(s) => drivers.borrow_mut().push(Box::new(s)),
                Err(e) => record_error(&errors, e),
            }
        });
        let mut out = self.stream(stream);
        out.task = identity;
        out
    }

    pub(crate) fn stream<T>(
        &self,
        inner: StreamVec<'scope, Time, (i64, T)>,
    ) -> DataStream<'scope, T> {
        DataStream {
            inner,
            side: None,
            config: self.config.clone(),
            errors: self.errors.clone(),
            scope: self.scope,
            checkpoints: self.checkpoints.clone(),
            task: None,
            pacer: self.pacer.clone(),
        }
    }
}

/// A stream of records of type `T` with event times.
pub struct DataStream<'scope, T> {
    pub(crate) inner: StreamVec<'scope, Time, (i64, T)>,
    /// Side outputs of the operator that made this stream: (tag name, value bytes).
    pub(crate) side: Option<SideStream<'scope>>,
    pub(crate) config: Arc<JobConfig>,
    pub(crate) errors: ErrorSlot,
    pub(crate) scope: Scope<'scope, Time>,
    /// This worker's checkpointing, when the job checkpoints.
    pub(crate) checkpoints: Option<Rc<WorkerCheckpoints>>,
    /// The snapshotting operator that made this stream, whose uid `.uid()` sets.
    pub(crate) task: Option<TaskRef>,
    /// Flow control (see [`Job`]).
    pub(crate) pacer: Pacer,
}

/// A second handle on the same stream (every record goes to both consumers); `uid`
/// on either names the same operator.
impl<T: Clone + 'static> Clone for DataStream<'_, T> {
    fn clone(&self) -> Self {
        DataStream {
            inner: self.inner.clone(),
            side: self.side.clone(),
            config: self.config.clone(),
            errors: self.errors.clone(),
            scope: self.scope,
            checkpoints: self.checkpoints.clone(),
            task: self.task.clone(),
            pacer: self.pacer.clone(),
        }
    }
}

/// Side outputs of a keyed operator: `(event time, (tag name, value bytes))`.
pub(crate) type SideStream<'scope> = StreamVec<'scope, Time, (i64, (String, Vec<u8>))>;

impl<'scope, T: Data> DataStream<'scope, T> {
    /// The main stream of a keyed operator, with its `side` outputs, on the worker of
    /// `input` (the operator's input stream); the main output reports to flow
    /// control's probe.
    pub(crate) fn from_keyed<U>(
        main: StreamVec<'scope, Time, (i64, T)>,
        side: SideStream<'scope>,
        input: &DataStream<'scope, U>,
        task: Option<TaskRef>,
    ) -> Self {
        use timely::dataflow::operators::Probe;
        let main = main.probe_with(input.pacer.probe());
        DataStream {
            inner: main,
            side: Some(side),
            config: input.config.clone(),
            errors: input.errors.clone(),
            scope: input.scope,
            checkpoints: input.checkpoints.clone(),
            task,
            pacer: input.pacer.clone(),
        }
    }

    /// Sets the uid of the operator that made this stream (Flink's `uid`): its state
    /// is stored and restored under this name, so a savepoint still restores after
    /// operators are added, removed or reordered. Give one to every stateful operator
    /// (sources, keyed process functions, windows, broadcast joins, sinks) and never
    /// change it. A uid is 1 to 128 ASCII letters, digits, `-`, `_` or `.`; two
    /// operators with the same uid fail the job with [`crate::RuntimeError::Config`].
    /// On a stream made by a stateless operator (`map`, `filter`, ...) it has no
    /// effect: such operators have no state to map.
    pub fn uid(self, uid: impl Into<String>) -> Self {
        if let Some(t) = &self.task {
            t.set_uid(uid.into());
        }
        self
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

    fn with<U>(&self, inner: StreamVec<'scope, Time, (i64, U)>) -> DataStream<'scope, U> {
        DataStream {
            inner,
            side: None,
            config: self.config.clone(),
            errors: self.errors.clone(),
            scope: self.scope,
            checkpoints: self.checkpoints.clone(),
            task: None,
            pacer: self.pacer.clone(),
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
        let router = KeyRouter::<K>::new(
            self.config.max_parallelism,
            self.scope.peers() as u32,
            self.errors.clone(),
        );
        let (mut keys, mut bytes, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        let mut routed = Vec::new();
        // Key groups are computed on the sending side, as in Flink's KeyGroupStreamPartitioner.
        let inner = self
            .inner
            .clone()
            .unary::<CapacityContainerBuilder<Vec<(i64, (u32, u32, K, T))>>, _, _, _>(
                Pipeline,
                "KeyBy",
                |_cap, _info| {
                    move |input, output| {
                        input.for_each(|time, data| {
                            // The batch goes out whole, not record by record through
                            // the output's container builder.
                            routed.clear();
                            routed.reserve(data.len());
                            if IntegerEncoding::covers::<K>() {
                                // An integer key's bytes are built in registers and
                                // hashed from there: no serialized batch.
                                for (ts, t) in data.drain(..) {
                                    let k = key(&t);
                                    if let Some((target, kg)) = router.route_key(&k, &mut bytes) {
                                        routed.push((ts, (target, kg, k, t)));
                                    }
                                }
                            } else {
                                router.serialize(data, &key, &mut keys, &mut bytes, &mut ends);
                                let mut start = 0;
                                let batch = data.drain(..).zip(keys.drain(..)).zip(&ends);
                                for (((ts, t), k), &end) in batch {
                                    // `None`: the key failed to serialize (reported).
                                    let Some(end) = end else { continue };
                                    let serialized = &bytes[start..end];
                                    start = end;
                                    if let Some((target, kg)) = router.route(serialized) {
                                        routed.push((ts, (target, kg, k, t)));
                                    }
                                }
                            }
                            output.session(&time).give_container(&mut routed);
                        });
                    }
                },
            );
        let keyed = self.with(inner);
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

/// How `key_by` finds a record's key group and worker.
struct KeyRouter<K> {
    max_p: u32,
    /// `None` when the parallelism cannot be placed (reported when built).
    owners: Option<KeyGroupOwners>,
    ser: SerdeSerializer<K>,
    errors: ErrorSlot,
}

impl<K: Data> KeyRouter<K> {
    /// Routes to `peers` workers over `max_p` key groups; a configuration that cannot
    /// place them is reported into `errors`, and no record is routed.
    fn new(max_p: u32, peers: u32, errors: ErrorSlot) -> Self {
        let owners = KeyGroupOwners::new(max_p, peers)
            .map_err(|e| record_error(&errors, e.into()))
            .ok();
        KeyRouter {
            max_p,
            owners,
            ser: SerdeSerializer::new(),
            errors,
        }
    }

    /// The keys of a batch of records, into `keys`, and their serialized bytes back to
    /// back into `bytes`, each ending at its entry of `ends` (`None` for a key that
    /// failed to serialize, which is reported). A whole batch is serialized
    /// before any key is hashed: hashing a key right after the serializer stored it
    /// byte by byte made the hash's wide loads wait for those stores to drain.
    fn serialize<T>(
        &self,
        data: &[(i64, T)],
        key: &impl Fn(&T) -> K,
        keys: &mut Vec<K>,
        bytes: &mut Vec<u8>,
        ends: &mut Vec<Option<usize>>,
    ) {
        keys.clear();
        bytes.clear();
        ends.clear();
        for (_, t) in data {
            let k = key(t);
            let at = bytes.len();
            match self.ser.serialize_into(&k, bytes) {
                Ok(()) => ends.push(Some(bytes.len())),
                Err(e) => {
                    bytes.truncate(at);
                    ends.push(None);
                    self.key_failed(e);
                }
            }
            keys.push(k);
        }
    }

    /// The worker and key group of one key, serialized into `scratch` unless it is
    /// an integer (hashed from its value, [`IntegerEncoding::key_hash_of`]); `None`
    /// (reported) when it fails to serialize or the configuration cannot place it.
    ///
    /// Always inlined, the serializing path kept apart: called, this returned its
    /// pair through memory as two 4-byte stores that the caller read back as one
    /// 8-byte load, which cannot be forwarded from them and waited for both to
    /// retire (5% of the heap `value` job in `perf`).
    #[inline(always)]
    fn route_key(&self, key: &K, scratch: &mut Vec<u8>) -> Option<(u32, u32)> {
        match IntegerEncoding::key_hash_of(key) {
            Some(hash) => self.route_hash(hash),
            None => self.route_serialized(key, scratch),
        }
    }

    /// [`KeyRouter::route_key`] of a key that is not an integer.
    fn route_serialized(&self, key: &K, scratch: &mut Vec<u8>) -> Option<(u32, u32)> {
        scratch.clear();
        match self.ser.serialize_into(key, scratch) {
            Ok(()) => self.route(scratch),
            Err(e) => {
                self.key_failed(e);
                None
            }
        }
    }

    /// Reports a key that failed to serialize (its record is dropped).
    fn key_failed(&self, e: flowstate_core::SerializationError) {
        record_error(
            &self.errors,
            flowstate_core::StateError::serialization("<key>", e).into(),
        );
    }

    /// The worker and key group of a serialized key; `None` when the configuration
    /// cannot place it (reported when the router was built).
    #[inline]
    fn route(&self, serialized: &[u8]) -> Option<(u32, u32)> {
        self.route_hash(key_hash(serialized))
    }

    /// The worker and key group of a key whose [`key_hash`] is `hash`.
    #[inline]
    fn route_hash(&self, hash: u32) -> Option<(u32, u32)> {
        let kg = key_group_for_hash(hash, self.max_p);
        Some((self.owners?.owner(kg), kg))
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
    stream: &StreamVec<'scope, Time, (i64, T)>,
    name: &str,
    mut f: impl FnMut(T) -> I + 'static,
) -> StreamVec<'scope, Time, (i64, U)> {
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

/// The end of a stream written by a sink (e.g. [`DataStream::write_text_files`]).
pub struct DataSink {
    pub(crate) task: Option<TaskRef>,
}

impl DataSink {
    /// Sets the sink's uid: its pending transactions are stored under this name
    /// (see [`DataStream::uid`]).
    pub fn uid(self, uid: impl Into<String>) -> Self {
        if let Some(t) = &self.task {
            t.set_uid(uid.into());
        }
        self
    }
}

impl JobResult for DataSink {
    type Output = ();
    fn finish(self) {}
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use flowstate_core::keygroup::{key_group_for_serialized_key, operator_index_for_key_group};
    use serde::{Deserialize, Serializer};

    /// A key whose serialization fails when it is negative.
    #[derive(Clone, Debug, PartialEq, Deserialize)]
    struct Picky(i64);

    impl Serialize for Picky {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if self.0 < 0 {
                return Err(serde::ser::Error::custom("negative"));
            }
            s.serialize_i64(self.0)
        }
    }

    /// A batch is serialized back to back, a failed key leaving no bytes and an error,
    /// and each key's slice routes as the key alone does.
    #[test]
    fn a_batch_routes_each_key_as_alone_and_reports_failures() {
        let errors: ErrorSlot = Rc::new(RefCell::new(None));
        let router = router::<Picky>(&errors);
        let data: Vec<(i64, i64)> = vec![(0, 5), (1, 300), (2, -1), (3, 70_000), (4, -9), (5, 0)];
        let (mut keys, mut bytes, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        router.serialize(
            &data,
            &|v: &i64| Picky(*v),
            &mut keys,
            &mut bytes,
            &mut ends,
        );
        assert_eq!(
            keys,
            data.iter().map(|(_, v)| Picky(*v)).collect::<Vec<_>>()
        );
        assert!(errors.borrow().is_some(), "the failure is reported");
        let mut start = 0;
        for ((_, v), end) in data.iter().zip(&ends) {
            let Some(end) = *end else {
                assert!(*v < 0, "only the negative keys fail");
                continue;
            };
            let mut alone = Vec::new();
            SerdeSerializer::<Picky>::new()
                .serialize_into(&Picky(*v), &mut alone)
                .unwrap();
            assert_eq!(&bytes[start..end], &alone[..], "key {v}");
            assert_eq!(
                router.route(&bytes[start..end]),
                Some(expected_route(&Picky(*v)))
            );
            start = end;
        }
        assert_eq!(start, bytes.len());
        assert_eq!(ends.iter().filter(|e| e.is_none()).count(), 2);
    }

    /// The route of one key of a type `T`, serialized by `SerdeSerializer` and
    /// placed as Flink places it.
    fn expected_route<T: Serialize + DeserializeOwned + 'static>(key: &T) -> (u32, u32) {
        let mut bytes = Vec::new();
        SerdeSerializer::<T>::new()
            .serialize_into(key, &mut bytes)
            .unwrap();
        let kg = key_group_for_serialized_key(&bytes, 128);
        (operator_index_for_key_group(128, 3, kg).unwrap(), kg)
    }

    /// A router for 3 workers and 128 key groups, reporting into `errors`.
    fn router<T: Data>(errors: &ErrorSlot) -> KeyRouter<T> {
        KeyRouter::new(128, 3, errors.clone())
    }

    /// A parallelism that cannot be placed is reported once, when the router is
    /// built, and nothing is routed.
    #[test]
    fn a_router_that_cannot_place_its_workers_reports_it_and_routes_nothing() {
        let errors: ErrorSlot = Rc::new(RefCell::new(None));
        let router = KeyRouter::<u64>::new(4, 5, errors.clone());
        assert!(errors.borrow().is_some(), "the configuration is reported");
        assert_eq!(router.route_key(&7, &mut Vec::new()), None);
    }

    proptest::proptest! {
        /// Every key group goes to the worker Flink's assignment gives, at any valid
        /// maximum parallelism and parallelism.
        #[test]
        fn a_router_places_key_groups_as_flink_does(
            max_p in proptest::prop_oneof![1u32..300, proptest::sample::select(vec![128u32, 4096, 32768])],
            peers_seed in proptest::num::u32::ANY,
            // Keys below 2^21 are hashed from their value without their encoding.
            key in proptest::prop_oneof![0u64..1 << 22, proptest::num::u64::ANY],
        ) {
            let peers = 1 + peers_seed % max_p;
            let errors: ErrorSlot = Rc::new(RefCell::new(None));
            let router = KeyRouter::<u64>::new(max_p, peers, errors.clone());
            let mut bytes = Vec::new();
            SerdeSerializer::<u64>::new().serialize_into(&key, &mut bytes).unwrap();
            let kg = key_group_for_serialized_key(&bytes, max_p);
            let expected = operator_index_for_key_group(max_p, peers, kg).unwrap();
            proptest::prop_assert_eq!(router.route_key(&key, &mut Vec::new()), Some((expected, kg)));
            proptest::prop_assert!(expected < peers);
            proptest::prop_assert!(errors.borrow().is_none());
        }

        /// A key routed alone (integers from registers, others serialized) goes where
        /// its serialized bytes place it.
        #[test]
        fn a_key_alone_routes_as_its_serialized_bytes(
            v in proptest::prop_oneof![-300i64..300, proptest::num::i64::ANY],
            s in ".{0,12}",
        ) {
            let errors: ErrorSlot = Rc::new(RefCell::new(None));
            let mut scratch = vec![9, 9];
            proptest::prop_assert_eq!(
                router::<u64>(&errors).route_key(&(v as u64), &mut scratch),
                Some(expected_route(&(v as u64)))
            );
            proptest::prop_assert_eq!(router::<i64>(&errors).route_key(&v, &mut scratch), Some(expected_route(&v)));
            proptest::prop_assert_eq!(
                router::<i32>(&errors).route_key(&(v as i32), &mut scratch),
                Some(expected_route(&(v as i32)))
            );
            proptest::prop_assert_eq!(
                router::<u32>(&errors).route_key(&(v as u32), &mut scratch),
                Some(expected_route(&(v as u32)))
            );
            proptest::prop_assert_eq!(router::<String>(&errors).route_key(&s, &mut scratch), Some(expected_route(&s)));
            proptest::prop_assert!(errors.borrow().is_none());
        }
    }

    /// A key that fails to serialize alone is not routed, and the failure is reported.
    #[test]
    fn a_key_alone_that_fails_to_serialize_is_reported() {
        let errors: ErrorSlot = Rc::new(RefCell::new(None));
        let router = router::<Picky>(&errors);
        let mut scratch = Vec::new();
        assert_eq!(router.route_key(&Picky(-3), &mut scratch), None);
        assert!(errors.borrow().is_some(), "the failure is reported");
        assert_eq!(
            router.route_key(&Picky(3), &mut scratch),
            Some(expected_route(&3i64))
        );
    }
}

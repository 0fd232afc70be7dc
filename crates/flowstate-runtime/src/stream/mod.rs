//! The dataflow-building API: a [`Job`] makes sources, [`DataStream`]s are transformed
//! and keyed, [`KeyedStream`]s are processed with state.
//!
//! Every record travels as `(event time, value)`; the timely timestamp of the batch
//! is the watermark epoch it was sent in (see the crate docs).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use flowstate_core::serializer::IntegerEncoding;
use serde::Serialize;
use serde::de::DeserializeOwned;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::{Scope, StreamVec};

use crate::flow::Pacer;
use crate::keyed::OutputTag;
use crate::task::{TaskRef, WorkerCheckpoints};
use crate::time::Time;
use crate::{ErrorSlot, JobConfig};

mod job;
mod results;
mod route;

pub use job::{Job, WatermarkStrategy};
pub use results::{Collected, DataSink, JobResult};
use route::KeyRouter;

/// Records exchanged between workers: any owned, serializable value.
pub trait Data: Clone + Serialize + DeserializeOwned + Send + 'static {}
impl<T: Clone + Serialize + DeserializeOwned + Send + 'static> Data for T {}

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

/// A stream partitioned by key `K`; records carry their target worker and key group.
pub struct KeyedStream<'scope, K, T> {
    pub(crate) inner: DataStream<'scope, (u32, u32, K, T)>,
}

//! [`Job`]: the dataflow under construction on one worker, and the sources it makes.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::operators::Input;
use timely::dataflow::{Scope, StreamVec};

use crate::flow::Pacer;
use crate::source::{SeqSource, Source, SourceDriver, SplitFactory, SplitSource, split_factory};
use crate::task::{WorkerCheckpoints, start_later};
use crate::time::Time;
use crate::{ErrorSlot, JobConfig, record_error};

use super::{Data, DataStream};

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

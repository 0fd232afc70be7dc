//! Flowstate's streaming runtime on timely dataflow.
//!
//! A job runs as timely workers (threads of one process today; timely's own
//! process/host configuration runs the same job over several processes). The user's
//! build function runs once per worker and describes the dataflow with a Flink-like
//! API: [`Job::source_vec`], [`DataStream::map`]/[`DataStream::filter`]/
//! [`DataStream::flat_map`], [`DataStream::key_by`], [`KeyedStream::process`] with a
//! [`KeyedProcessFunction`], and sinks.
//!
//! **Key groups.** `key_by` exchanges records by key group: a record goes to the worker
//! that owns its key's group at the job's parallelism (Flink's formulas, SPEC 1.2), so
//! state lands where Flink would put it and rescales the same way. Each keyed operator
//! instance holds a keyed backend for its key-group range, of the kind chosen in
//! [`JobConfig::backend`] ([`BackendChoice`]); user code never names a backend.
//!
//! **Time.** Timely's timestamps are the watermarks. Every record carries its event
//! time; a source sends records at its current watermark epoch and advances the epoch
//! as its bounded-out-of-orderness watermark grows (`max seen - bound - 1`). Timely's
//! progress tracking then gives every operator, as its input frontier, the minimum
//! watermark over all its inputs and all workers: an operator with frontier `f` has
//! watermark `f - 1`, and once the input ends every event-time timer fires (Flink's
//! final watermark). Processing time comes from the injectable [`JobConfig::clock`].
//!
//! ```
//! use flowstate_core::descriptor::ValueStateDescriptor;
//! use flowstate_core::state::ValueState;
//! use flowstate_runtime::{
//!     JobConfig, KeyedProcessFunction, OpenContext, ProcessContext, RuntimeError,
//!     WatermarkStrategy, execute, opened,
//! };
//! use std::rc::Rc;
//!
//! /// Running count per word.
//! #[derive(Default)]
//! struct Count(Option<Rc<dyn ValueState<u64>>>);
//! impl KeyedProcessFunction<String, String, (String, u64)> for Count {
//!     fn open(&mut self, ctx: &OpenContext<'_, String>) -> Result<(), RuntimeError> {
//!         self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("count"))?);
//!         Ok(())
//!     }
//!     fn process_element(
//!         &mut self,
//!         word: String,
//!         ctx: &mut ProcessContext<'_, String, (String, u64)>,
//!     ) -> Result<(), RuntimeError> {
//!         let s = opened(&self.0)?;
//!         let n = s.value()?.unwrap_or(0) + 1;
//!         s.update(n)?;
//!         ctx.collect((word, n));
//!         Ok(())
//!     }
//! }
//!
//! let out = execute(JobConfig::default().workers(2), |job| {
//!     let words = vec!["a", "b", "a"].into_iter().map(String::from).collect();
//!     job.source_vec(words, |_| 0, WatermarkStrategy::None)
//!         .key_by(|w: &String| w.clone())
//!         .process(Count::default())
//!         .collect()
//! })
//! .unwrap();
//! let mut all: Vec<(String, u64)> = out.into_iter().flatten().collect();
//! all.sort();
//! assert_eq!(all, vec![("a".into(), 1), ("a".into(), 2), ("b".into(), 1)]);
//! ```

mod backend;
mod broadcast;
pub mod checkpoint;
mod config;
mod connectors;
mod error;
mod execute;
mod failpoint;
mod flow;
mod handle;
mod keyed;
mod metrics;
pub mod ownership;
mod process;
pub mod query;
mod sink;
mod source;
mod stream;
mod task;
mod time;
mod timers;
mod window;

use std::cell::RefCell;
use std::rc::Rc;

pub use backend::{AnyBackend, AnySnapshot, BackendChoice};
pub use broadcast::{
    BroadcastConnectedStream, BroadcastContext, BroadcastStream, KeyedBroadcastProcessFunction,
    ReadOnlyBroadcastState, ReadOnlyContext,
};
pub use checkpoint::{CheckpointConfig, CheckpointMetadata, ClaimMode, RestoreFrom, SnapshotKind};
pub use config::{Cluster, JobConfig};
pub use connectors::{FileError, FileFormat, FilePosition, FileSink, SinkTransaction};
pub use error::{BoxError, RuntimeError};
pub use execute::execute;
pub use flow::FlowControl;
pub use flowstate_core::ttl::{ManualClock, SystemClock, TtlClock as Clock};
#[cfg(feature = "rocksdb")]
pub use flowstate_rocksdb::RocksDbOptions;
pub use handle::{JobHandle, JobStatus, RunningJob, Savepoint, spawn};
pub use keyed::OutputTag;
#[cfg(feature = "nexmark")]
pub use nexmark;
pub use process::{
    KeyedProcessFunction, OpenContext, ProcessContext, TimerContext, TimerService, opened,
};
pub use sink::{SINK_TRANSACTIONS_STATE, SinkContext, TransactionalSink};
pub use source::{Read, SOURCE_SPLITS_STATE, SplitPosition, SplitReader, SplitSource, SplitState};
pub use stream::{
    Collected, Data, DataSink, DataStream, Job, JobResult, KeyedStream, WatermarkStrategy,
};
pub use task::valid_uid;
pub use timers::{EVENT_TIMER_STATE, PROCESSING_TIMER_STATE, TimeDomain, TimerState};
pub use window::{TimeWindow, WindowAssigner, WindowedStream};

/// The first error of a worker; later ones are dropped (they are usually consequences).
pub(crate) type ErrorSlot = Rc<RefCell<Option<RuntimeError>>>;

pub(crate) fn record_error(slot: &ErrorSlot, e: RuntimeError) {
    let mut s = slot.borrow_mut();
    if s.is_none() {
        *s = Some(e);
    }
}

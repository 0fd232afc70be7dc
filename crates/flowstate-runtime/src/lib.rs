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
//!     WatermarkStrategy, execute,
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
//!         let s = self.0.as_ref().ok_or(RuntimeError::NotOpened)?;
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
mod connectors;
mod failpoint;
mod handle;
mod keyed;
pub mod ownership;
mod process;
mod sink;
mod source;
mod stream;
mod task;
mod time;
mod timers;
mod window;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

pub use backend::{AnyBackend, AnySnapshot, BackendChoice};
pub use broadcast::{
    BroadcastConnectedStream, BroadcastContext, BroadcastStream, KeyedBroadcastProcessFunction,
    ReadOnlyBroadcastState, ReadOnlyContext,
};
pub use checkpoint::{CheckpointConfig, CheckpointMetadata, ClaimMode, RestoreFrom, SnapshotKind};
use checkpoint::{Control, Coordinator, ProcessRole};
pub use connectors::{FileError, FileFormat, FilePosition, FileSink, SinkTransaction};
use flowstate_core::StateError;
pub use flowstate_core::ttl::{ManualClock, SystemClock, TtlClock as Clock};
#[cfg(feature = "rocksdb")]
pub use flowstate_rocksdb::RocksDbOptions;
pub use handle::{JobHandle, JobStatus, RunningJob, Savepoint, spawn};
pub use keyed::OutputTag;
#[cfg(feature = "nexmark")]
pub use nexmark;
pub use process::{KeyedProcessFunction, OpenContext, ProcessContext, TimerContext, TimerService};
pub use sink::{SINK_TRANSACTIONS_STATE, SinkContext, TransactionalSink};
pub use source::{Read, SOURCE_SPLITS_STATE, SplitPosition, SplitReader, SplitSource, SplitState};
pub use stream::{
    Collected, Data, DataSink, DataStream, Job, JobResult, KeyedStream, WatermarkStrategy,
};
pub use timers::{EVENT_TIMER_STATE, PROCESSING_TIMER_STATE, TimeDomain, TimerState};
pub use window::{TimeWindow, WindowAssigner, WindowedStream};

/// An error of user code (a connector, a function), kept with its sources.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What can stop a job.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A source or sink failed (names which and what it was doing).
    #[error("{what}: {source}")]
    Connector {
        /// The connector and what it was doing.
        what: String,
        /// Its error.
        #[source]
        source: BoxError,
    },
    /// A state operation failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The job configuration cannot run.
    #[error("invalid job configuration: {0}")]
    Config(String),
    /// A process function used state before `open` declared it.
    #[error("a process function used its state before `open` declared it")]
    NotOpened,
    /// User code reported a failure (kept with its sources; see
    /// [`RuntimeError::user`]).
    #[error("user function failed: {0}")]
    User(#[source] BoxError),
    /// A worker thread failed (timely reports it as text).
    #[error("worker failed: {0}")]
    Worker(String),
    /// Checkpointing failed (storage, too many aborted checkpoints).
    #[error("checkpointing failed: {0}")]
    Checkpoint(String),
    /// State could not be restored from a snapshot (corrupt or missing files).
    #[error("restore failed: {0}")]
    Restore(String),
    /// Checkpoints exist but none could be restored: the job does not start empty on
    /// its own (that would lose their state and repeat committed output).
    #[error(
        "checkpoints exist but none can be restored: {}; repair or move them away, or \
         start empty on purpose (RestoreFrom::Nothing, `--fresh`)",
        render_candidates(.candidates)
    )]
    NothingRestorable {
        /// Every candidate checkpoint, newest first, with why it could not be used.
        candidates: Vec<(u64, String)>,
    },
    /// The final checkpoint (taken when every source has ended) failed, so the job's
    /// last output is not committed. [`execute`] restarts a single-process job from
    /// its latest checkpoint when no more failures in a row than tolerated occurred;
    /// this is returned otherwise (and by the processes of a cluster, whose
    /// supervisor restarts them).
    #[error("checkpointing failed: {why}")]
    FinalCheckpointFailed {
        /// The final checkpoint's id.
        id: u64,
        /// Checkpoints failed in a row, this one included.
        failures: u32,
        /// Why it failed (names the checkpoint).
        why: String,
        /// The newest checkpoint the run completed, if any.
        last_complete: Option<u64>,
    },
    /// The job was cancelled through its [`JobHandle`].
    #[error("the job was cancelled")]
    Cancelled,
    /// The job may not use a directory (not its own, locked by another job, ...).
    #[error(transparent)]
    Ownership(#[from] ownership::OwnershipError),
}

impl RuntimeError {
    /// A failure of user code, e.g. `Err(RuntimeError::user(e))?` in a process
    /// function: the job fails (and restarts from its last checkpoint) with `e` as the
    /// error's source.
    pub fn user(e: impl Into<BoxError>) -> Self {
        RuntimeError::User(e.into())
    }
}

fn render_candidates(candidates: &[(u64, String)]) -> String {
    candidates
        .iter()
        .map(|(id, why)| format!("checkpoint {id}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where this process stands in a job that runs as several processes (timely's
/// cluster mode over TCP): every process runs the same program with the same
/// `addresses` and its own `process` index. Process 0 leads checkpointing.
///
/// ```no_run
/// # use flowstate_runtime::{Cluster, JobConfig};
/// let addresses = vec!["127.0.0.1:7100".to_string(), "127.0.0.1:7101".to_string()];
/// // In the second process (2 processes × 2 threads = parallelism 4):
/// let config = JobConfig::default().workers(2).cluster(Cluster::new(1, addresses));
/// assert_eq!(config.parallelism(), 4);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cluster {
    /// This process's index in `addresses`.
    pub process: usize,
    /// `host:port` of every process, the same list in every process.
    pub addresses: Vec<String>,
}

/// How a job runs: [`JobConfig::default`] and the builder methods.
#[derive(Clone)]
#[non_exhaustive]
pub struct JobConfig {
    /// Worker threads of this process (the job's parallelism unless it runs as
    /// several processes: then [`JobConfig::parallelism`]).
    pub workers: usize,
    /// Key groups; fixed for the life of the job's state.
    pub max_parallelism: u32,
    /// The keyed state backend.
    pub backend: BackendChoice,
    /// The processing-time clock (timers, TTL); tests inject a [`ManualClock`].
    pub clock: Arc<dyn Clock>,
    /// Checkpoints, when on (off by default).
    pub checkpointing: Option<CheckpointConfig>,
    /// The job's processes, when it runs as several (one by default).
    pub cluster: Option<Cluster>,
}

impl Cluster {
    /// Process `process` of the processes at `addresses` (`host:port` each, the same
    /// list in every process).
    pub fn new(process: usize, addresses: Vec<String>) -> Self {
        Cluster { process, addresses }
    }
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            workers: 1,
            max_parallelism: 128,
            backend: BackendChoice::Heap,
            clock: Arc::new(SystemClock),
            checkpointing: None,
            cluster: None,
        }
    }
}

impl JobConfig {
    /// Sets the number of workers.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
    /// Sets the keyed state backend.
    pub fn backend(mut self, backend: BackendChoice) -> Self {
        self.backend = backend;
        self
    }
    /// Sets the max parallelism (number of key groups).
    pub fn max_parallelism(mut self, max_parallelism: u32) -> Self {
        self.max_parallelism = max_parallelism;
        self
    }
    /// Sets the processing-time clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Turns checkpointing on.
    pub fn checkpointing(mut self, checkpoints: CheckpointConfig) -> Self {
        self.checkpointing = Some(checkpoints);
        self
    }

    /// Runs this process as one of several (see [`Cluster`]).
    pub fn cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Workers of the whole job: this process's threads times the processes.
    pub fn parallelism(&self) -> usize {
        self.workers * self.cluster.as_ref().map_or(1, |c| c.addresses.len())
    }

    fn role(&self) -> ProcessRole {
        self.cluster
            .as_ref()
            .map_or(ProcessRole::SINGLE, |c| ProcessRole {
                process: c.process,
                processes: c.addresses.len(),
            })
    }

    fn validate(&self) -> Result<(), RuntimeError> {
        if let Some(c) = &self.checkpointing {
            c.validate()?;
        }
        if let Some(c) = &self.cluster
            && c.process >= c.addresses.len()
        {
            return Err(RuntimeError::Config(format!(
                "process {} of a cluster of {} addresses",
                c.process,
                c.addresses.len()
            )));
        }
        let parallelism = self.parallelism();
        let p = u32::try_from(parallelism)
            .map_err(|_| RuntimeError::Config(format!("{parallelism} workers")))?;
        flowstate_core::keygroup::check_max_parallelism(self.max_parallelism)?;
        if self.workers == 0 || p > self.max_parallelism {
            return Err(RuntimeError::Config(format!(
                "workers must be in 1..={} (the max parallelism), got {parallelism}",
                self.max_parallelism
            )));
        }
        Ok(())
    }
}

/// The first error of a worker; later ones are dropped (they are usually consequences).
pub(crate) type ErrorSlot = Rc<RefCell<Option<RuntimeError>>>;

pub(crate) fn record_error(slot: &ErrorSlot, e: RuntimeError) {
    let mut s = slot.borrow_mut();
    if s.is_none() {
        *s = Some(e);
    }
}

/// Runs a job: `build` describes the dataflow on every worker and returns what that
/// worker should hand back (e.g. a [`DataStream::collect`] handle); after the sources
/// are exhausted and every record and timer is processed, returns each worker's
/// result, in worker order.
///
/// With [`JobConfig::checkpointing`], the job first claims its directories (see
/// [`ownership`]: a directory that is not the job's own, or one another job holds,
/// fails with [`RuntimeError::Ownership`]), then restores (the newest complete
/// checkpoint of its directory, falling back to older ones when a snapshot turns out
/// corrupt, or the named snapshot; when checkpoints exist but none can be restored it
/// fails with [`RuntimeError::NothingRestorable`] rather than start empty), takes
/// checkpoints as configured while it runs, and ends with a final checkpoint that
/// commits the transactional sinks' output.
///
/// With a [`JobHandle`] in the checkpoint configuration (or through [`spawn`]), code
/// can take savepoints, stop or cancel the job, and follow its [`JobStatus`].
pub fn execute<R, F>(config: JobConfig, build: F) -> Result<Vec<R::Output>, RuntimeError>
where
    F: Fn(&mut Job<'_>) -> R + Send + Sync + 'static,
    R: stream::JobResult,
{
    let handle = config.checkpointing.as_ref().and_then(|c| c.handle.clone());
    if let Some(h) = &handle {
        h.set_dir(config.checkpointing.as_ref().and_then(|c| c.dir.clone()));
        h.set_status(JobStatus::Starting);
    }
    let result = execute_job(config, build);
    if let Some(h) = handle {
        h.set_status(match &result {
            Ok(_) if h.status() == JobStatus::Stopped => JobStatus::Stopped,
            Ok(_) => JobStatus::Finished,
            Err(RuntimeError::Cancelled) => JobStatus::Cancelled,
            Err(e) => JobStatus::Failed(e.to_string()),
        });
    }
    result
}

fn execute_job<R, F>(config: JobConfig, build: F) -> Result<Vec<R::Output>, RuntimeError>
where
    F: Fn(&mut Job<'_>) -> R + Send + Sync + 'static,
    R: stream::JobResult,
{
    config.validate()?;
    let build = Arc::new(build);
    let role = config.role();
    // Claimed before anything is read or created: the checkpoint directory (its
    // leader holds the lock) and RocksDB's working directory (see `ownership`).
    let _dirs = ownership::JobDirs::claim(
        config.checkpointing.as_ref().and_then(|c| c.dir.as_deref()),
        role.process == 0,
        match &config.backend {
            #[cfg(feature = "rocksdb")]
            BackendChoice::RocksDb(o) => Some(o.local_dir.as_path()),
            BackendChoice::Heap => None,
        },
    )?;
    let Some(checkpoints) = config.checkpointing.clone() else {
        return run(config, None, build);
    };
    let mut checkpoints = checkpoints;
    // Every read the job makes of its checkpoint storage (listing, restore, clean-up,
    // retention) retries transient errors: a storage hiccup must never make a
    // checkpoint look unusable (falling back repeats committed output). Writes are
    // not retried: a failed one declines its checkpoint.
    checkpoints.storage = Arc::new(flowstate_storage::RetryingReads::new(checkpoints.storage));
    let mut failures = 0;
    loop {
        match restore_and_run(&config, &checkpoints, &build, failures) {
            // A failed final checkpoint fails the job only when it is one failure too
            // many, like any other: otherwise the job restarts from its latest
            // checkpoint (Flink's restart strategy, in-process) and takes it again.
            Err(RuntimeError::FinalCheckpointFailed {
                id,
                failures: in_a_row,
                why,
                last_complete,
            }) if role == ProcessRole::SINGLE && in_a_row <= checkpoints.tolerable_failures => {
                tracing::warn!(
                    checkpoint = id,
                    "{why}; {in_a_row} failures in a row (tolerable: {}): restarting \
                     from the latest checkpoint",
                    checkpoints.tolerable_failures
                );
                failures = in_a_row;
                if last_complete.is_some() {
                    // The job's own checkpoints now hold its progress.
                    checkpoints.restore = RestoreFrom::Latest;
                }
            }
            other => return other,
        }
    }
}

/// One start of a job with checkpointing: chooses what to restore (falling back to
/// older checkpoints when one turns out unreadable) and runs; `failures` checkpoints
/// in a row have failed before this start.
fn restore_and_run<R, F>(
    config: &JobConfig,
    checkpoints: &CheckpointConfig,
    build: &Arc<F>,
    failures: u32,
) -> Result<Vec<R::Output>, RuntimeError>
where
    F: Fn(&mut Job<'_>) -> R + Send + Sync + 'static,
    R: stream::JobResult,
{
    let role = config.role();
    // Every process of a cluster reads the directory before they connect, while
    // nothing writes to it, so they all choose the same snapshot and first id.
    let candidates = checkpoint::restore_candidates(checkpoints)?;
    if role == ProcessRole::SINGLE {
        // What a crashed run left behind goes once, before any attempt. (A cluster's
        // leader does it once every process is connected: see `run`.)
        checkpoint::clean_up_after_crash(checkpoints)?;
    }
    let start = candidates.highest + 1;
    let mut failed = candidates.unusable;
    if candidates.usable.is_empty() && !failed.is_empty() {
        // Checkpoints exist, none is usable: never start empty on our own.
        return Err(RuntimeError::NothingRestorable { candidates: failed });
    }
    // Nothing to restore: one attempt from empty state. Otherwise newest first,
    // falling back to the next when a snapshot turns out unreadable. Every process
    // of a cluster listed the same candidates before connecting, and a restore
    // failure anywhere fails the attempt everywhere as a restore failure, so they
    // fall back together (each attempt connects the cluster anew).
    let attempts: Vec<Option<Arc<checkpoint::Restored>>> = if candidates.usable.is_empty() {
        vec![None]
    } else {
        candidates
            .usable
            .into_iter()
            .map(|r| Some(Arc::new(r)))
            .collect()
    };
    for restored in attempts {
        if let Some(r) = &restored {
            let m = &r.metadata;
            tracing::info!(
                checkpoint = m.id,
                "restoring from {} {} ({} -> {} workers)",
                if m.kind != SnapshotKind::Checkpoint {
                    "savepoint"
                } else {
                    "checkpoint"
                },
                m.id,
                m.parallelism,
                config.parallelism()
            );
            if m.max_parallelism != config.max_parallelism {
                return Err(RuntimeError::Config(format!(
                    "snapshot {} has max parallelism {}, the job {}: key groups cannot change",
                    m.id, m.max_parallelism, config.max_parallelism
                )));
            }
        }
        let coordinator = Coordinator::new(
            checkpoints.clone(),
            config.workers,
            role,
            config.max_parallelism,
            start,
            failures,
            restored.as_deref(),
        );
        #[cfg_attr(not(feature = "rocksdb"), allow(unused_mut))]
        let mut attempt = config.clone();
        #[cfg(feature = "rocksdb")]
        if let BackendChoice::RocksDb(o) = &mut attempt.backend {
            let claimed = restored.as_ref().is_some_and(|r| checkpoints.claims(r));
            o.snapshot_mode = if checkpoints.incremental {
                flowstate_rocksdb::SnapshotMode::Incremental
            } else {
                flowstate_rocksdb::SnapshotMode::NativeFull
            };
            o.claim_mode = if claimed {
                ClaimMode::Claim
            } else {
                ClaimMode::NoClaim
            };
        }
        match run(
            attempt,
            Some((Arc::new(coordinator), restored.clone())),
            build.clone(),
        ) {
            Err(RuntimeError::Restore(why)) if restored.is_some() => {
                let id = restored.map_or(0, |r| r.metadata.id);
                tracing::warn!(
                    checkpoint = id,
                    "checkpoint {id} could not be restored ({why}); falling back to the previous complete checkpoint"
                );
                failed.push((id, why));
            }
            other => return other,
        }
    }
    // Every candidate failed: the job fails, naming each and why.
    failed.sort_by_key(|c| std::cmp::Reverse(c.0));
    Err(RuntimeError::NothingRestorable { candidates: failed })
}

type Checkpointing = (Arc<Coordinator>, Option<Arc<checkpoint::Restored>>);

fn run<R, F>(
    config: JobConfig,
    checkpointing: Option<Checkpointing>,
    build: Arc<F>,
) -> Result<Vec<R::Output>, RuntimeError>
where
    F: Fn(&mut Job<'_>) -> R + Send + Sync + 'static,
    R: stream::JobResult,
{
    let workers = config.workers;
    let timely_config = match &config.cluster {
        None => timely::Config::process(workers),
        Some(c) => timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: workers,
                process: c.process,
                addresses: c.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        },
    };
    let clean_up = config.cluster.as_ref().is_some_and(|c| c.process == 0);
    let shared = Arc::new(config);
    let guards = timely::execute(
        timely_config,
        move |worker| -> Result<R::Output, RuntimeError> {
            let errors: ErrorSlot = Rc::new(RefCell::new(None));
            if clean_up
                && worker.index() == 0
                && let Some((c, _)) = &checkpointing
            {
                // Every process is connected, so each has chosen its snapshot already;
                // nobody writes before this leader's first trigger.
                checkpoint::clean_up_after_crash(c.config())?;
            }
            let ctx = checkpointing.as_ref().map(|(c, r)| {
                Rc::new(task::WorkerCheckpoints::new(
                    c.clone(),
                    r.clone(),
                    worker.index() as u32,
                    worker.peers() as u32,
                ))
            });
            let control = ctx
                .as_ref()
                .filter(|_| shared.cluster.is_some())
                .map(|ctx| control_dataflow(worker, ctx.coordinator.clone(), workers));
            let building = std::time::Instant::now();
            let job_dataflow = worker.next_dataflow_index();
            let (drivers, result) = worker.dataflow::<time::Time, _, _>(|scope| {
                let mut job = Job::new(scope, shared.clone(), errors.clone(), ctx.clone());
                let result = build(&mut job);
                (job.into_drivers(), result)
            });
            if let Some(r) = ctx.as_ref().and_then(|c| c.restored.as_ref()) {
                // Operators restore while the dataflow is built.
                tracing::info!(
                    checkpoint = r.metadata.id,
                    restore_ms = building.elapsed().as_millis() as u64,
                    "worker {} restored its state in {} ms",
                    worker.index(),
                    building.elapsed().as_millis()
                );
            }
            if let Some(ctx) = &ctx {
                let (dropped, refused): (Vec<String>, Vec<String>) =
                    ctx.unclaimed().into_iter().partition(|uid| {
                        shared
                            .checkpointing
                            .as_ref()
                            .is_some_and(|c| c.may_drop(uid))
                    });
                if !refused.is_empty() {
                    record_error(
                        &errors,
                        RuntimeError::Config(format!(
                            "the snapshot holds state of operators this job does not have: {}; \
                             its state would be dropped: give the operators their uids back, \
                             or allow non-restored state (for all, or for these uids) to drop it",
                            refused.join(", ")
                        )),
                    );
                } else if !dropped.is_empty() && worker.index() == 0 {
                    tracing::warn!(
                        "dropping the snapshot's state of operators this job does not have: {}",
                        dropped.join(", ")
                    );
                }
                let (tasks, sources) = ctx.counts();
                ctx.coordinator.register_worker(tasks, sources);
                if worker.index() == 0
                    && let Some(h) = &ctx.coordinator.config().handle
                {
                    let restored = ctx.restored.as_ref().map(|r| r.metadata.id);
                    h.set_status(JobStatus::Running { restored });
                }
            }
            drive(
                worker,
                drivers,
                &errors,
                ctx.as_deref(),
                control,
                job_dataflow,
            );
            if let Some(c) = &ctx
                && worker.index() == 0
                && c.coordinator.finished()
                && errors.borrow().is_none()
                && let Err(e) = checkpoint::clean_up_after_crash(c.coordinator.config())
            {
                // Nothing is in flight any more: what checkpoints that never completed
                // left (their directories, their uploads) goes now rather than at the
                // next start. Failing that loses nothing.
                tracing::warn!("cleaning up after the final checkpoint: {e}");
            }
            if let Some(e) = errors.borrow_mut().take() {
                return Err(e);
            }
            if let Some(e) = ctx.as_ref().and_then(|c| c.coordinator.failure()) {
                // A restore failure elsewhere in the cluster is one here too: every
                // process falls back to the same older checkpoint.
                return Err(e);
            }
            Ok(result.finish())
        },
    )
    .map_err(RuntimeError::Worker)?;
    let mut results = Vec::with_capacity(workers);
    let mut first_error = None;
    for r in guards.join() {
        match r.map_err(RuntimeError::Worker).and_then(|r| r) {
            Ok(out) => results.push(out),
            // A restore failure anywhere decides (it makes the caller fall back);
            // otherwise the first worker's error.
            Err(e @ RuntimeError::Restore(_)) => first_error = Some(e),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

/// Runs one worker: feeds the sources (stepping the dataflow between batches so
/// memory stays bounded), follows the checkpoint coordinator, delivers checkpoint
/// completions, and returns once the job is done (with checkpointing: once its final
/// checkpoint completed) or failed.
fn drive(
    worker: &mut timely::worker::Worker,
    mut drivers: Vec<Box<dyn source::SourceDriver>>,
    errors: &ErrorSlot,
    ctx: Option<&task::WorkerCheckpoints>,
    mut control: Option<ControlInput>,
    job_dataflow: usize,
) {
    let send = |control: &mut Option<ControlInput>, ctx: &task::WorkerCheckpoints| {
        if let Some(c) = control.as_mut() {
            c.send(&ctx.coordinator);
        }
    };
    let mut stopped = false;
    loop {
        if let Some(ctx) = ctx {
            ctx.coordinator.poll();
            send(&mut control, ctx);
            if ctx
                .coordinator
                .config()
                .handle
                .as_ref()
                .is_some_and(|h| h.cancelled())
            {
                record_error(errors, RuntimeError::Cancelled);
            }
            if let Some(e) = errors.borrow().as_ref() {
                ctx.coordinator.fail_with(e);
            }
            if ctx.coordinator.error().is_some() {
                break;
            }
        } else if errors.borrow().is_some() {
            break;
        }
        let mut busy = false;
        drivers.retain_mut(|d| {
            if !d.sync() {
                return false;
            }
            busy |= d.step();
            true
        });
        if busy {
            worker.step();
        } else {
            worker.step_or_park(Some(std::time::Duration::from_millis(1)));
        }
        match ctx {
            Some(ctx) => {
                // Decided before delivering, so the completion that ends the job is
                // delivered too (sinks commit through it).
                stopped = ctx.coordinator.stopped();
                let done = stopped || (ctx.coordinator.finished() && drivers.is_empty());
                if let Err(e) = ctx.deliver_completions() {
                    record_error(errors, e);
                }
                if done {
                    send(&mut control, ctx);
                    ctx.coordinator.wait_for_writers();
                    break;
                }
            }
            None => {
                if drivers.is_empty() {
                    break;
                }
            }
        }
    }
    if let (Some(ctx), true) = (ctx, errors.borrow().is_some()) {
        // The other processes stop too (they would wait for this one forever).
        if let Some(e) = errors.borrow().as_ref() {
            ctx.coordinator.fail_with(e);
        }
        send(&mut control, ctx);
    }
    drop(drivers);
    drop(control);
    if stopped {
        // Stop-with-savepoint: committed through the savepoint; what the dataflow
        // still holds is in it, so drop it undrained (draining would fire every
        // event-time timer as if the input had ended).
        tracing::info!("worker {} stopped after its savepoint", worker.index());
        if let Some(h) = ctx.and_then(|c| c.coordinator.config().handle.as_ref()) {
            h.set_status(JobStatus::Stopped);
        }
        for id in worker.installed_dataflows() {
            worker.drop_dataflow(id);
        }
        return;
    }
    if errors.borrow().is_some() || ctx.is_some_and(|c| c.coordinator.error().is_some()) {
        // Failed: the job restarts from its last checkpoint. Draining would fire every
        // event-time timer as if the input had ended and let in-flight snapshots
        // capture that state; drop the job's dataflow undrained. The control
        // dataflow (several processes) drains, so the failure reaches the others.
        // Snapshot writers still running finish first (at most the checkpoint
        // timeout), so a restart finds no file half-written by this run.
        worker.drop_dataflow(job_dataflow);
        if let Some(ctx) = ctx {
            ctx.coordinator.wait_for_writers();
        }
    }
    while worker.step() {}
}

/// The input through which a process's first worker sends its coordinator's messages
/// to the other processes' coordinators.
struct ControlInput {
    input: timely::dataflow::InputHandle<
        u64,
        timely::container::CapacityContainerBuilder<Vec<(u64, Control)>>,
    >,
    /// This worker sends (the first of its process); the others only close theirs.
    sends: bool,
    /// Threads per process: process `p`'s first worker is `p * threads`.
    threads: u64,
}

impl ControlInput {
    fn send(&mut self, coordinator: &Coordinator) {
        if !self.sends {
            return;
        }
        let out = coordinator.take_outbox();
        if out.is_empty() {
            return;
        }
        for (process, msg) in out {
            self.input.send((process as u64 * self.threads, msg));
        }
        // Exchange buffers until the input's time moves (a flush alone keeps it).
        let next = self.input.time() + 1;
        self.input.advance_to(next);
    }
}

/// A dataflow of its own for coordinator messages between processes (only when the
/// job runs as several): each message goes to the first worker of its destination
/// process, which hands it to that process's coordinator.
fn control_dataflow(
    worker: &mut timely::worker::Worker,
    coordinator: Arc<Coordinator>,
    threads: usize,
) -> ControlInput {
    use timely::dataflow::channels::pact::Exchange;
    use timely::dataflow::operators::Input;
    use timely::dataflow::operators::generic::Operator;
    let sends = worker.index().is_multiple_of(threads);
    let input = worker.dataflow::<u64, _, _>(|scope| {
        let (input, stream) = scope.new_input::<Vec<(u64, Control)>>();
        stream.sink(
            Exchange::new(|(dest, _): &(u64, Control)| *dest),
            "Control",
            move |(input, _)| {
                input.for_each(|_, data| {
                    for (_, msg) in data.drain(..) {
                        coordinator.receive(msg);
                    }
                });
            },
        );
        input
    });
    ControlInput {
        input,
        sends,
        threads: threads as u64,
    }
}

//! Running a job: [`execute`] claims the job's directories, chooses what to restore
//! (falling back past damaged checkpoints), and runs the timely workers, each driving
//! its sources, following the checkpoint coordinator and delivering completions;
//! several processes exchange coordinator messages over a small dataflow of their
//! own ([`control`]).

mod control;

use control::{ControlInput, control_dataflow, coordination_turn};

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::checkpoint::{self, Coordinator, ProcessRole};
use crate::{
    BackendChoice, CheckpointConfig, ErrorSlot, Job, JobConfig, JobStatus, RestoreFrom,
    RuntimeError, SnapshotKind, ownership, record_error, source, stream, task, time,
};

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
///
/// [`DataStream::collect`]: crate::DataStream::collect
/// [`JobHandle`]: crate::JobHandle
/// [`spawn`]: crate::spawn
pub fn execute<R, F>(config: JobConfig, build: F) -> Result<Vec<R::Output>, RuntimeError>
where
    F: Fn(&mut Job<'_>) -> R + Send + Sync + 'static,
    R: stream::JobResult,
{
    let handle = config.checkpointing.as_ref().and_then(|c| c.handle.clone());
    if let Some(h) = &handle {
        h.set_dir(
            config
                .checkpointing
                .as_ref()
                .and_then(|c| c.local_dir().map(|d| d.to_path_buf())),
        );
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
        config.checkpointing.as_ref(),
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
    // Local recovery: this process keeps a copy of the checkpoint files it writes and
    // restores from it when it is whole (remote storage otherwise).
    let local_copy = match &checkpoints.local_recovery {
        Some(dir) => {
            let copy = Arc::new(
                flowstate_storage::LocalRecovery::new(checkpoints.storage.clone(), dir).map_err(
                    |e| {
                        RuntimeError::Checkpoint(format!(
                            "local recovery in {}: {e}",
                            dir.display()
                        ))
                    },
                )?,
            );
            checkpoints.storage = copy.clone();
            Some(copy)
        }
        None => None,
    };
    // Every read the job makes of its checkpoint storage (listing, restore, clean-up,
    // retention) retries transient errors: a storage hiccup must never make a
    // checkpoint look unusable (falling back repeats committed output). Writes are
    // not retried: a failed one declines its checkpoint.
    checkpoints.storage = Arc::new(flowstate_storage::RetryingReads::new(checkpoints.storage));
    let mut failures = 0;
    loop {
        let result = restore_and_run(&config, &checkpoints, &build, failures);
        if let Some(copy) = &local_copy {
            tracing::info!(
                local = copy.local_reads(),
                remote = copy.remote_reads(),
                "local recovery: {} checkpoint files read from the local copy, {} remotely",
                copy.local_reads(),
                copy.remote_reads()
            );
        }
        match result {
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
                crate::ClaimMode::Claim
            } else {
                crate::ClaimMode::NoClaim
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
    let hub = config.queries.clone();
    if let Some(h) = &hub {
        let role = config.role();
        h.begin(role.process, role.processes, workers);
    }
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
                crate::metrics::restored(worker.index(), building.elapsed());
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
            if let Some(h) = &shared.queries {
                if let Some(c) = &ctx {
                    crate::query::follow_completions(h, c);
                }
                h.worker_started();
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
    .map_err(RuntimeError::Worker);
    let guards = match guards {
        Ok(g) => g,
        Err(e) => {
            if let Some(h) = &hub {
                h.end(&format!("the job failed to start: {e}"));
            }
            return Err(e);
        }
    };
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
    if let Some(h) = &hub {
        h.end(&match &first_error {
            Some(e) => format!("the job failed ({e}); it restarts from its last checkpoint"),
            None => "the job has ended".to_string(),
        });
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
            if ctx
                .coordinator
                .config()
                .handle
                .as_ref()
                .is_some_and(|h| h.cancelled())
            {
                record_error(errors, RuntimeError::Cancelled);
            }
            let failed = coordination_turn(&ctx.coordinator, errors.borrow().as_ref(), || {
                send(&mut control, ctx)
            });
            if failed {
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
    if let Some(ctx) = ctx {
        // The other processes stop too (they would wait for this one forever): this
        // worker's failure, and whatever else the coordinator holds for them, goes
        // before the control input closes with `control` dropped below.
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

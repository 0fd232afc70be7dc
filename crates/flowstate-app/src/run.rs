//! `run`: the job configuration from the command line, the run itself (or the
//! supervisor of several processes), and what it prints at the end.

#[cfg(feature = "rocksdb")]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "rocksdb")]
use flowstate_runtime::RocksDbOptions;
use flowstate_runtime::checkpoint::read_metadata;
use flowstate_runtime::{
    BackendChoice, CheckpointConfig, ClaimMode, Cluster, FlowControl, JobConfig, JobResult,
    RestoreFrom, execute,
};
#[cfg(feature = "rocksdb")]
use flowstate_storage::CheckpointLocation;
use flowstate_storage::FaultyStorage;

use crate::cli::{Backend, RunOptions};
use crate::inspect::{newest_complete, savepoints};
use crate::{AppError, BuildFn};

/// Runs the job as `opts` say: here, or as several processes under the supervisor.
pub(crate) fn run<A, R, F>(opts: &RunOptions, job: A, build: Arc<F>) -> Result<(), AppError>
where
    A: Clone + Send + Sync + 'static,
    R: JobResult,
    F: BuildFn<A, R>,
{
    let cluster = match opts.process {
        Some(process) => Some(Cluster::new(process, opts.addresses.clone())),
        None if opts.processes > 1 => {
            // Held while the supervisor runs: one address across the restarts.
            let _gateway = crate::query::gateway(opts)?;
            return crate::supervisor::supervise(opts);
        }
        None => None,
    };
    let queries = crate::query::serve(
        opts,
        cluster.as_ref().map(|c| (c.process, c.addresses.len())),
    )?;
    let mut config = job_config(opts, cluster)?;
    if let Some((hub, _)) = &queries {
        config = config.queries(hub.clone());
    }
    let started = Instant::now();
    let progress = indicatif::ProgressBar::new_spinner();
    progress.enable_steady_tick(Duration::from_millis(200));
    progress.set_message(format!(
        "running with {} workers, checkpoints in {}",
        opts.workers, opts.checkpoint_dir
    ));
    let result = execute(config, move |j| build(j, &job));
    progress.finish_and_clear();
    result?;
    let dir = &opts.checkpoint_dir;
    // Stopped with a savepoint rather than finished: the newest snapshot says so.
    let newest_savepoint = savepoints(dir)
        .pop()
        .and_then(|(_, p)| read_metadata(&p).ok().map(|m| (m.id, m.finished, p)));
    match newest_savepoint {
        Some((id, false, path)) if id > newest_complete(dir) => println!(
            "job stopped with savepoint {id} after {:.2} s; resume with --from {path}",
            started.elapsed().as_secs_f64(),
        ),
        _ => println!(
            "job finished in {:.2} s; committed output is complete",
            started.elapsed().as_secs_f64()
        ),
    }
    Ok(())
}

/// The job's configuration from the command line.
pub(crate) fn job_config(
    opts: &RunOptions,
    cluster: Option<Cluster>,
) -> Result<JobConfig, AppError> {
    let restore = match (&opts.from, opts.fresh) {
        _ if opts.resume => RestoreFrom::Latest,
        (Some(p), _) => RestoreFrom::Path(p.clone()),
        (None, true) => RestoreFrom::Nothing,
        (None, false) => RestoreFrom::Latest,
    };
    let mut checkpoints = CheckpointConfig::at(
        &opts.checkpoint_dir,
        Duration::from_millis(opts.checkpoint_interval),
    )?
    .timeout(Duration::from_millis(opts.checkpoint_timeout))
    .retained(opts.retained)
    .restore(restore)
    .claim_mode(if opts.claim && !opts.resume {
        ClaimMode::Claim
    } else {
        ClaimMode::NoClaim
    })
    .allow_non_restored_state(opts.allow_non_restored_state)
    .tolerable_failures(3);
    for uid in &opts.drop_state_of {
        checkpoints = checkpoints.allow_non_restored_uid(uid.clone());
    }
    if let Some(dir) = &opts.local_recovery {
        checkpoints = checkpoints.local_recovery(per_process(
            dir.clone(),
            cluster.as_ref().map(|c| c.process),
        ));
    }
    if let Some(plan) = &opts.inject_storage_faults {
        checkpoints.storage = Arc::new(FaultyStorage::new(checkpoints.storage.clone(), *plan));
    }
    let backend = match opts.backend {
        Backend::Heap => BackendChoice::Heap,
        // RocksDB's working files: the runtime claims the directory (a marker, a
        // lock) and empties it of a crashed run's scratch only when it is its own.
        #[cfg(feature = "rocksdb")]
        Backend::Rocksdb => BackendChoice::RocksDb(
            RocksDbOptions::new(local_dir(
                &opts.checkpoint_dir,
                opts.local_dir.as_deref(),
                cluster.as_ref().map(|c| c.process),
            )?)
            .with_timer_window(usize::try_from(opts.timer_window).unwrap_or(usize::MAX)),
        ),
    };
    let mut config = JobConfig::default()
        .workers(opts.workers)
        .max_parallelism(opts.max_parallelism)
        .flow_control(match opts.rounds_in_flight {
            0 => FlowControl::off(),
            n => FlowControl::rounds(n),
        })
        .backend(backend)
        .checkpointing(checkpoints);
    if let Some(c) = cluster {
        config = config.cluster(c);
    }
    Ok(config)
}

/// RocksDB's working directory: `given`, or the checkpoint directory's full path
/// with `.rocksdb-local` appended (never replacing part of its name: `job.v1` and
/// `job.v2` get two), or for an object store `flowstate-<bucket>-<prefix>.rocksdb-local`
/// in the system's temporary directory; with `-p<i>` for process `i` of several.
#[cfg(feature = "rocksdb")]
fn local_dir(
    checkpoint_dir: &CheckpointLocation,
    given: Option<&Path>,
    process: Option<usize>,
) -> Result<PathBuf, AppError> {
    let base = match (given, checkpoint_dir) {
        (Some(p), _) => p.to_path_buf(),
        (None, CheckpointLocation::S3 { bucket, prefix }) => {
            let name: String = format!("flowstate-{bucket}-{prefix}")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            std::env::temp_dir().join(format!("{name}.rocksdb-local"))
        }
        (None, CheckpointLocation::Local(checkpoint_dir)) => {
            let full = checkpoint_dir.canonicalize().map_err(AppError::io(format!(
                "resolving {}",
                checkpoint_dir.display()
            )))?;
            let Some(name) = full.file_name() else {
                return Err(AppError::Usage(format!(
                    "cannot derive RocksDB's working directory from {}: give --local-dir",
                    checkpoint_dir.display()
                )));
            };
            let mut name = name.to_os_string();
            name.push(".rocksdb-local");
            full.with_file_name(name)
        }
    };
    Ok(per_process(base, process))
}

/// `path` with `-p<i>` appended for process `i` of several.
fn per_process(path: PathBuf, process: Option<usize>) -> PathBuf {
    match process {
        None => path,
        Some(i) => {
            let mut name = path.into_os_string();
            name.push(format!("-p{i}"));
            PathBuf::from(name)
        }
    }
}

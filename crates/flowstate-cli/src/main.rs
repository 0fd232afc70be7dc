//! `flowstate`: run the built-in jobs with checkpoints, list a directory's checkpoints,
//! trigger savepoints.
//!
//! ```text
//! flowstate run counts --workers 2 --backend rocksdb --checkpoint-dir /tmp/fs/ck \
//!     --checkpoint-interval 500 --out /tmp/fs/out
//! flowstate checkpoints /tmp/fs/ck
//! flowstate savepoint /tmp/fs/ck
//! ```
//!
//! `run` resumes from the newest complete checkpoint of `--checkpoint-dir` when it has
//! one (kill it at any moment and run it again), or from `--from PATH` (a `chk-<id>`
//! or savepoint directory), at any `--workers`.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
use flowstate_rocksdb::RocksDbOptions;
use flowstate_runtime::checkpoint::{
    SAVEPOINT_REQUEST, SavepointFormat, list_checkpoints, read_metadata, request_savepoint,
};
use flowstate_runtime::ownership::{DirLock, LOCK_FILE};
use flowstate_runtime::{
    BackendChoice, CheckpointConfig, ClaimMode, Cluster, JobConfig, KeyedProcessFunction,
    OpenContext, ProcessContext, RestoreFrom, RuntimeError, TimerContext, WatermarkStrategy,
    execute,
};
use flowstate_storage::{FaultyStorage, ObjectCheckpointStorage};
use tracing_subscriber::EnvFilter;

mod supervisor;
use supervisor::supervise;

#[derive(Parser)]
#[command(
    name = "flowstate",
    about = "Flowstate: stateful stream jobs with checkpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Heap,
    Rocksdb,
}

#[derive(Clone, Copy, ValueEnum)]
enum Example {
    /// Per-key running count and sum over a generated, out-of-order event stream,
    /// with a per-key event-time report every 10 s of event time.
    Counts,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a built-in job with checkpoints; resumes from the newest checkpoint.
    Run(RunArgs),
    /// Lists the complete checkpoints of a directory.
    Checkpoints {
        /// Checkpoint directory.
        dir: PathBuf,
    },
    /// Asks the job running on a checkpoint directory for a savepoint and waits for it.
    Savepoint {
        /// Checkpoint directory of the running job.
        dir: PathBuf,
        /// Stop the job with the savepoint (nothing after it is processed; resume
        /// with `run --from` the savepoint).
        #[arg(long)]
        stop: bool,
        /// In the backend's native format (RocksDB: its files; restores faster, same
        /// backend only) instead of the canonical one.
        #[arg(long)]
        native: bool,
        /// Seconds to wait.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Args, Clone)]
struct RunArgs {
    /// The job.
    example: Example,
    /// Worker threads (per process); may differ from the checkpoint's.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Run as this many processes on 127.0.0.1 (parallelism: processes × workers),
    /// restarted together from the last checkpoint when one fails.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Restarts of a multi-process job after a process failed.
    #[arg(long, default_value_t = 10)]
    max_restarts: u32,
    /// Keyed state backend.
    #[arg(long, value_enum, default_value = "rocksdb")]
    backend: Backend,
    /// Checkpoint directory (new or empty, or one this job wrote; never one holding
    /// other files).
    #[arg(long)]
    checkpoint_dir: PathBuf,
    /// RocksDB's local working directory (default: the checkpoint directory's path
    /// with `.rocksdb-local` appended, `-p<i>` per process). Created and owned by the
    /// job; an existing directory is used only if empty or made by Flowstate.
    #[arg(long)]
    local_dir: Option<PathBuf>,
    /// Testing: fail or delay every k-th checkpoint storage call (`seed:every[:delay_ms]`).
    #[arg(long, hide = true)]
    inject_storage_faults: Option<flowstate_storage::FaultPlan>,
    /// Milliseconds between checkpoints.
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval: u64,
    /// Complete checkpoints kept.
    #[arg(long, default_value_t = 1)]
    retained: usize,
    /// Restore from this checkpoint (`chk-<id>`) or savepoint directory.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Take ownership of the `--from` snapshot's files.
    #[arg(long)]
    claim: bool,
    /// Start even if the snapshot has state of operators the job lacks.
    #[arg(long)]
    allow_non_restored_state: bool,
    /// Start empty (ignore existing checkpoints).
    #[arg(long)]
    fresh: bool,
    /// Where the transactional file sink commits output.
    #[arg(long)]
    out: PathBuf,
    /// Events of the generated stream.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Sleep 1 ms every this many events per worker (0: never), to watch or kill it.
    #[arg(long, default_value_t = 0)]
    throttle_every: u64,
    /// This process's index in `--addresses` (set by the multi-process supervisor).
    #[arg(long, hide = true)]
    process: Option<usize>,
    /// `host:port` of every process, comma-separated (set by the supervisor).
    #[arg(long, hide = true, value_delimiter = ',')]
    addresses: Vec<String>,
}

/// Count and sum per key; a report per key at the end of each 10 s of event time.
/// Every key's events come from one source split when `--keys` is a multiple of the
/// first run's workers, so its lines are the same in every run, failed or not.
#[derive(Default)]
struct Counts {
    state: Option<Rc<dyn ValueState<(u64, u64)>>>,
}

const REPORT_MS: i64 = 10_000;

impl KeyedProcessFunction<u64, (u64, u64, i64), String> for Counts {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.state = Some(ctx.value_state(&ValueStateDescriptor::new("count-sum"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        (key, amount, ts): (u64, u64, i64),
        ctx: &mut ProcessContext<'_, u64, String>,
    ) -> Result<(), RuntimeError> {
        let s = self.state.as_ref().ok_or(RuntimeError::NotOpened)?;
        let (n, sum) = s.value()?.unwrap_or((0, 0));
        s.update((n + 1, sum + amount))?;
        ctx.collect(format!("u{key} n={} sum={}", n + 1, sum + amount));
        let report = (ts / REPORT_MS + 1) * REPORT_MS - 1;
        ctx.timer_service().register_event_time_timer(report)?;
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut TimerContext<'_, u64, String>,
    ) -> Result<(), RuntimeError> {
        // The count at a report depends on how far other keys' sources had got, so a
        // report says only that the key's timer fired (once, whatever the failures).
        let key = *ctx.current_key();
        ctx.collect(format!("report u{key} at={ts}"));
        Ok(())
    }
}

/// Event `i`: (key, amount, event time), out of order by up to 50 ms.
fn event(i: u64, keys: u64) -> (u64, u64, i64) {
    let key = i.wrapping_mul(7919) % keys;
    let ts = i as i64 * 2 + ((i * 31) % 50) as i64;
    (key, i % 100, ts)
}

fn run(args: RunArgs) -> Result<()> {
    let RunArgs {
        workers,
        backend,
        checkpoint_dir,
        checkpoint_interval: interval_ms,
        retained,
        from,
        claim,
        allow_non_restored_state,
        fresh,
        out,
        events,
        keys,
        throttle_every,
        ..
    } = args.clone();
    if keys == 0 {
        bail!("--keys must be positive");
    }
    let cluster = match args.process {
        Some(process) => Some(Cluster {
            process,
            addresses: args.addresses.clone(),
        }),
        None if args.processes > 1 => return supervise(&args),
        None => None,
    };
    let restore = match (from, fresh) {
        (Some(p), _) => RestoreFrom::Path(p),
        (None, true) => RestoreFrom::Nothing,
        (None, false) => RestoreFrom::Latest,
    };
    let mut checkpoints =
        CheckpointConfig::local(&checkpoint_dir, Duration::from_millis(interval_ms))?
            .retained(retained)
            .restore(restore)
            .claim_mode(if claim {
                ClaimMode::Claim
            } else {
                ClaimMode::NoClaim
            })
            .allow_non_restored_state(allow_non_restored_state)
            .tolerable_failures(3);
    if let Some(plan) = args.inject_storage_faults {
        checkpoints.storage = Arc::new(FaultyStorage::new(checkpoints.storage.clone(), plan));
    }
    let backend = match backend {
        Backend::Heap => BackendChoice::Heap,
        // RocksDB's working files: the runtime claims the directory (a marker, a
        // lock) and empties it of a crashed run's scratch only when it is its own.
        Backend::Rocksdb => BackendChoice::RocksDb(RocksDbOptions::new(local_dir(
            &checkpoint_dir,
            args.local_dir.as_deref(),
            cluster.as_ref().map(|c| c.process),
        )?)),
    };
    let mut config = JobConfig::default()
        .workers(workers)
        .backend(backend)
        .checkpointing(checkpoints);
    if let Some(c) = cluster {
        config = config.cluster(c);
    }
    let started = Instant::now();
    let progress = indicatif::ProgressBar::new_spinner();
    progress.enable_steady_tick(Duration::from_millis(200));
    progress.set_message(format!(
        "running counts: {events} events, {workers} workers"
    ));
    let result = execute(config, move |job| {
        let items: Vec<(u64, u64, i64)> = (0..events).map(|i| event(i, keys)).collect();
        let mut seen = 0u64;
        job.source_vec(
            items,
            |e| e.2,
            WatermarkStrategy::BoundedOutOfOrderness(100),
        )
        .map(move |e| {
            seen += 1;
            if throttle_every > 0 && seen.is_multiple_of(throttle_every) {
                std::thread::sleep(Duration::from_millis(1));
            }
            e
        })
        .key_by(|e| e.0)
        .process(Counts::default())
        .write_text_files(&out, |line: &String| line.clone());
    });
    progress.finish_and_clear();
    result?;
    // Stopped with a savepoint rather than finished: the newest snapshot says so.
    let newest_savepoint = savepoints(&checkpoint_dir)
        .into_iter()
        .filter_map(|p| read_metadata(&p).ok().map(|m| (m.id, m.finished, p)))
        .max_by_key(|(id, _, _)| *id);
    let newest_checkpoint = supervisor::newest_complete(&checkpoint_dir);
    match newest_savepoint {
        Some((id, false, path)) if id > newest_checkpoint => println!(
            "job stopped with savepoint {id} after {:.2} s; resume with --from {}",
            started.elapsed().as_secs_f64(),
            path.display()
        ),
        _ => println!(
            "job finished in {:.2} s; committed output is complete",
            started.elapsed().as_secs_f64()
        ),
    }
    Ok(())
}

/// RocksDB's working directory: `--local-dir`, or the checkpoint directory's full path
/// with `.rocksdb-local` appended (never replacing part of its name: `job.v1` and
/// `job.v2` get two), with `-p<i>` for process `i` of several.
fn local_dir(
    checkpoint_dir: &Path,
    given: Option<&Path>,
    process: Option<usize>,
) -> Result<PathBuf> {
    let base = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let full = checkpoint_dir
                .canonicalize()
                .with_context(|| format!("resolving {}", checkpoint_dir.display()))?;
            let Some(name) = full.file_name() else {
                bail!(
                    "cannot derive RocksDB's working directory from {}: give --local-dir",
                    checkpoint_dir.display()
                );
            };
            let mut name = name.to_os_string();
            name.push(".rocksdb-local");
            full.with_file_name(name)
        }
    };
    Ok(match process {
        None => base,
        Some(i) => {
            let mut name = base.as_os_str().to_os_string();
            name.push(format!("-p{i}"));
            PathBuf::from(name)
        }
    })
}

fn checkpoints_table(dir: &Path) -> Result<()> {
    // Reading only: a missing directory is an error, never created.
    let storage = ObjectCheckpointStorage::existing_local(dir)
        .with_context(|| format!("opening {}", dir.display()))?;
    println!(
        "{:>6}  {:<19}  {:>9}  {:>12}  {:>12}  {:>8}  state per operator",
        "id", "time (UTC)", "duration", "full size", "incremental", "workers"
    );
    for c in list_checkpoints(&storage)? {
        match c {
            Ok(m) => {
                let ops: Vec<String> = m
                    .operators
                    .iter()
                    .map(|(uid, o)| format!("{uid}={}", o.full_size()))
                    .collect();
                println!(
                    "{:>6}  {:<19}  {:>7}ms  {:>12}  {:>12}  {:>8}  {}{}",
                    m.id,
                    utc(m.triggered_at_ms),
                    m.duration_ms,
                    m.full_size(),
                    m.uploaded_size(),
                    m.parallelism,
                    ops.join(" "),
                    if m.finished { "  (final)" } else { "" }
                );
            }
            Err((id, why)) => println!("{id:>6}  unusable: {why}"),
        }
    }
    Ok(())
}

/// `YYYY-MM-DD hh:mm:ss` of a Unix time in milliseconds.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn savepoint(dir: &Path, native: bool, stop: bool, timeout: u64) -> Result<()> {
    // Only a running job reads requests: without one, a request file would stop the
    // next run that starts on the directory.
    let lock = dir.join(LOCK_FILE);
    if DirLock::holder(&lock).is_none() {
        bail!("no job is running on {}", dir.display());
    }
    let before = savepoints(dir);
    let format = if native {
        SavepointFormat::Native
    } else {
        SavepointFormat::Canonical
    };
    request_savepoint(dir, format, stop)
        .with_context(|| format!("writing the request into {}", dir.display()))?;
    let started = Instant::now();
    let timeout = Duration::from_secs(timeout);
    while started.elapsed() < timeout {
        if let Some(new) = savepoints(dir).into_iter().find(|s| !before.contains(s)) {
            println!("{}", new.display());
            return Ok(());
        }
        if DirLock::holder(&lock).is_none() {
            let _ = std::fs::remove_file(dir.join(SAVEPOINT_REQUEST));
            bail!(
                "the job on {} ended before taking the savepoint",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(dir.join(SAVEPOINT_REQUEST));
    bail!(
        "no savepoint within {} s: is a job running on {}?",
        timeout.as_secs(),
        dir.display()
    )
}

fn savepoints(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("savepoints"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("_metadata").exists())
                .collect()
        })
        .unwrap_or_default()
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Checkpoints { dir } => checkpoints_table(&dir),
        Command::Savepoint {
            dir,
            stop,
            native,
            timeout,
        } => savepoint(&dir, native, stop, timeout),
    }
}

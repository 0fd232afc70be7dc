//! The harness's command line: `run` with the harness's options ([`RunOptions`]) and
//! the job's own, `savepoint`, `checkpoints`.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use flowstate_storage::CheckpointLocation;

#[derive(Parser)]
pub(crate) struct Cli<A: Args> {
    #[command(subcommand)]
    pub(crate) command: Command<A>,
}

impl<A: Args> Cli<A> {
    /// The command line definition, named `name`.
    pub(crate) fn command_for(name: &'static str) -> clap::Command {
        Self::command()
            .name(name)
            .about("A Flowstate job: run it with checkpoints, take savepoints, list checkpoints")
    }
}

#[derive(Subcommand)]
pub(crate) enum Command<A: Args> {
    /// Runs the job with checkpoints; resumes from the newest checkpoint of
    /// `--checkpoint-dir` when it has one.
    Run {
        #[command(flatten)]
        run: RunOptions,
        #[command(flatten)]
        job: A,
    },
    /// Asks the job running on a checkpoint directory for a savepoint and waits for
    /// it; prints its directory.
    Savepoint {
        /// Checkpoint directory of the running job (a path or `s3://bucket/prefix`).
        dir: CheckpointLocation,
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
    /// Lists the complete checkpoints of a directory.
    Checkpoints {
        /// Checkpoint directory (a path or `s3://bucket/prefix`).
        dir: CheckpointLocation,
    },
    /// Serves the checkpoint history page of a directory (a stopped job's; a running
    /// job serves the same page on its `--query-addr`).
    Ui {
        /// Checkpoint directory (a path or `s3://bucket/prefix`).
        dir: CheckpointLocation,
        /// Where to serve it (port 0: any free one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8082")]
        addr: String,
    },
    /// Looks up queryable state of a running job (`--query-addr`): with no state,
    /// lists the queryable states; with one key prints its value, with several a
    /// batch answer (JSON).
    Query {
        /// The job's query address (any process, or the supervisor's gateway).
        addr: String,
        /// The queryable state's name.
        state: Option<String>,
        /// Keys as JSON (`42`, `"alice"`, `[1,2]`), or plain text for string keys.
        keys: Vec<String>,
        /// `live` (the owning worker's current state) or `committed` (the last
        /// completed checkpoint's).
        #[arg(long, default_value = "live")]
        consistency: String,
        /// Map state: only this user key's value (JSON, or plain text).
        #[arg(long)]
        user_key: Option<String>,
    },
    /// Reads, writes and transforms checkpoints and savepoints offline (no job code
    /// needed: values are rendered through the schemas stored with them).
    #[command(subcommand)]
    State(crate::state::StateCommand),
}

/// The keyed state backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// In memory (canonical snapshots).
    Heap,
    /// Embedded RocksDB (incremental checkpoints; feature `rocksdb`).
    #[cfg(feature = "rocksdb")]
    Rocksdb,
}

/// How `run` runs the job (the harness's options; the job adds its own).
#[derive(Args, Clone, Debug)]
pub struct RunOptions {
    /// Worker threads (per process); may differ from the checkpoint's.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Run as this many processes on 127.0.0.1 (parallelism: processes × workers),
    /// restarted together from the last checkpoint when one fails.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Restarts of a multi-process job after a process failed.
    #[arg(long, default_value_t = 10)]
    pub max_restarts: u32,
    /// Keyed state backend.
    #[cfg_attr(feature = "rocksdb", arg(long, value_enum, default_value = "rocksdb"))]
    #[cfg_attr(
        not(feature = "rocksdb"),
        arg(long, value_enum, default_value = "heap")
    )]
    pub backend: Backend,
    /// Key groups (the most workers the job's state can ever be spread over); fixed
    /// for the life of the job's state.
    #[arg(long, default_value_t = 128)]
    pub max_parallelism: u32,
    /// Flow control: source batches (of up to 1,024 records) each source of a worker
    /// may have in flight before it waits for the operators behind it; 0 turns flow
    /// control off.
    #[arg(long, default_value_t = flowstate_runtime::FlowControl::DEFAULT_ROUNDS)]
    pub rounds_in_flight: u64,
    /// Checkpoint directory (new or empty, or one this job wrote; never one holding
    /// other files): a local path, or `s3://bucket/prefix` on an S3-compatible store
    /// (endpoint, region and credentials from `AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, as the AWS tools read them).
    #[arg(long)]
    pub checkpoint_dir: CheckpointLocation,
    /// RocksDB's local working directory (default: the checkpoint directory's path
    /// with `.rocksdb-local` appended, or for `s3://` a directory named after the
    /// bucket and prefix in the system's temporary directory; `-p<i>` per process).
    /// Created and owned by the job; an existing directory is used only if empty or
    /// made by Flowstate.
    #[arg(long)]
    pub local_dir: Option<PathBuf>,
    /// Local recovery: keep a copy of the checkpoint files this process writes in DIR
    /// (`-p<i>` appended for process `i` of several) and restore from it when it is
    /// whole, from the checkpoint directory otherwise. A directory of its own: new,
    /// empty, or one Flowstate made.
    #[arg(long, value_name = "DIR")]
    pub local_recovery: Option<PathBuf>,
    /// RocksDB: timers a keyed operator keeps in memory (the earliest; the others
    /// wait on local disk).
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(2..))]
    pub timer_window: u64,
    /// Testing: fail or delay every k-th checkpoint storage call (`seed:every[:delay_ms]`).
    #[arg(long, hide = true)]
    pub inject_storage_faults: Option<flowstate_storage::FaultPlan>,
    /// Milliseconds between checkpoints.
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_interval: u64,
    /// Milliseconds after which a checkpoint that is not complete is aborted (three
    /// aborted in a row fail the job; Flink's `execution.checkpointing.timeout`).
    #[arg(long, default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_timeout: u64,
    /// Complete checkpoints kept.
    #[arg(long, default_value_t = 1)]
    pub retained: usize,
    /// Restore from this checkpoint (`chk-<id>`) or savepoint directory (a path or
    /// `s3://...`).
    #[arg(long)]
    pub from: Option<CheckpointLocation>,
    /// Take ownership of the `--from` snapshot's files.
    #[arg(long)]
    pub claim: bool,
    /// Start even if the snapshot has state of operators the job lacks (dropping it).
    #[arg(long)]
    pub allow_non_restored_state: bool,
    /// Drop the snapshot's state of this operator uid if the job lacks it (repeat
    /// for several); the state of any other missing operator still refuses the start.
    #[arg(long = "drop-state-of", value_name = "UID")]
    pub drop_state_of: Vec<String>,
    /// Serve the job's queryable states over HTTP here (`127.0.0.1:8081`; a port
    /// alone binds 127.0.0.1, the loopback interface: give a host to serve others). With
    /// several processes this is the supervisor's gateway (the same address across
    /// restarts) and process `i` serves at the next port plus `i`, unless
    /// `--query-peers` names their addresses.
    #[arg(long, value_name = "HOST:PORT")]
    pub query_addr: Option<String>,
    /// The query address of every process, comma-separated, in process order (for
    /// processes on several machines); process `i` listens on the `i`-th.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub query_peers: Vec<String>,
    /// Start empty (ignore existing checkpoints).
    #[arg(long)]
    pub fresh: bool,
    /// Run as process I of a job spread over machines (one command per machine, the
    /// same `--addresses` everywhere; process 0 coordinates checkpoints). When one
    /// process fails the others fail too: restart them all (a service manager's
    /// `Restart=on-failure`) and they resume from the newest checkpoint. Set by
    /// `--processes` for its children.
    #[arg(
        long,
        value_name = "I",
        env = "FLOWSTATE_PROCESS",
        requires = "addresses"
    )]
    pub process: Option<usize>,
    /// With `--process`: `host:port` of every process, comma-separated, in process
    /// order; process I listens on the I-th.
    #[arg(
        long,
        value_delimiter = ',',
        env = "FLOWSTATE_ADDRESSES",
        value_name = "HOST:PORT,..."
    )]
    pub addresses: Vec<String>,
    /// Set by the supervisor on restarts: resume from the newest checkpoint whatever
    /// `--from`/`--fresh` say (those were for the job's first start).
    #[arg(long, hide = true, env = "FLOWSTATE_RESUME")]
    pub resume: bool,
}

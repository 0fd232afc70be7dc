//! A job harness for any binary: one call gives a user's own job binary what the
//! `flowstate` command has — `run` (workers, several processes under the restart-all
//! supervisor, backend, checkpoint directory and interval, restore from a checkpoint
//! or savepoint, claim, fresh start), `savepoint` (asks the running job for one and
//! waits), `checkpoints` (lists a directory's checkpoints), `state` (reads, writes
//! and transforms checkpoints and savepoints offline) and `query` (looks up the
//! queryable state of a job run with `--query-addr`) — with logging set up
//! (`RUST_LOG`, default `info`, on stderr) and a progress line on a terminal.
//!
//! ```no_run
//! use clap::Args;
//! use flowstate_runtime::{DataStream, WatermarkStrategy};
//!
//! /// The job's own options, after the harness's (`my-job run --help` lists both).
//! #[derive(Args, Clone)]
//! struct Options {
//!     /// Where the output goes.
//!     #[arg(long)]
//!     out: std::path::PathBuf,
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     flowstate_app::main("my-job", |job, o: &Options| {
//!         let words = vec!["a".to_string(), "b".to_string()];
//!         job.source_vec(words, |_| 0, WatermarkStrategy::None)
//!             .uid("words")
//!             .write_text_files(&o.out, |w: &String| w.clone())
//!             .uid("out");
//!     })
//! }
//! ```
//!
//! Then `my-job run --checkpoint-dir /tmp/ck --out /tmp/out`, kill it at any moment,
//! run the same command again (it resumes from the newest checkpoint),
//! `my-job savepoint /tmp/ck`, `my-job run ... --from /tmp/ck/savepoints/sp-7 --workers 4`.

mod cli;
mod inspect;
mod query;
mod run;
mod state;
mod supervisor;
mod web;

use std::process::ExitCode;
use std::sync::Arc;

use clap::FromArgMatches;
use flowstate_runtime::{Job, JobResult, RuntimeError};
use tracing_subscriber::EnvFilter;

pub use cli::{Backend, RunOptions};
pub use inspect::{newest_complete, savepoints};

/// What can fail in the harness.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The job failed.
    #[error(transparent)]
    Job(#[from] RuntimeError),
    /// A file or directory could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The command line asks for something that cannot work.
    #[error("{0}")]
    Usage(String),
    /// A command did not get what it waited for (a savepoint, a process).
    #[error("{0}")]
    Failed(String),
    /// A state-processor command failed.
    #[error(transparent)]
    State(#[from] flowstate_state_processor::ProcessorError),
    /// A look-up of queryable state failed.
    #[error(transparent)]
    Query(#[from] flowstate_query_client::ClientError),
}

impl AppError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AppError {
        let what = what.into();
        move |source| AppError::Io { what, source }
    }
}

/// The job's build function: describes the dataflow on every worker, given the job's
/// own options `A`.
pub trait BuildFn<A, R>: Fn(&mut Job<'_>, &A) -> R + Send + Sync + 'static {}
impl<A, R, F: Fn(&mut Job<'_>, &A) -> R + Send + Sync + 'static> BuildFn<A, R> for F {}

/// Runs the binary's command line (`run`, `savepoint`, `checkpoints`) for the job
/// `build` with its own options `A` (any `clap::Args`; `()`-like jobs use
/// [`NoOptions`]), after setting up logging; prints an error and fails the process on
/// failure. `name` is the binary's name in help texts.
pub fn main<A, R, F>(name: &'static str, build: F) -> ExitCode
where
    A: clap::Args + Clone + Send + Sync + 'static,
    R: JobResult,
    F: BuildFn<A, R>,
{
    init_logging();
    match try_main(name, std::env::args_os(), build) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// [`main`] on the given command line, returning the error instead of printing it
/// (logging is left to the caller).
pub fn try_main<A, R, F, I, T>(name: &'static str, args: I, build: F) -> Result<(), AppError>
where
    A: clap::Args + Clone + Send + Sync + 'static,
    R: JobResult,
    F: BuildFn<A, R>,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let command = cli::Cli::<A>::command_for(name);
    let matches = command
        .try_get_matches_from(args)
        .unwrap_or_else(|e| e.exit());
    let cli = cli::Cli::<A>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        cli::Command::Run { run, job } => run::run(&run, job, Arc::new(build)),
        cli::Command::Savepoint {
            dir,
            stop,
            native,
            timeout,
        } => inspect::savepoint(&dir, native, stop, timeout),
        cli::Command::Checkpoints { dir } => inspect::checkpoints_table(&dir),
        cli::Command::Ui { dir, addr } => web::ui(name, &dir, &addr),
        cli::Command::State(command) => state::run(command),
        cli::Command::Query {
            addr,
            state,
            keys,
            consistency,
            user_key,
        } => query::run(
            &addr,
            state.as_deref(),
            &keys,
            &consistency,
            user_key.as_deref(),
        ),
    }
}

/// Options of a job that has none of its own.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NoOptions {}

/// Logging on stderr, filtered by `RUST_LOG` (default `info`); does nothing when the
/// program set up its own subscriber.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

//! `state`: the offline state processor on the command line (`ls`, `describe`, `dump`,
//! `bootstrap`, `transform`), with a progress bar on a terminal for long runs.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use flowstate_state_processor::transform::parse_key_groups;
use flowstate_state_processor::{
    Bootstrap, DumpFilter, DumpFormat, Snapshot, Transform, TransformPlan, Written, describe,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::AppError;

/// The `state` commands.
#[derive(Subcommand, Debug)]
pub(crate) enum StateCommand {
    /// Lists a checkpoint's or savepoint's operators and their states (PATH: the
    /// snapshot's directory, or a checkpoint directory for its newest checkpoint, or
    /// newest savepoint when it has no checkpoint).
    Ls {
        /// Checkpoint or savepoint.
        path: PathBuf,
    },
    /// Describes every operator (or one): keyed states with kind, types, TTL,
    /// entries and bytes (per key group with `--key-groups`), timers, operator and
    /// broadcast state.
    Describe {
        /// Checkpoint or savepoint.
        path: PathBuf,
        /// Only this operator.
        #[arg(long)]
        uid: Option<String>,
        /// Also show entries and bytes per key group.
        #[arg(long)]
        key_groups: bool,
        /// As JSON (with the stored schemas).
        #[arg(long)]
        json: bool,
    },
    /// Writes state as records (JSON lines or CSV), values rendered through their
    /// stored schemas.
    Dump {
        /// Checkpoint or savepoint.
        path: PathBuf,
        /// Only this operator.
        #[arg(long)]
        uid: Option<String>,
        /// Only this state.
        #[arg(long)]
        state: Option<String>,
        /// Only these key groups (`a-b`, inclusive).
        #[arg(long)]
        key_groups: Option<String>,
        /// Only this key, as JSON (`'"alice"'`, `42`, `'[1, "x"]'`); a plain word is
        /// taken as a string.
        #[arg(long)]
        key: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Writes a new savepoint from JSON lines (declarations, then records as `dump`
    /// writes them) into the checkpoint directory `--out`; prints its directory.
    Bootstrap {
        /// The records (`-`: stdin).
        input: PathBuf,
        /// Checkpoint directory to write the savepoint into (new or a job's own, not
        /// while the job runs).
        #[arg(long)]
        out: PathBuf,
        /// Key groups of the savepoint (the restoring job's `--max-parallelism`).
        #[arg(long, default_value_t = 128)]
        max_parallelism: u32,
        /// Instances the files are written for (any parallelism restores it).
        #[arg(long, default_value_t = 1)]
        parallelism: u32,
    },
    /// Writes a new savepoint from a checkpoint or savepoint with changes, into the
    /// checkpoint directory `--out` (the input is never modified); prints its
    /// directory.
    Transform {
        /// Checkpoint or savepoint to read.
        path: PathBuf,
        /// Checkpoint directory to write the new savepoint into.
        #[arg(long)]
        out: PathBuf,
        /// Leave out this operator's state.
        #[arg(long, value_name = "UID")]
        drop_uid: Vec<String>,
        /// Store an operator's state under another uid.
        #[arg(long, value_name = "FROM=TO")]
        rename_uid: Vec<String>,
        /// Leave out one state.
        #[arg(long, value_name = "UID/STATE")]
        drop_state: Vec<String>,
        /// Store a state under another name.
        #[arg(long, value_name = "UID/FROM=TO")]
        rename_state: Vec<String>,
        /// Leave out this key (JSON; a plain word is a string), in every keyed
        /// operator or only in `--key-uid`'s.
        #[arg(long, value_name = "KEY")]
        drop_key: Vec<String>,
        /// The operator `--drop-key` applies to.
        #[arg(long)]
        key_uid: Option<String>,
        /// New max parallelism: every key is rewritten into its new key group.
        #[arg(long)]
        max_parallelism: Option<u32>,
        /// Instances the files are written for (operator list state is split anew).
        #[arg(long)]
        parallelism: Option<u32>,
    },
}

/// Dump output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header.
    Csv,
}

/// A key on the command line: JSON, or a plain word as a string.
fn key_json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

fn split_pair<'a>(s: &'a str, sep: char, what: &str) -> Result<(&'a str, &'a str), AppError> {
    s.split_once(sep)
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| AppError::Usage(format!("`{s}`: expected {what}")))
}

/// A progress bar with records and bytes per second, drawn only on a terminal.
fn progress(what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(&format!("{{spinner}} {what} {{msg}} ({{elapsed}})"))
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn rate(bar: &ProgressBar, keys: u64, bytes: u64) {
    let secs = bar.elapsed().as_secs_f64().max(1e-3);
    bar.set_message(format!(
        "{keys} keys, {:.1} MB ({:.0} keys/s, {:.1} MB/s)",
        bytes as f64 / 1e6,
        keys as f64 / secs,
        bytes as f64 / 1e6 / secs
    ));
}

fn written(w: &Written) {
    println!("{}", w.path.display());
    tracing::info!(
        "savepoint {} written and verified: {} keyed entries, {} bytes",
        w.id,
        w.entries,
        w.bytes
    );
}

/// Runs one `state` command.
pub(crate) fn run(command: StateCommand) -> Result<(), AppError> {
    match command {
        StateCommand::Ls { path } => {
            let snapshot = Snapshot::open(&path)?;
            let d = describe(&snapshot, None, false)?;
            let mut out = String::new();
            for o in &d.operators {
                out.push_str(&o.uid);
                for k in &o.keyed_states {
                    out.push_str(&format!("\n  {} {} ({})", k.kind, k.name, k.value));
                }
                for s in &o.operator_states {
                    out.push_str(&format!("\n  {} {}", s.mode, s.name));
                }
                out.push('\n');
            }
            print_quietly(&out)
        }
        StateCommand::Describe {
            path,
            uid,
            key_groups,
            json,
        } => {
            let snapshot = Snapshot::open(&path)?;
            let d = describe(&snapshot, uid.as_deref(), true)?;
            let text = if json {
                let mut s = serde_json::to_string_pretty(&d)
                    .map_err(|e| AppError::Failed(e.to_string()))?;
                s.push('\n');
                s
            } else {
                flowstate_state_processor::describe::to_text(&d, key_groups)
            };
            print_quietly(&text)
        }
        StateCommand::Dump {
            path,
            uid,
            state,
            key_groups,
            key,
            format,
            output,
        } => {
            let snapshot = Snapshot::open(&path)?;
            let filter = DumpFilter {
                uid,
                state,
                key_groups: key_groups.as_deref().map(parse_key_groups).transpose()?,
                key: key.as_deref().map(key_json),
                ..DumpFilter::default()
            };
            let format = match format {
                Format::Jsonl => DumpFormat::JsonLines,
                Format::Csv => DumpFormat::Csv,
            };
            let bar = progress("dumping");
            let mut w: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create_new(p)
                        .map_err(AppError::io(format!("creating {}", p.display())))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let result = flowstate_state_processor::dump(&snapshot, &filter, format, &mut w, |s| {
                rate(&bar, s.entries, s.bytes)
            });
            let flushed = w.flush();
            bar.finish_and_clear();
            match (result, flushed) {
                (Ok(stats), Ok(())) => {
                    tracing::info!("{} records, {} bytes of state", stats.records, stats.bytes);
                    Ok(())
                }
                (Err(e), _) if broken_pipe(&e) => Ok(()),
                (Ok(_), Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                (Err(e), _) => Err(e.into()),
                (Ok(_), Err(e)) => Err(AppError::io("writing the dump")(e)),
            }
        }
        StateCommand::Bootstrap {
            input,
            out,
            max_parallelism,
            parallelism,
        } => {
            let mut b = Bootstrap::new(max_parallelism, parallelism)?;
            let name = input.display().to_string();
            let n = if name == "-" {
                b.json_lines(std::io::stdin().lock(), "stdin")?
            } else {
                let f =
                    std::fs::File::open(&input).map_err(AppError::io(format!("opening {name}")))?;
                b.json_lines(BufReader::new(f), &name)?
            };
            tracing::info!("{n} records read");
            written(&b.write(&out)?);
            Ok(())
        }
        StateCommand::Transform {
            path,
            out,
            drop_uid,
            rename_uid,
            drop_state,
            rename_state,
            drop_key,
            key_uid,
            max_parallelism,
            parallelism,
        } => {
            let snapshot = Snapshot::open(&path)?;
            let mut transforms: Vec<Transform> =
                drop_uid.into_iter().map(Transform::DropOperator).collect();
            for r in &rename_uid {
                let (from, to) = split_pair(r, '=', "FROM=TO")?;
                transforms.push(Transform::RenameOperator {
                    from: from.into(),
                    to: to.into(),
                });
            }
            for d in &drop_state {
                let (uid, state) = split_pair(d, '/', "UID/STATE")?;
                transforms.push(Transform::DropState {
                    uid: uid.into(),
                    state: state.into(),
                });
            }
            for r in &rename_state {
                let (uid, rest) = split_pair(r, '/', "UID/FROM=TO")?;
                let (from, to) = split_pair(rest, '=', "UID/FROM=TO")?;
                transforms.push(Transform::RenameState {
                    uid: uid.into(),
                    from: from.into(),
                    to: to.into(),
                });
            }
            if !drop_key.is_empty() {
                transforms.push(Transform::drop_keys(
                    key_uid,
                    drop_key.iter().map(|k| key_json(k)).collect(),
                ));
            }
            let plan = TransformPlan {
                transforms,
                max_parallelism,
                parallelism,
            };
            let bar = progress("rewriting");
            let w = flowstate_state_processor::transform(&snapshot, &plan, &out, |k, b| {
                rate(&bar, k, b)
            });
            bar.finish_and_clear();
            written(&w?);
            Ok(())
        }
    }
}

fn broken_pipe(e: &flowstate_state_processor::ProcessorError) -> bool {
    matches!(e, flowstate_state_processor::ProcessorError::Io { source, .. }
        if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Prints to stdout; a closed pipe (`| head`) ends quietly.
fn print_quietly(s: &str) -> Result<(), AppError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(AppError::io("writing")(e)),
        _ => Ok(()),
    }
}

//! Connectors: file sources (lines, CSV, JSON lines) split across workers, a Nexmark
//! event source, and a file sink. (The vec sources and stdout sink are in `stream`.)
//!
//! **File splits.** A file of `n` bytes is cut into one byte range per worker; a worker
//! reads the lines that *start* in its range (it skips the partial line at its start,
//! and finishes the line running past its end), so every line is read exactly once at
//! any number of workers, as Hadoop and Flink's file sources split text. The read
//! position of each split (`path`, range, next byte offset) is kept in the worker's
//! split state of the source ([`crate::SOURCE_SPLITS_STATE`]), stored at every checkpoint.
//!
//! **Nexmark.** [`Job::source_nexmark`] generates the benchmark's Person, Auction and
//! Bid events with the `nexmark` crate; worker `i` of `W` generates events `i`, `i+W`,
//! ..., so the job sees the same events at any parallelism. Event times are the
//! events' `date_time` from a fixed base time, so runs repeat.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flowstate_core::descriptor::ListStateDescriptor;
use flowstate_core::state::ListState;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::source::{SeqReader, SplitFactory, SplitPosition, SplitReader, seq_splits};
use crate::stream::{Data, DataStream, Job, WatermarkStrategy};
use crate::{RuntimeError, record_error};

/// How a file source turns lines into records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// Each line is a `String` record (without its line ending).
    Lines,
    /// Each line is one CSV record deserialized with serde; `has_header` skips the
    /// file's first line. (Quoted fields spanning lines are not supported.)
    Csv {
        /// Whether the first line of the file is a header.
        has_header: bool,
    },
    /// Each non-empty line is one JSON value deserialized with serde.
    JsonLines,
}

/// Where one worker's split of a file is read up to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    /// The file.
    pub path: PathBuf,
    /// First byte of the split.
    pub split_start: u64,
    /// First byte after the split.
    pub split_end: u64,
    /// Next byte to read (a line start).
    pub offset: u64,
}

/// Turns one line into a record, or says why not.
type LineParser<T> = Rc<dyn Fn(&str) -> Result<T, String>>;

/// Reads the lines of one file split.
struct FileSplitReader<T> {
    reader: BufReader<File>,
    pos: FilePosition,
    format: FileFormat,
    parse: LineParser<T>,
    line: String,
}

impl<T> SplitReader<T> for FileSplitReader<T> {
    fn next(&mut self) -> Option<Result<T, String>> {
        let path = self.pos.path.display().to_string();
        loop {
            if self.pos.offset >= self.pos.split_end {
                return None;
            }
            self.line.clear();
            let n = match self.reader.read_line(&mut self.line) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) => {
                    let at = self.pos.offset;
                    return Some(Err(format!("{path}: read error at byte {at}: {e}")));
                }
            };
            let line_start = self.pos.offset;
            self.pos.offset += n as u64;
            let text = self.line.trim_end_matches(['\n', '\r']);
            let skip = match self.format {
                FileFormat::Csv { has_header } => has_header && line_start == 0,
                FileFormat::JsonLines => text.trim().is_empty(),
                FileFormat::Lines => false,
            };
            if skip {
                continue;
            }
            return Some(
                (self.parse)(text).map_err(|e| {
                    format!("{path}: bad record in the line at byte {line_start}: {e}")
                }),
            );
        }
    }
    fn position(&self) -> SplitPosition {
        // The file's name only: see `reopen_split`.
        let mut pos = self.pos.clone();
        if let Some(name) = pos.path.file_name() {
            pos.path = PathBuf::from(name);
        }
        SplitPosition::File(pos)
    }
}

/// Opens a split stored in a checkpoint at its read position in the configured file
/// `path`. Positions store the file's name only (so a job whose input moved resumes
/// from the new place); version-1 snapshots stored the path as configured, accepted
/// when it is this one. A position naming any other file is refused: restored state
/// never makes the job open what it was not configured to read.
fn reopen_split(
    mut pos: FilePosition,
    path: &Path,
) -> Result<(BufReader<File>, FilePosition), String> {
    let ours = pos.path == path
        || (pos.path.components().count() == 1 && pos.path.file_name() == path.file_name());
    if !ours {
        return Err(format!(
            "the snapshot holds a read position in {}, but this source reads {}",
            pos.path.display(),
            path.display()
        ));
    }
    pos.path = path.to_path_buf();
    let mut file =
        File::open(&pos.path).map_err(|e| format!("{}: cannot open: {e}", pos.path.display()))?;
    file.seek(SeekFrom::Start(pos.offset))
        .map_err(|e| format!("{}: cannot seek: {e}", pos.path.display()))?;
    Ok((BufReader::new(file), pos))
}

/// Opens `path` positioned at the first line starting in this worker's byte range.
fn open_split(
    path: &Path,
    index: usize,
    peers: usize,
) -> Result<(BufReader<File>, FilePosition), String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    let bound = |i: usize| (u128::from(len) * i as u128 / peers as u128) as u64;
    let (start, end) = (bound(index), bound(index + 1));
    let mut reader = BufReader::new(file);
    let mut offset = start;
    if start > 0 {
        // The line running into this split belongs to the previous one.
        reader
            .seek(SeekFrom::Start(start - 1))
            .map_err(|e| format!("cannot seek: {e}"))?;
        let mut skipped = Vec::new();
        let n = reader
            .read_until(b'\n', &mut skipped)
            .map_err(|e| format!("read error at byte {}: {e}", start - 1))?;
        offset = start - 1 + n as u64;
    }
    Ok((
        reader,
        FilePosition {
            path: path.to_path_buf(),
            split_start: start,
            split_end: end,
            offset,
        },
    ))
}

impl<'scope> Job<'scope> {
    /// A source reading `path` split across workers (see the module docs), parsed
    /// by `format` into records of type `T` (`String` for [`FileFormat::Lines`]).
    /// Unreadable files and unparsable lines fail the job with
    /// [`RuntimeError::Source`] naming the file and byte offset.
    pub fn source_file<T: Data + DeserializeOwned>(
        &mut self,
        path: impl AsRef<Path>,
        format: FileFormat,
        timestamp: impl Fn(&T) -> i64 + 'static,
        strategy: WatermarkStrategy,
    ) -> DataStream<'scope, T> {
        let path = path.as_ref().to_path_buf();
        let parse: LineParser<T> = match format {
            FileFormat::Lines => Rc::new(|line: &str| {
                // A line is a JSON string's contents: this is the String case.
                serde_json::from_value(serde_json::Value::String(line.to_string()))
                    .map_err(|e| format!("line records need T = String: {e}"))
            }),
            FileFormat::Csv { .. } => Rc::new(|line: &str| {
                let mut r = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .from_reader(line.as_bytes());
                match r.deserialize::<T>().next() {
                    Some(Ok(v)) => Ok(v),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err("empty CSV line".to_string()),
                }
            }),
            FileFormat::JsonLines => {
                Rc::new(|line: &str| serde_json::from_str::<T>(line).map_err(|e| e.to_string()))
            }
        };
        let (index, peers) = (self.worker_index(), self.workers());
        let make: SplitFactory<T> = Box::new(move |stored| {
            let opened = match stored {
                None => vec![
                    open_split(&path, index, peers)
                        .map_err(|m| format!("{}: {m}", path.display()))?,
                ],
                Some(splits) => splits
                    .into_iter()
                    .map(|s| match s.position {
                        SplitPosition::File(pos) => reopen_split(pos, &path),
                        other => Err(format!("a file source cannot resume from {other:?}")),
                    })
                    .collect::<Result<_, _>>()?,
            };
            Ok(opened
                .into_iter()
                .map(|(reader, pos)| {
                    Box::new(FileSplitReader {
                        reader,
                        pos,
                        format,
                        parse: parse.clone(),
                        line: String::new(),
                    }) as Box<dyn SplitReader<T>>
                })
                .collect())
        });
        self.add_source("file-source", make, Box::new(timestamp), strategy)
    }

    /// `events` Nexmark events (Person, Auction, Bid in the benchmark's 1:3:46 mix),
    /// split across workers, with event times from `base_time_ms` and a bounded
    /// out-of-orderness watermark of `max_delay_ms`.
    pub fn source_nexmark(
        &mut self,
        events: u64,
        base_time_ms: u64,
        max_delay_ms: i64,
    ) -> DataStream<'scope, nexmark::event::Event> {
        let (index, peers) = (self.worker_index() as u64, self.workers() as u64);
        let make: SplitFactory<nexmark::event::Event> = Box::new(move |stored| {
            let positions = seq_splits(stored, Some((index, peers)), "Nexmark")?;
            Ok(positions
                .into_iter()
                .map(|(index, of, consumed)| {
                    let config = nexmark::config::NexmarkConfig {
                        base_time: base_time_ms,
                        ..Default::default()
                    };
                    let mut generator = nexmark::EventGenerator::new(config)
                        .with_offset(index + consumed * of)
                        .with_step(of);
                    Box::new(SeqReader {
                        index,
                        of,
                        consumed,
                        len: events,
                        // The reader bounds the count; the generator is endless.
                        element: Box::new(move |_| generator.next()),
                    }) as Box<dyn SplitReader<nexmark::event::Event>>
                })
                .collect())
        });
        self.add_source(
            "nexmark-source",
            make,
            Box::new(|e: &nexmark::event::Event| i64::try_from(e.timestamp()).unwrap_or(i64::MAX)),
            WatermarkStrategy::BoundedOutOfOrderness(max_delay_ms),
        )
    }
}

/// A sink transaction: the records of one checkpoint interval in one in-progress file.
///
/// Paths are relative to the sink's configured directory (file names), so a restore
/// with another output directory commits into that one. Version-1 snapshots stored
/// absolute paths; those are accepted only inside the configured directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkTransaction {
    /// Checkpoint interval whose records it holds.
    pub interval: u64,
    /// The hidden in-progress file (pre-committed: flushed and synced).
    pub pending: PathBuf,
    /// The committed name.
    pub committed: PathBuf,
}

/// `stored` (a transaction's path) inside the sink directory `dir`, or why not.
fn in_sink_dir(dir: &Path, stored: &Path) -> Result<PathBuf, RuntimeError> {
    if crate::ownership::stays_inside(stored) {
        return Ok(dir.join(stored));
    }
    let legacy_inside = stored.is_absolute()
        && stored.parent().is_some_and(|p| {
            p == dir || matches!((p.canonicalize(), dir.canonicalize()), (Ok(a), Ok(b)) if a == b)
        });
    match stored.file_name() {
        Some(name) if legacy_inside => Ok(dir.join(name)),
        _ => Err(RuntimeError::Restore(format!(
            "a sink transaction names {}, outside the sink's directory {}: refused",
            stored.display(),
            dir.display()
        ))),
    }
}

/// Makes a file's creation or rename durable: fsyncs the directory holding it.
fn sync_dir(dir: &Path) -> Result<(), RuntimeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RuntimeError::Sink(format!("syncing directory {}: {e}", dir.display())))
}

impl SinkTransaction {
    /// Makes the transaction's output visible in `dir`; idempotent (a transaction
    /// committed before a crash is found committed after it).
    fn commit(&self, dir: &Path) -> Result<(), RuntimeError> {
        crate::failpoint::hit("sink-commit");
        let pending = in_sink_dir(dir, &self.pending)?;
        let committed = in_sink_dir(dir, &self.committed)?;
        match std::fs::rename(&pending, &committed) {
            Ok(()) => sync_dir(dir),
            Err(_) if committed.exists() => Ok(()),
            Err(e) => Err(RuntimeError::Sink(format!(
                "committing {}: {e}",
                pending.display()
            ))),
        }
    }
}

/// Name of the operator list state holding a sink's pre-committed transactions.
pub const SINK_TRANSACTIONS_STATE: &str = "sink-transactions";

/// Open and pre-committed transactions of one sink instance.
struct SinkState {
    dir: PathBuf,
    index: usize,
    open: BTreeMap<u64, (BufWriter<File>, SinkTransaction)>,
    precommitted: Vec<SinkTransaction>,
}

impl SinkState {
    fn transaction(&self, interval: u64) -> SinkTransaction {
        SinkTransaction {
            interval,
            pending: PathBuf::from(format!(".part-{}-{interval}.inprogress", self.index)),
            committed: PathBuf::from(format!("part-{}-{interval}", self.index)),
        }
    }

    fn writer(&mut self, interval: u64) -> Result<&mut BufWriter<File>, RuntimeError> {
        if !self.open.contains_key(&interval) {
            let t = self.transaction(interval);
            let path = self.dir.join(&t.pending);
            let f = File::create(&path)
                .map_err(|e| RuntimeError::Sink(format!("{}: {e}", path.display())))?;
            sync_dir(&self.dir)?;
            self.open.insert(interval, (BufWriter::new(f), t));
        }
        self.open
            .get_mut(&interval)
            .map(|(w, _)| w)
            .ok_or_else(|| RuntimeError::Sink("transaction vanished".into()))
    }

    /// Pre-commits every open transaction of an interval below `limit`.
    fn precommit_below(&mut self, limit: u64) -> Result<(), RuntimeError> {
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() >= limit {
                break;
            }
            let (w, t) = entry.remove();
            let f = w
                .into_inner()
                .map_err(|e| RuntimeError::Sink(format!("{}: {e}", t.pending.display())))?;
            f.sync_all()
                .map_err(|e| RuntimeError::Sink(format!("{}: {e}", t.pending.display())))?;
            self.precommitted.push(t);
        }
        Ok(())
    }

    /// Commits every pre-committed transaction of checkpoints up to `done`.
    fn commit_through(&mut self, done: u64) -> Result<(), RuntimeError> {
        let mut keep = Vec::new();
        for t in std::mem::take(&mut self.precommitted) {
            if t.interval <= done {
                t.commit(&self.dir)?;
            } else {
                keep.push(t);
            }
        }
        self.precommitted = keep;
        Ok(())
    }
}

/// Deletes in-progress files of the workers `mine` accepts from intervals after
/// `after`: output of a crashed run past its last checkpoint, which the restarted job
/// writes again.
fn delete_stray_transactions(dir: &Path, mine: impl Fn(usize) -> bool, after: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name
            .strip_prefix(".part-")
            .and_then(|r| r.strip_suffix(".inprogress"))
        else {
            continue;
        };
        let Some((w, c)) = rest.split_once('-') else {
            continue;
        };
        let (Ok(w), Ok(c)) = (w.parse::<usize>(), c.parse::<u64>()) else {
            continue;
        };
        if mine(w) && c > after {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl<T: Data> DataStream<'_, T> {
    /// Writes every record as a line `format(record)` into `dir`, exactly once across
    /// failures when the job checkpoints: a transactional (two-phase commit) sink as
    /// Flink's `FileSink`.
    ///
    /// Each worker writes the records of checkpoint interval `c` to a hidden
    /// `.part-<worker>-<c>.inprogress`; when checkpoint `c`'s snapshot is taken the file
    /// is flushed and synced (pre-commit) and listed in the sink's operator state; when
    /// the checkpoint completes it is renamed to `part-<worker>-<c>` (commit). A restart
    /// commits the transactions of the checkpoint it restores (idempotently: some may
    /// already be committed) and deletes in-progress files written after it. Without
    /// checkpointing, everything is committed when the input ends. Write errors fail
    /// the job with [`RuntimeError::Sink`].
    pub fn write_text_files(self, dir: impl AsRef<Path>, format: impl Fn(&T) -> String + 'static) {
        let dir = dir.as_ref().to_path_buf();
        let errors = self.errors.clone();
        let index = self.scope.index();
        let peers = self.scope.peers();
        if let Err(e) = std::fs::create_dir_all(&dir) {
            record_error(
                &errors,
                RuntimeError::Sink(format!("{}: {e}", dir.display())),
            );
            return;
        }
        let sink = Rc::new(RefCell::new(SinkState {
            dir: dir.clone(),
            index,
            open: BTreeMap::new(),
            precommitted: Vec::new(),
        }));
        // Checkpointing: a task whose operator state is the pre-committed transactions.
        let mut task = None;
        let mut restored_id = 0;
        if let Some(ctx) = self.checkpoints.clone() {
            let setup = (|| -> Result<_, RuntimeError> {
                let (uid, restored) = ctx.task("file-sink", false);
                let store = ctx.operator_store(restored.as_ref())?;
                let state = store.list_state::<SinkTransaction>(&ListStateDescriptor::new(
                    SINK_TRANSACTIONS_STATE,
                ))?;
                // The restored checkpoint completed: its transactions commit now.
                for t in state.get()? {
                    t.commit(&dir)?;
                }
                state.update(Vec::new())?;
                Ok((uid, store, state))
            })();
            restored_id = ctx.restored.as_ref().map_or(0, |r| r.metadata.id);
            match setup {
                Ok(t) => task = Some((ctx.clone(), t)),
                Err(e) => record_error(&errors, e),
            }
            let listener = sink.clone();
            ctx.on_complete(move |done| listener.borrow_mut().commit_through(done));
        }
        // Worker 0 also takes those of workers this run does not have (a rescale down).
        delete_stray_transactions(
            &dir,
            |w| w == index || (index == 0 && w >= peers),
            restored_id,
        );
        let mut snapshotted = task
            .as_ref()
            .map_or(0, |(ctx, _)| ctx.coordinator.start().saturating_sub(1));
        self.inner
            .sink(Pipeline, "FileSink", move |(input, frontier)| {
                let mut s = sink.borrow_mut();
                input.for_each(|time, data| {
                    if errors.borrow().is_some() {
                        data.clear();
                        return;
                    }
                    let interval = crate::time::stamp_time(time.stamp().elements()).inner;
                    let written = s.writer(interval).and_then(|w| {
                        for (_, v) in data.drain(..) {
                            writeln!(w, "{}", format(&v)).map_err(|e| {
                                RuntimeError::Sink(format!("{}: {e}", dir.display()))
                            })?;
                        }
                        Ok(())
                    });
                    if let Err(e) = written {
                        record_error(&errors, e);
                    }
                    data.clear();
                });
                if errors.borrow().is_some() {
                    return;
                }
                let clocks = crate::time::frontier_clocks(&frontier.frontier());
                let result = (|| -> Result<(), RuntimeError> {
                    match &task {
                        None => {
                            if clocks.is_none() {
                                s.precommit_below(u64::MAX)?;
                                s.commit_through(u64::MAX)?;
                            }
                        }
                        Some((ctx, (uid, store, state))) => {
                            let through = match clocks {
                                Some((_, c)) => c.saturating_sub(1),
                                None => ctx.coordinator.final_id().unwrap_or(snapshotted),
                            };
                            while snapshotted < through {
                                snapshotted += 1;
                                let started = std::time::Instant::now();
                                s.precommit_below(snapshotted + 1)?;
                                let taken = state
                                    .update(s.precommitted.clone())
                                    .and_then(|()| store.snapshot())
                                    .map(|snap| (None, Some(snap)))
                                    .map_err(RuntimeError::from);
                                ctx.snapshot_taken(snapshotted, uid, taken, started);
                            }
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = result {
                    record_error(&errors, e);
                }
            });
    }
}

//! Connectors: file sources (lines, CSV, JSON lines) split across workers, a Nexmark
//! event source, and a file sink. (The vec sources and stdout sink are in `stream`.)
//!
//! **File splits.** A file of `n` bytes is cut into one byte range per worker; a worker
//! reads the lines that *start* in its range (it skips the partial line at its start,
//! and finishes the line running past its end), so every line is read exactly once at
//! any number of workers, as Hadoop and Flink's file sources split text. The read
//! position of each split (`path`, range, next byte offset) is kept in the worker's
//! operator state under [`FILE_POSITION_STATE`], updated after every batch.
//!
//! **Nexmark.** [`Job::source_nexmark`] generates the benchmark's Person, Auction and
//! Bid events with the `nexmark` crate; worker `i` of `W` generates events `i`, `i+W`,
//! ..., so the job sees the same events at any parallelism. Event times are the
//! events' `date_time` from a fixed base time, so runs repeat.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flowstate_core::descriptor::ListStateDescriptor;
use flowstate_core::operator::{OperatorListState, OperatorStateStore};
use flowstate_core::state::ListState;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Input;
use timely::dataflow::operators::generic::Operator;

use crate::stream::{Data, DataStream, Job, SourceDriver, WatermarkStrategy, advance_epoch};
use crate::{ErrorSlot, RuntimeError, record_error};

/// Name of the operator list state holding file sources' read positions.
pub const FILE_POSITION_STATE: &str = "file-source-position";

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
type LineParser<T> = Box<dyn Fn(&str) -> Result<T, String>>;

/// Records per source step, as for the vec source.
const FILE_BATCH: usize = 1024;

struct FileSource<T: Data> {
    reader: BufReader<File>,
    pos: FilePosition,
    format: FileFormat,
    parse: LineParser<T>,
    timestamp: Box<dyn Fn(&T) -> i64>,
    strategy: WatermarkStrategy,
    max_ts: i64,
    line: String,
    position_state: Rc<OperatorListState<FilePosition>>,
    _store: OperatorStateStore,
    errors: ErrorSlot,
    input: InputHandle<u64, CapacityContainerBuilder<Vec<(i64, T)>>>,
}

impl<T: Data> FileSource<T> {
    fn fail(&self, message: String) -> bool {
        record_error(
            &self.errors,
            RuntimeError::Source(format!("{}: {message}", self.pos.path.display())),
        );
        false
    }
}

impl<T: Data> SourceDriver for FileSource<T> {
    fn step(&mut self) -> bool {
        for _ in 0..FILE_BATCH {
            if self.pos.offset >= self.pos.split_end {
                return false;
            }
            self.line.clear();
            let n = match self.reader.read_line(&mut self.line) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) => {
                    let at = self.pos.offset;
                    return self.fail(format!("read error at byte {at}: {e}"));
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
            match (self.parse)(text) {
                Ok(v) => {
                    let ts = (self.timestamp)(&v);
                    self.input.send((ts, v));
                    self.max_ts = self.max_ts.max(ts);
                    advance_epoch(&mut self.input, self.strategy, self.max_ts);
                }
                Err(e) => {
                    return self.fail(format!("bad record in the line at byte {line_start}: {e}"));
                }
            }
        }
        if let Err(e) = self.position_state.update(vec![self.pos.clone()]) {
            record_error(&self.errors, e.into());
            return false;
        }
        true
    }
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
        let (input, stream) = self.scope.new_input::<Vec<(i64, T)>>();
        let parse: LineParser<T> = match format {
            FileFormat::Lines => Box::new(|line: &str| {
                // A line is a JSON string's contents: this is the String case.
                serde_json::from_value(serde_json::Value::String(line.to_string()))
                    .map_err(|e| format!("line records need T = String: {e}"))
            }),
            FileFormat::Csv { .. } => Box::new(|line: &str| {
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
                Box::new(|line: &str| serde_json::from_str::<T>(line).map_err(|e| e.to_string()))
            }
        };
        let (index, peers) = (self.worker_index(), self.workers());
        let store = OperatorStateStore::new(index as u32);
        let opened = open_split(&path, index, peers)
            .map_err(|m| RuntimeError::Source(format!("{}: {m}", path.display())))
            .and_then(|(reader, pos)| {
                let state = store
                    .list_state::<FilePosition>(&ListStateDescriptor::new(FILE_POSITION_STATE))?;
                state.update(vec![pos.clone()])?;
                Ok((reader, pos, state))
            });
        match opened {
            Ok((reader, pos, position_state)) => self.drivers.push(Box::new(FileSource {
                reader,
                pos,
                format,
                parse,
                timestamp: Box::new(timestamp),
                strategy,
                max_ts: i64::MIN,
                line: String::new(),
                position_state,
                _store: store,
                errors: self.errors.clone(),
                input,
            })),
            Err(e) => record_error(&self.errors, e),
        }
        self.stream(stream)
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
        let config = nexmark::config::NexmarkConfig {
            base_time: base_time_ms,
            ..Default::default()
        };
        let mine = events.saturating_sub(index).div_ceil(peers);
        let generator = nexmark::EventGenerator::new(config)
            .with_offset(index)
            .with_step(peers)
            .take(usize::try_from(mine).unwrap_or(usize::MAX));
        let (input, stream) = self.scope.new_input::<Vec<(i64, nexmark::event::Event)>>();
        self.drivers.push(Box::new(crate::stream::IterSource {
            items: Box::new(generator),
            timestamp: Box::new(|e: &nexmark::event::Event| {
                i64::try_from(e.timestamp()).unwrap_or(i64::MAX)
            }),
            strategy: WatermarkStrategy::BoundedOutOfOrderness(max_delay_ms),
            max_ts: i64::MIN,
            input,
        }));
        self.stream(stream)
    }
}

impl<T: Data> DataStream<'_, T> {
    /// Writes every record as a line `format(record)` to `dir/part-<worker>` (the
    /// directory is created; existing part files are replaced). Write errors fail the
    /// job with [`RuntimeError::Sink`]. Exactly-once output across failures is the
    /// transactional sink of the checkpointing runtime.
    pub fn write_text_files(self, dir: impl AsRef<Path>, format: impl Fn(&T) -> String + 'static) {
        let path = dir.as_ref().join(format!("part-{}", self.scope.index()));
        let errors = self.errors.clone();
        let fail = move |e: std::io::Error, errors: &ErrorSlot| {
            record_error(
                errors,
                RuntimeError::Sink(format!("{}: {e}", path.display())),
            );
        };
        let file = std::fs::create_dir_all(dir.as_ref())
            .and_then(|()| File::create(dir.as_ref().join(format!("part-{}", self.scope.index()))));
        let mut writer = match file {
            Ok(f) => Some(BufWriter::new(f)),
            Err(e) => {
                fail(e, &errors);
                None
            }
        };
        self.inner
            .sink(Pipeline, "FileSink", move |(input, frontier)| {
                input.for_each(|_, data| {
                    let mut broken = false;
                    if let Some(w) = writer.as_mut() {
                        for (_, v) in data.drain(..) {
                            if let Err(e) = writeln!(w, "{}", format(&v)) {
                                fail(e, &errors);
                                broken = true;
                                break;
                            }
                        }
                    }
                    data.clear();
                    if broken {
                        writer = None;
                    }
                });
                if frontier.is_empty()
                    && let Some(mut w) = writer.take()
                    && let Err(e) = w.flush()
                {
                    fail(e, &errors);
                }
            });
    }
}

//! The file source ([`Job::source_file`]): lines, CSV or JSON lines, split across
//! workers by byte ranges (see the module docs of `connectors`).

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::FileError;
use crate::BoxError;
use crate::source::{Read, SplitPosition, SplitReader, SplitSource};
use crate::stream::{Data, DataStream, Job, WatermarkStrategy};

/// How a file source turns lines into records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// Each line is a `String` record (without its line ending).
    Lines,
    /// Each line is one CSV record deserialized with serde; `has_header` skips the
    /// file's first line. (Quoted fields spanning lines are not supported.)
    #[cfg(feature = "csv")]
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

impl<T> SplitReader<T, FilePosition> for FileSplitReader<T> {
    fn next(&mut self) -> Result<Read<T>, BoxError> {
        loop {
            if self.pos.offset >= self.pos.split_end {
                return Ok(Read::End);
            }
            self.line.clear();
            let n = match self.reader.read_line(&mut self.line) {
                Ok(0) => return Ok(Read::End),
                Ok(n) => n,
                Err(e) => {
                    let what = format!("read error at byte {}", self.pos.offset);
                    return Err(FileError::io(&self.pos.path, what)(e).into());
                }
            };
            let line_start = self.pos.offset;
            self.pos.offset += n as u64;
            let text = self.line.trim_end_matches(['\n', '\r']);
            let skip = match self.format {
                #[cfg(feature = "csv")]
                FileFormat::Csv { has_header } => has_header && line_start == 0,
                FileFormat::JsonLines => text.trim().is_empty(),
                FileFormat::Lines => false,
            };
            if skip {
                continue;
            }
            return (self.parse)(text).map(Read::Record).map_err(|message| {
                FileError::BadRecord {
                    path: self.pos.path.clone(),
                    offset: line_start,
                    message,
                }
                .into()
            });
        }
    }
    fn position(&self) -> FilePosition {
        // The file's name only: see `reopen_split`.
        let mut pos = self.pos.clone();
        if let Some(name) = pos.path.file_name() {
            pos.path = PathBuf::from(name);
        }
        pos
    }
}

/// A file read as one split per worker (see the module docs of `connectors`).
struct FileSource<T> {
    path: PathBuf,
    format: FileFormat,
    parse: LineParser<T>,
}

impl<T: 'static> SplitSource<T> for FileSource<T> {
    type Split = FilePosition;
    fn initial_splits(
        &mut self,
        index: usize,
        workers: usize,
    ) -> Result<Vec<FilePosition>, BoxError> {
        let (_, pos) = open_split(&self.path, index, workers)?;
        Ok(vec![pos])
    }
    fn open_split(
        &mut self,
        pos: FilePosition,
    ) -> Result<Box<dyn SplitReader<T, FilePosition>>, BoxError> {
        let (reader, pos) = reopen_split(pos, &self.path)?;
        Ok(Box::new(FileSplitReader {
            reader,
            pos,
            format: self.format,
            parse: self.parse.clone(),
            line: String::new(),
        }))
    }
    fn store_split(pos: &FilePosition) -> Result<SplitPosition, BoxError> {
        Ok(SplitPosition::File(pos.clone()))
    }
    fn load_split(stored: SplitPosition) -> Result<FilePosition, BoxError> {
        match stored {
            SplitPosition::File(pos) => Ok(pos),
            other => Err(
                FileError::Refused(format!("a file source cannot resume from {other:?}")).into(),
            ),
        }
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
) -> Result<(BufReader<File>, FilePosition), FileError> {
    let ours = pos.path == path
        || (pos.path.components().count() == 1 && pos.path.file_name() == path.file_name());
    if !ours {
        return Err(FileError::Refused(format!(
            "the snapshot holds a read position in {}, but this source reads {}",
            pos.path.display(),
            path.display()
        )));
    }
    pos.path = path.to_path_buf();
    let mut file = File::open(&pos.path).map_err(FileError::io(path, "cannot open"))?;
    file.seek(SeekFrom::Start(pos.offset))
        .map_err(FileError::io(path, "cannot seek"))?;
    Ok((BufReader::new(file), pos))
}

/// Opens `path` positioned at the first line starting in this worker's byte range.
fn open_split(
    path: &Path,
    index: usize,
    peers: usize,
) -> Result<(BufReader<File>, FilePosition), FileError> {
    let file = File::open(path).map_err(FileError::io(path, "cannot open"))?;
    let len = file
        .metadata()
        .map_err(FileError::io(path, "cannot stat"))?
        .len();
    let bound = |i: usize| (u128::from(len) * i as u128 / peers as u128) as u64;
    let (start, end) = (bound(index), bound(index + 1));
    let mut reader = BufReader::new(file);
    let mut offset = start;
    if start > 0 {
        // The line running into this split belongs to the previous one.
        reader
            .seek(SeekFrom::Start(start - 1))
            .map_err(FileError::io(path, "cannot seek"))?;
        let mut skipped = Vec::new();
        let n = reader
            .read_until(b'\n', &mut skipped)
            .map_err(FileError::io(
                path,
                format!("read error at byte {}", start - 1),
            ))?;
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
    /// [`crate::RuntimeError::Connector`] naming the file and byte offset.
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
            #[cfg(feature = "csv")]
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
        let source = FileSource {
            path,
            format,
            parse,
        };
        self.source("file-source", source, timestamp, strategy)
    }
}

//! The transactional file sink ([`FileSink`], [`DataStream::write_text_files`]): a
//! [`TransactionalSink`] writing one file per worker and checkpoint interval, committed
//! by an atomic rename (Flink's `FileSink`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sink::{SinkContext, TransactionalSink};
use crate::stream::{Data, DataSink, DataStream};
use super::FileError;
use crate::BoxError;

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
fn in_sink_dir(dir: &Path, stored: &Path) -> Result<PathBuf, FileError> {
    if crate::ownership::stays_inside(stored) {
        return Ok(dir.join(stored));
    }
    let legacy_inside = stored.is_absolute()
        && stored.parent().is_some_and(|p| {
            p == dir || matches!((p.canonicalize(), dir.canonicalize()), (Ok(a), Ok(b)) if a == b)
        });
    match stored.file_name() {
        Some(name) if legacy_inside => Ok(dir.join(name)),
        _ => Err(FileError::Refused(format!(
            "a sink transaction names {}, outside the sink's directory {}: refused",
            stored.display(),
            dir.display()
        ))),
    }
}

/// Makes a file's creation or rename durable: fsyncs the directory holding it.
fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FileError::io(dir, "syncing the directory"))
}

impl SinkTransaction {
    /// Makes the transaction's output visible in `dir`; idempotent (a transaction
    /// committed before a crash is found committed after it).
    fn commit(&self, dir: &Path) -> Result<(), FileError> {
        let pending = in_sink_dir(dir, &self.pending)?;
        let committed = in_sink_dir(dir, &self.committed)?;
        match std::fs::rename(&pending, &committed) {
            Ok(()) => sync_dir(dir),
            Err(_) if committed.exists() => Ok(()),
            Err(e) => Err(FileError::io(&pending, "committing")(e)),
        }
    }
}

/// Writes every record as a line into a directory, exactly once: the records of
/// checkpoint interval `c` of worker `w` go to a hidden `.part-<w>-<c>.inprogress`,
/// flushed and synced at the pre-commit, renamed to `part-<w>-<c>` at the commit.
/// Recovery deletes in-progress files of intervals after the restored checkpoint.
pub struct FileSink<T> {
    dir: PathBuf,
    format: Box<dyn Fn(&T) -> String>,
    index: usize,
    open: BTreeMap<u64, (BufWriter<File>, SinkTransaction)>,
}

impl<T> FileSink<T> {
    /// A sink writing `format(record)` lines into `dir` (created when missing).
    pub fn new(dir: impl AsRef<Path>, format: impl Fn(&T) -> String + 'static) -> Self {
        FileSink {
            dir: dir.as_ref().to_path_buf(),
            format: Box::new(format),
            index: 0,
            open: BTreeMap::new(),
        }
    }

    fn transaction(&self, interval: u64) -> SinkTransaction {
        SinkTransaction {
            interval,
            pending: PathBuf::from(format!(".part-{}-{interval}.inprogress", self.index)),
            committed: PathBuf::from(format!("part-{}-{interval}", self.index)),
        }
    }
}

impl<T: 'static> TransactionalSink<T> for FileSink<T> {
    type Transaction = SinkTransaction;

    fn recover(&mut self, ctx: &SinkContext) -> Result<(), BoxError> {
        self.index = ctx.index;
        std::fs::create_dir_all(&self.dir)
            .map_err(FileError::io(&self.dir, "creating the directory"))?;
        delete_stray_transactions(&self.dir, |w| ctx.recovers(w), ctx.restored);
        Ok(())
    }

    fn write(&mut self, interval: u64, record: &T) -> Result<(), BoxError> {
        if !self.open.contains_key(&interval) {
            let t = self.transaction(interval);
            let path = self.dir.join(&t.pending);
            let f = File::create(&path).map_err(FileError::io(&path, "creating"))?;
            sync_dir(&self.dir)?;
            self.open.insert(interval, (BufWriter::new(f), t));
        }
        let line = (self.format)(record);
        if let Some((w, t)) = self.open.get_mut(&interval) {
            writeln!(w, "{line}").map_err(FileError::io(&t.pending, "writing"))?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, interval: u64) -> Result<Option<SinkTransaction>, BoxError> {
        let Some((w, t)) = self.open.remove(&interval) else {
            return Ok(None);
        };
        let f = w
            .into_inner()
            .map_err(|e| FileError::io(&t.pending, "flushing")(e.into_error()))?;
        f.sync_all().map_err(FileError::io(&t.pending, "syncing"))?;
        Ok(Some(t))
    }

    fn commit(&mut self, t: &SinkTransaction) -> Result<(), BoxError> {
        Ok(t.commit(&self.dir)?)
    }
}

/// Deletes in-progress files of the workers `mine` accepts from intervals after
/// `after`: output of a crashed run past its last checkpoint, which the restarted job
/// writes again. Only names this sink makes (`.part-<w>-<c>.inprogress`) are touched.
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
        if mine(w) && c > after && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl<T: Data> DataStream<'_, T> {
    /// Writes every record as a line `format(record)` into `dir`, exactly once across
    /// failures when the job checkpoints: [`FileSink`] through [`DataStream::sink_to`]
    /// (Flink's `FileSink`).
    ///
    /// Each worker writes the records of checkpoint interval `c` to a hidden
    /// `.part-<worker>-<c>.inprogress`; when checkpoint `c`'s snapshot is taken the file
    /// is flushed and synced (pre-commit) and listed in the sink's operator state; when
    /// the checkpoint completes it is renamed to `part-<worker>-<c>` (commit). A restart
    /// commits the transactions of the checkpoint it restores (idempotently: some may
    /// already be committed) and deletes in-progress files written after it. Without
    /// checkpointing, everything is committed when the input ends. Write errors fail
    /// the job.
    pub fn write_text_files(
        self,
        dir: impl AsRef<Path>,
        format: impl Fn(&T) -> String + 'static,
    ) -> DataSink {
        self.sink_to("file-sink", FileSink::new(dir, format))
    }
}

//! The transactional file sink ([`FileSink`], [`DataStream::write_text_files`]): a
//! [`TransactionalSink`] writing one file per worker and checkpoint interval, committed
//! by an atomic rename (Flink's `FileSink`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::FileError;
use crate::BoxError;
use crate::sink::{SinkContext, TransactionalSink};
use crate::stream::{Data, DataSink, DataStream};

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        n.sort();
        n
    }

    fn ctx(index: usize, instances: usize, restored: u64) -> SinkContext {
        SinkContext {
            index,
            instances,
            restored,
        }
    }

    #[test]
    fn nothing_is_visible_before_commit_and_commit_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let mut s = FileSink::new(&dir, |x: &u32| x.to_string());
        s.recover(&ctx(1, 2, 0)).unwrap();
        s.write(3, &7).unwrap();
        s.write(3, &8).unwrap();
        assert_eq!(s.pre_commit(2).unwrap(), None);
        let t = s.pre_commit(3).unwrap().unwrap();
        assert_eq!(names(&dir), [".part-1-3.inprogress"]);
        s.commit(&t).unwrap();
        s.commit(&t).unwrap();
        assert_eq!(names(&dir), ["part-1-3"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("part-1-3")).unwrap(),
            "7\n8\n"
        );
    }

    #[test]
    fn recovery_deletes_only_this_sinks_uncommitted_files_after_the_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        std::fs::create_dir_all(&dir).unwrap();
        for n in [
            ".part-0-4.inprogress", // instance 0, before the checkpoint: kept
            ".part-0-6.inprogress", // instance 0, after: deleted
            ".part-1-6.inprogress", // instance 1 (still running): kept
            ".part-3-6.inprogress", // instance 3 (gone after a rescale to 2): deleted
            ".part-x-6.inprogress", // not a name this sink makes: kept
            "part-0-6",             // committed: kept
            "notes.txt",            // not the sink's: kept
        ] {
            std::fs::write(dir.join(n), "x").unwrap();
        }
        // A link with a sink name is never followed nor deleted.
        std::os::unix::fs::symlink(dir.join("notes.txt"), dir.join(".part-0-7.inprogress"))
            .unwrap();
        let mut s = FileSink::new(&dir, |x: &u32| x.to_string());
        s.recover(&ctx(0, 2, 5)).unwrap();
        assert_eq!(
            names(&dir),
            [
                ".part-0-4.inprogress",
                ".part-0-7.inprogress",
                ".part-1-6.inprogress",
                ".part-x-6.inprogress",
                "notes.txt",
                "part-0-6"
            ]
        );
    }

    #[test]
    fn a_transaction_naming_a_path_outside_the_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(tmp.path().join("victim"), "keep").unwrap();
        let evil = SinkTransaction {
            interval: 1,
            pending: PathBuf::from("../victim"),
            committed: PathBuf::from("part-0-1"),
        };
        let mut s = FileSink::<u32>::new(&dir, |x: &u32| x.to_string());
        s.recover(&ctx(0, 1, 1)).unwrap();
        let why = s.commit(&evil).unwrap_err().to_string();
        assert!(why.contains("outside the sink's directory"), "{why}");
        assert!(tmp.path().join("victim").exists());
        // Version 1 stored absolute paths: accepted only directly inside `dir`.
        std::fs::write(dir.join(".part-0-2.inprogress"), "2\n").unwrap();
        let legacy = SinkTransaction {
            interval: 2,
            pending: dir.join(".part-0-2.inprogress"),
            committed: dir.join("part-0-2"),
        };
        s.commit(&legacy).unwrap();
        assert!(dir.join("part-0-2").exists());
        let elsewhere = SinkTransaction {
            interval: 3,
            pending: tmp.path().join("victim"),
            committed: dir.join("part-0-3"),
        };
        assert!(s.commit(&elsewhere).is_err());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("victim")).unwrap(),
            "keep"
        );
    }
}

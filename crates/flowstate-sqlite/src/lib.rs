//! An exactly-once SQLite sink for Flowstate jobs ([`SqliteSink`]), built only on the
//! runtime's public [`TransactionalSink`] trait.
//!
//! **How it is exactly once.** Each sink instance keeps the records of a checkpoint
//! interval in memory. At the checkpoint's snapshot (pre-commit) it writes them, in
//! one SQLite transaction, into the staging table `_flowstate_staging` (durable, not
//! in the user's table). When the checkpoint completes (commit) one SQLite
//! transaction moves them into the user's table through the user's `INSERT`
//! statement, deletes them from staging and records `(sink, instance, interval)` in
//! `_flowstate_commits`. A commit finding its record there does nothing, so commits
//! repeated after a crash are idempotent, and an interval written again after the job
//! fell back past a completed checkpoint is not inserted twice. Recovery deletes the
//! staged rows a failed run wrote after the restored checkpoint.
//!
//! The database runs in WAL mode with `synchronous = FULL` (a committed transaction
//! survives power loss); instances on several workers share the file and wait up to
//! 60 s for each other's write locks.
//!
//! ```no_run
//! use flowstate_sqlite::SqliteSink;
//! use rusqlite::types::Value;
//!
//! let sink = SqliteSink::new(
//!     "/tmp/out.db",
//!     "counts",
//!     "CREATE TABLE IF NOT EXISTS counts (word TEXT NOT NULL, n INTEGER NOT NULL)",
//!     "INSERT INTO counts (word, n) VALUES (?1, ?2)",
//!     |(w, n): &(String, u64)| vec![Value::Text(w.clone()), Value::Integer(*n as i64)],
//! );
//! // stream.sink_to("counts", sink).uid("counts-db");
//! # let _ = sink;
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowstate_runtime::{BoxError, Data, SinkContext, TransactionalSink};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// What the sink fails with (boxed into the job's error, sources kept).
#[derive(Debug, thiserror::Error)]
pub enum SqliteSinkError {
    /// SQLite refused a statement.
    #[error("{what} in {path}: {source}")]
    Sqlite {
        /// What the sink was doing.
        what: &'static str,
        /// The database.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A record could not be staged or read back.
    #[error("{what}: {source}")]
    Encoding {
        /// What the sink was doing.
        what: &'static str,
        /// The encoding error.
        #[source]
        source: postcard::Error,
    },
    /// A pre-committed transaction is neither staged nor committed: the database lost
    /// records the checkpoint promised (restored from a backup, rows deleted by hand).
    #[error(
        "{path}: sink {sink} instance {instance} interval {interval} was pre-committed but \
         is neither staged nor committed; refusing to continue as if it were empty"
    )]
    Lost {
        /// The database.
        path: PathBuf,
        /// The sink's name.
        sink: String,
        /// The instance that wrote it.
        instance: u64,
        /// Its checkpoint interval.
        interval: u64,
    },
    /// Used before `recover` opened the database.
    #[error("the sink was used before it was opened")]
    NotOpen,
}

/// A pre-committed SQLite transaction: whose and which interval's staged rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqliteTransaction {
    /// The sink instance that staged the rows.
    pub instance: u64,
    /// Their checkpoint interval.
    pub interval: u64,
}

/// Parameters of the user's `INSERT` for one record.
type Bind<T> = Box<dyn Fn(&T) -> Vec<Value>>;

/// Writes records into a SQLite table exactly once (see the crate docs).
pub struct SqliteSink<T> {
    path: PathBuf,
    name: String,
    create: String,
    insert: String,
    bind: Bind<T>,
    conn: Option<Connection>,
    instance: u64,
    /// Encoded records per interval not yet pre-committed.
    buffered: BTreeMap<u64, Vec<Vec<u8>>>,
}

const BOOKKEEPING: &str = "
CREATE TABLE IF NOT EXISTS _flowstate_staging (
    sink TEXT NOT NULL, instance INTEGER NOT NULL, interval INTEGER NOT NULL,
    seq INTEGER NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (sink, instance, interval, seq));
CREATE TABLE IF NOT EXISTS _flowstate_commits (
    sink TEXT NOT NULL, instance INTEGER NOT NULL, interval INTEGER NOT NULL,
    PRIMARY KEY (sink, instance, interval));
";

impl<T> SqliteSink<T> {
    /// A sink into the database at `path` (created when missing). `name` tells this
    /// sink's bookkeeping apart from other sinks on the same database (keep it for
    /// the life of the job); `create` runs at start (e.g. `CREATE TABLE IF NOT
    /// EXISTS ...`); `insert` is run for every record with the parameters `bind`
    /// gives.
    pub fn new(
        path: impl AsRef<Path>,
        name: impl Into<String>,
        create: impl Into<String>,
        insert: impl Into<String>,
        bind: impl Fn(&T) -> Vec<Value> + 'static,
    ) -> Self {
        SqliteSink {
            path: path.as_ref().to_path_buf(),
            name: name.into(),
            create: create.into(),
            insert: insert.into(),
            bind: Box::new(bind),
            conn: None,
            instance: 0,
            buffered: BTreeMap::new(),
        }
    }

    fn sqlite(
        &self,
        what: &'static str,
    ) -> impl FnOnce(rusqlite::Error) -> SqliteSinkError + use<T> {
        let path = self.path.clone();
        move |source| SqliteSinkError::Sqlite { what, path, source }
    }

    fn open(&self) -> Result<Connection, SqliteSinkError> {
        let conn = Connection::open(&self.path).map_err(self.sqlite("opening"))?;
        conn.busy_timeout(Duration::from_secs(60))
            .map_err(self.sqlite("setting the busy timeout"))?;
        // Switching to WAL takes an exclusive lock that SQLite does not wait for:
        // instances opening the file at once retry.
        retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL"))
            .map_err(self.sqlite("setting WAL mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(self.sqlite("setting synchronous = FULL"))?;
        retry_busy(|| conn.execute_batch(BOOKKEEPING))
            .map_err(self.sqlite("creating the bookkeeping tables"))?;
        retry_busy(|| conn.execute_batch(&self.create))
            .map_err(self.sqlite("running the sink's create statement"))?;
        Ok(conn)
    }
}

/// Runs `f` until it does not fail with SQLite's "busy"/"locked", for up to 60 s.
fn retry_busy<R>(mut f: impl FnMut() -> rusqlite::Result<R>) -> rusqlite::Result<R> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

impl<T: Data> TransactionalSink<T> for SqliteSink<T> {
    type Transaction = SqliteTransaction;

    fn recover(&mut self, ctx: &SinkContext) -> Result<(), BoxError> {
        self.instance = ctx.index as u64;
        let conn = self.open()?;
        // Rows a failed run staged after the restored checkpoint: written again.
        let deleted = conn
            .execute(
                "DELETE FROM _flowstate_staging WHERE sink = ?1 AND interval > ?2 \
                 AND (instance = ?3 OR (?3 = 0 AND instance >= ?4))",
                params![
                    self.name,
                    ctx.restored as i64,
                    ctx.index as i64,
                    ctx.instances as i64
                ],
            )
            .map_err(self.sqlite("deleting a failed run's staged rows"))?;
        if deleted > 0 {
            tracing::info!(
                "sqlite sink {}: discarded {deleted} rows staged by a failed run",
                self.name
            );
        }
        self.conn = Some(conn);
        Ok(())
    }

    fn write(&mut self, interval: u64, record: &T) -> Result<(), BoxError> {
        let bytes = postcard::to_stdvec(record).map_err(|source| SqliteSinkError::Encoding {
            what: "staging a record",
            source,
        })?;
        self.buffered.entry(interval).or_default().push(bytes);
        Ok(())
    }

    fn pre_commit(&mut self, interval: u64) -> Result<Option<SqliteTransaction>, BoxError> {
        let Some(records) = self.buffered.remove(&interval) else {
            return Ok(None);
        };
        let (name, instance) = (self.name.clone(), self.instance);
        let err = self.sqlite("staging records");
        let conn = self.conn.as_mut().ok_or(SqliteSinkError::NotOpen)?;
        let staged = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO _flowstate_staging \
                     (sink, instance, interval, seq, record) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (seq, r) in records.iter().enumerate() {
                    insert.execute(params![
                        name,
                        instance as i64,
                        interval as i64,
                        seq as i64,
                        r
                    ])?;
                }
            }
            tx.commit()
        })();
        staged.map_err(err)?;
        Ok(Some(SqliteTransaction { instance, interval }))
    }

    fn commit(&mut self, t: &SqliteTransaction) -> Result<(), BoxError> {
        let err = self.sqlite("committing staged records");
        let conn = self.conn.as_mut().ok_or(SqliteSinkError::NotOpen)?;
        let result = commit_staged::<T>(conn, &self.name, &self.path, &self.insert, &self.bind, t);
        match result {
            Ok(()) => Ok(()),
            Err(Failure::Sqlite(e)) => Err(err(e).into()),
            Err(Failure::Other(e)) => Err(e.into()),
        }
    }
}

enum Failure {
    Sqlite(rusqlite::Error),
    Other(SqliteSinkError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sqlite(e)
    }
}

/// One SQLite transaction: nothing when the interval is recorded as committed;
/// otherwise the staged records through the user's insert, staging emptied, the
/// commit recorded.
fn commit_staged<T: Data>(
    conn: &mut Connection,
    name: &str,
    path: &Path,
    insert_sql: &str,
    bind: &Bind<T>,
    t: &SqliteTransaction,
) -> Result<(), Failure> {
    let (instance, interval) = (t.instance as i64, t.interval as i64);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let done: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM _flowstate_commits WHERE sink = ?1 AND instance = ?2 AND interval = ?3",
            params![name, instance, interval],
            |r| r.get(0),
        )
        .optional()?;
    if done.is_none() {
        let records: Vec<Vec<u8>> = {
            let mut q = tx.prepare_cached(
                "SELECT record FROM _flowstate_staging \
                 WHERE sink = ?1 AND instance = ?2 AND interval = ?3 ORDER BY seq",
            )?;
            q.query_map(params![name, instance, interval], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        if records.is_empty() {
            return Err(Failure::Other(SqliteSinkError::Lost {
                path: path.to_path_buf(),
                sink: name.to_string(),
                instance: t.instance,
                interval: t.interval,
            }));
        }
        {
            let mut insert = tx.prepare_cached(insert_sql)?;
            for bytes in &records {
                let record: T = postcard::from_bytes(bytes).map_err(|source| {
                    Failure::Other(SqliteSinkError::Encoding {
                        what: "reading a staged record",
                        source,
                    })
                })?;
                insert.execute(rusqlite::params_from_iter(bind(&record)))?;
            }
        }
        tx.execute(
            "INSERT INTO _flowstate_commits (sink, instance, interval) VALUES (?1, ?2, ?3)",
            params![name, instance, interval],
        )?;
    }
    tx.execute(
        "DELETE FROM _flowstate_staging WHERE sink = ?1 AND instance = ?2 AND interval = ?3",
        params![name, instance, interval],
    )?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sink(path: &Path) -> SqliteSink<(String, u64)> {
        SqliteSink::new(
            path,
            "t",
            "CREATE TABLE IF NOT EXISTS t (k TEXT NOT NULL, n INTEGER NOT NULL)",
            "INSERT INTO t (k, n) VALUES (?1, ?2)",
            |(k, n): &(String, u64)| vec![Value::Text(k.clone()), Value::Integer(*n as i64)],
        )
    }

    fn rows(path: &Path) -> Vec<(String, i64)> {
        let c = Connection::open(path).unwrap();
        let mut q = c.prepare("SELECT k, n FROM t ORDER BY k, n").unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
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
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("out.db");
        let mut s = sink(&db);
        s.recover(&ctx(0, 1, 0)).unwrap();
        s.write(1, &("a".into(), 1)).unwrap();
        s.write(1, &("b".into(), 2)).unwrap();
        let t = s.pre_commit(1).unwrap().unwrap();
        assert_eq!(s.pre_commit(2).unwrap(), None);
        assert!(rows(&db).is_empty());
        s.commit(&t).unwrap();
        s.commit(&t).unwrap();
        // Another instance (a restarted job) commits the same handle: still once.
        let mut again = sink(&db);
        again.recover(&ctx(0, 1, 1)).unwrap();
        again.commit(&t).unwrap();
        assert_eq!(rows(&db), vec![("a".into(), 1), ("b".into(), 2)]);
    }

    #[test]
    fn recovery_discards_what_a_failed_run_staged_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("out.db");
        let mut s = sink(&db);
        s.recover(&ctx(1, 3, 0)).unwrap();
        s.write(4, &("kept".into(), 4)).unwrap();
        s.write(5, &("lost".into(), 5)).unwrap();
        let kept = s.pre_commit(4).unwrap().unwrap();
        let lost = s.pre_commit(5).unwrap().unwrap();
        // The job restarts from checkpoint 4 with one instance: instance 0 recovers
        // what instance 1 (gone) staged after 4, and commits checkpoint 4's handle.
        let mut r = sink(&db);
        r.recover(&ctx(0, 1, 4)).unwrap();
        r.commit(&kept).unwrap();
        assert_eq!(rows(&db), vec![("kept".into(), 4)]);
        let why = r.commit(&lost).unwrap_err().to_string();
        assert!(why.contains("neither staged nor committed"), "{why}");
    }
}

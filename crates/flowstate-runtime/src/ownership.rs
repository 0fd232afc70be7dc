//! What a job owns, proven before anything is deleted, renamed or overwritten.
//!
//! A job may destroy only what it provably wrote. Three kinds of place are its own:
//!
//! - **The checkpoint directory**, claimed by [`claim_checkpoint_dir`]: a new or empty
//!   directory, or one holding only Flowstate's layout (`chk-<id>/`, `shared/`,
//!   `savepoints/`, `taskowned/` and the root files below), gets the marker
//!   [`CHECKPOINT_DIR_MARKER`]. A directory holding anything else without that marker
//!   (the current directory, a home directory, `/`) is refused with the names of what
//!   is there. Entries of the layout that are symbolic links are refused too. While
//!   the job runs it holds an exclusive lock ([`LOCK_FILE`], `flock`) naming its
//!   holder, so a second job on the same directory fails at start with that name.
//!   An object-store prefix (`s3://bucket/prefix`) is claimed the same way
//!   ([`adopt_checkpoint_storage`]: the marker written with a conditional put), but
//!   it has no lock: as with Flink, one prefix per job is the operator's to keep.
//! - **Paths inside it**: [`is_layout_path`] accepts only relative paths of the
//!   layout, without `.`/`..` components or empty segments; every delete the
//!   checkpoint code does passes through it, so a path taken from restored metadata
//!   or a manifest can never reach outside (the storage layer adds that no component
//!   of a deleted local path is a symbolic link).
//! - **Local working directories** ([`WorkingDir::claim`], RocksDB's files): created
//!   by Flowstate with the marker [`WORKING_DIR_MARKER`] and locked while used. A
//!   directory with the marker is emptied at start (what a crashed run left is
//!   scratch); one without it is used only when empty; `.`, `..`, `/`, the current
//!   directory and its ancestors are refused by name.
//!
//! Directories Flowstate creates are owner-only (`0700`): state may be sensitive.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Component, Path, PathBuf};

use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::CheckpointLocation;

/// The marker file of a checkpoint directory Flowstate created or adopted.
pub const CHECKPOINT_DIR_MARKER: &str = "_flowstate";
/// The lock file of a checkpoint directory (held by the running job's leader).
pub const LOCK_FILE: &str = "_lock";
/// The marker (and lock) file of a local working directory.
pub const WORKING_DIR_MARKER: &str = ".flowstate-working-dir";

/// Why a directory is not the job's to use.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// `.`, `..`, `/`, the current directory or one of its ancestors.
    #[error(
        "{path}: refusing to use {why} as a {what}; name a directory of its own \
         (e.g. a new subdirectory)"
    )]
    SpecialPath {
        /// The path as given.
        path: PathBuf,
        /// What it is (`the root directory`, `the current directory`, ...).
        why: &'static str,
        /// What it was to be used as.
        what: &'static str,
    },
    /// A non-empty directory that Flowstate did not create.
    #[error(
        "{path}: refusing to use it as a {what}: it holds files Flowstate did not write ({}); \
         choose a new or empty directory",
        entries.join(", ")
    )]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// What it was to be used as.
        what: &'static str,
        /// Some of the foreign entries' names.
        entries: Vec<String>,
    },
    /// A symbolic link where the job would write or delete.
    #[error("{path} is a symbolic link: Flowstate never writes or deletes through links")]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// Not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Another job holds the directory.
    #[error("{path} is in use by another job ({holder}); stop it first")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote about itself (process id, host, start, command).
        holder: String,
    },
    /// Checkpoint storage could not be read or marked.
    #[error("checkpoint directory {location}: {source}")]
    Storage {
        /// The location.
        location: String,
        /// The cause.
        #[source]
        source: flowstate_core::StorageError,
    },
    /// A file system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> OwnershipError + 'p {
    move |source| OwnershipError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `name` is an entry Flowstate's checkpoint layout puts at the root of a
/// checkpoint directory.
pub fn is_layout_root_entry(name: &str) -> bool {
    matches!(
        name,
        CHECKPOINT_DIR_MARKER
            | LOCK_FILE
            | crate::checkpoint::SAVEPOINT_REQUEST
            | flowstate_core::checkpoint_history::HISTORY_FILE
            | "shared"
            | "savepoints"
            | "taskowned"
    ) || chk_id(name).is_some()
}

use flowstate_core::checkpoint_metadata::chk_id;
pub use flowstate_core::checkpoint_metadata::is_layout_path;

/// Whether `path` stays below the directory it is relative to: relative, and
/// without `..`, root or prefix components. Paths restored from snapshots (sink
/// transactions, source positions) must pass this before they are joined to a
/// configured directory.
///
/// ```
/// use flowstate_runtime::ownership::stays_inside;
/// assert!(stays_inside(".part-0-3.inprogress"));
/// assert!(stays_inside("in/words.txt"));
/// assert!(!stays_inside("../x"));
/// assert!(!stays_inside("/etc/passwd"));
/// assert!(!stays_inside(""));
/// ```
pub fn stays_inside(path: impl AsRef<Path>) -> bool {
    let p = path.as_ref();
    !p.as_os_str().is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Refuses `.`, `..`, `/` and what resolves to the current directory, one of its
/// ancestors, or the home directory.
fn refuse_special(path: &Path, what: &'static str) -> Result<(), OwnershipError> {
    let special = |why| {
        Err(OwnershipError::SpecialPath {
            path: path.to_path_buf(),
            why,
            what,
        })
    };
    if path.as_os_str().is_empty() {
        return special("an empty path");
    }
    let Ok(canonical) = path.canonicalize() else {
        // Does not exist yet: a new directory is never special (its parents are
        // resolved again once created).
        return Ok(());
    };
    if canonical.parent().is_none() {
        return special("the root directory");
    }
    if let Ok(cwd) = std::env::current_dir().and_then(|d| d.canonicalize())
        && cwd.starts_with(&canonical)
    {
        return special(if cwd == canonical {
            "the current directory"
        } else {
            "an ancestor of the current directory"
        });
    }
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from)
        && home.canonicalize().is_ok_and(|h| h.starts_with(&canonical))
    {
        return special("the home directory or an ancestor of it");
    }
    Ok(())
}

/// Creates `dir` and missing parents; the directories created are owner-only.
fn create_private_dir_all(dir: &Path) -> Result<(), OwnershipError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create directory", dir))
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Result<Vec<String>, OwnershipError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io("list", dir))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(io("list", dir))?;
    names.sort();
    Ok(names)
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Writes a marker file (owner-only) unless it exists.
fn write_marker(path: &Path, text: &str) -> Result<(), OwnershipError> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => f.write_all(text.as_bytes()).map_err(io("write", path)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("create", path)(e)),
    }
}

/// An exclusive lock on a file (`flock`), held until dropped (or the process dies:
/// the kernel releases it, so a SIGKILLed job never leaves a stale lock).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock on `path` (created owner-only if missing) and writes who holds
    /// it; fails with [`OwnershipError::Locked`] naming the holder when another process
    /// (or another job of this one) has it.
    pub fn acquire(path: &Path) -> Result<Self, OwnershipError> {
        use std::os::unix::fs::OpenOptionsExt;
        if is_symlink(path) {
            return Err(OwnershipError::Symlink {
                path: path.to_path_buf(),
            });
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io("open", path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(OwnershipError::Locked {
                    path: path.to_path_buf(),
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", path)(e)),
        }
        let text = holder_text();
        file.set_len(0).map_err(io("write", path))?;
        file.rewind().map_err(io("write", path))?;
        file.write_all(text.as_bytes()).map_err(io("write", path))?;
        Ok(DirLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    /// Whether some process holds the lock on `path` now (e.g. whether a job runs on
    /// a checkpoint directory); `Some(holder)` when it does.
    pub fn holder(path: &Path) -> Option<String> {
        let mut file = OpenOptions::new().read(true).open(path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                Some(holder.trim().to_string())
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `pid <pid> on <host> since <unix ms>: <command line>`.
fn holder_text() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into());
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let command: Vec<String> = std::env::args().collect();
    format!(
        "pid {} on {host} since {since} (unix ms): {}\n",
        std::process::id(),
        command.join(" ")
    )
}

/// Claims `dir` as a job's checkpoint directory (see the module docs): creates it
/// owner-only when missing, refuses foreign contents and links in the layout, marks
/// it. Returns the entries not in the layout of a marked directory (left untouched).
pub fn adopt_checkpoint_dir(dir: &Path) -> Result<Vec<String>, OwnershipError> {
    const WHAT: &str = "checkpoint directory";
    refuse_special(dir, WHAT)?;
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_private_dir_all(dir)?,
        Err(e) => return Err(io("inspect", dir)(e)),
        Ok(m) if !m.is_dir() => {
            return Err(OwnershipError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        Ok(_) => {}
    }
    let names = entries(dir)?;
    let marked = names.iter().any(|n| n == CHECKPOINT_DIR_MARKER);
    let mut foreign = Vec::new();
    for name in &names {
        if is_layout_root_entry(name) {
            if is_symlink(&dir.join(name)) {
                return Err(OwnershipError::Symlink {
                    path: dir.join(name),
                });
            }
        } else {
            foreign.push(name.clone());
        }
    }
    if !marked && !foreign.is_empty() {
        foreign.truncate(5);
        return Err(OwnershipError::Foreign {
            path: dir.to_path_buf(),
            what: WHAT,
            entries: foreign,
        });
    }
    write_marker(
        &dir.join(CHECKPOINT_DIR_MARKER),
        "Flowstate checkpoint directory: the job deletes only files of its layout here\n",
    )?;
    Ok(foreign)
}

/// Claims the object-store checkpoint directory `location` behind `storage` as
/// [`adopt_checkpoint_dir`] claims a local one: refuses a prefix holding objects
/// outside the layout unless it has the marker, and writes the marker (a conditional
/// put: never replacing one). Returns the foreign root entries of a marked prefix.
pub fn adopt_checkpoint_storage(
    storage: &dyn CheckpointStorage,
    location: &str,
) -> Result<Vec<String>, OwnershipError> {
    let failed = |source| OwnershipError::Storage {
        location: location.to_string(),
        source,
    };
    let mut names: Vec<String> = storage
        .list("")
        .map_err(failed)?
        .iter()
        .map(|p| p.split('/').next().unwrap_or_default().to_string())
        .collect();
    names.dedup();
    let marked = names.iter().any(|n| n == CHECKPOINT_DIR_MARKER);
    let mut foreign: Vec<String> = names
        .into_iter()
        .filter(|n| !is_layout_root_entry(n))
        .collect();
    if !marked && !foreign.is_empty() {
        foreign.truncate(5);
        return Err(OwnershipError::Foreign {
            path: PathBuf::from(location),
            what: "checkpoint directory",
            entries: foreign,
        });
    }
    storage
        .put_if_absent(
            CHECKPOINT_DIR_MARKER,
            bytes::Bytes::from_static(
                b"Flowstate checkpoint directory: the job deletes only objects of its layout here\n",
            ),
        )
        .map_err(failed)?;
    Ok(foreign)
}

/// Claims `dir` as the checkpoint directory of the job about to run and locks it
/// (the lock is held until the returned value drops).
pub fn claim_checkpoint_dir(dir: &Path) -> Result<DirLock, OwnershipError> {
    let foreign = adopt_checkpoint_dir(dir)?;
    if !foreign.is_empty() {
        tracing::warn!(
            "{}: not Flowstate's, left untouched: {}",
            dir.display(),
            foreign.join(", ")
        );
    }
    DirLock::acquire(&dir.join(LOCK_FILE))
}

/// A local working directory owned by the job for as long as this value lives.
#[derive(Debug)]
pub struct WorkingDir {
    lock: DirLock,
    path: PathBuf,
}

impl WorkingDir {
    /// Claims `path` (see the module docs): creates it owner-only with the marker, or
    /// takes a marked one and empties it of a crashed run's leftovers, or takes an
    /// empty one; refuses anything else. Locked until dropped.
    pub fn claim(path: &Path) -> Result<Self, OwnershipError> {
        const WHAT: &str = "local working directory";
        // `.`, `..` and `/` resolve to the current directory, an ancestor of it and
        // the root: all refused here.
        refuse_special(path, WHAT)?;
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_private_dir_all(path)?,
            Err(e) => return Err(io("inspect", path)(e)),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(OwnershipError::Symlink {
                    path: path.to_path_buf(),
                });
            }
            Ok(m) if !m.is_dir() => {
                return Err(OwnershipError::NotADirectory {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => {}
        }
        let marker = path.join(WORKING_DIR_MARKER);
        let names = entries(path)?;
        let marked = names.iter().any(|n| n == WORKING_DIR_MARKER);
        if !marked && !names.is_empty() {
            let mut shown = names;
            shown.truncate(5);
            return Err(OwnershipError::Foreign {
                path: path.to_path_buf(),
                what: WHAT,
                entries: shown,
            });
        }
        write_marker(
            &marker,
            "Flowstate local working directory: emptied by the job at every start\n",
        )?;
        let lock = DirLock::acquire(&marker)?;
        // Ours and locked: what is left is a crashed run's scratch.
        for name in entries(path)? {
            if name == WORKING_DIR_MARKER {
                continue;
            }
            let p = path.join(&name);
            let removed = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                Ok(_) => std::fs::remove_file(&p),
                Err(e) => Err(e),
            };
            removed.map_err(io("remove leftover", &p))?;
        }
        Ok(WorkingDir {
            lock,
            path: path.to_path_buf(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock held on it.
    pub fn lock(&self) -> &DirLock {
        &self.lock
    }
}

/// The directories a starting job holds for as long as it runs.
#[derive(Debug)]
pub struct JobDirs {
    /// The checkpoint directory's lock (its leader process only).
    pub checkpoint_lock: Option<DirLock>,
    /// RocksDB's working directory, when the job uses RocksDB.
    pub working_dir: Option<WorkingDir>,
}

impl JobDirs {
    /// Claims the checkpoint directory (`leader`: and locks it when local, and drops
    /// a savepoint request left from before this run: only a running job may be
    /// asked) and then the working directory, so nothing is created before the
    /// checkpoint directory has been found to be the job's.
    pub fn claim(
        checkpoints: Option<&crate::CheckpointConfig>,
        leader: bool,
        working_dir: Option<&Path>,
    ) -> Result<Self, OwnershipError> {
        use crate::checkpoint::SAVEPOINT_REQUEST;
        let stale_request =
            || tracing::warn!("ignored a savepoint request left from before this run");
        let location = checkpoints.and_then(|c| c.location.as_ref().map(|l| (c, l)));
        let checkpoint_lock = match location {
            Some((_, CheckpointLocation::Local(dir))) if leader => {
                let lock = claim_checkpoint_dir(dir)?;
                if std::fs::remove_file(dir.join(SAVEPOINT_REQUEST)).is_ok() {
                    stale_request();
                }
                Some(lock)
            }
            Some((_, CheckpointLocation::Local(dir))) => {
                adopt_checkpoint_dir(dir)?;
                None
            }
            Some((c, remote)) => {
                let shown = remote.to_string();
                let foreign = adopt_checkpoint_storage(c.storage.as_ref(), &shown)?;
                if leader {
                    if !foreign.is_empty() {
                        tracing::warn!(
                            "{shown}: not Flowstate's, left untouched: {}",
                            foreign.join(", ")
                        );
                    }
                    if c.storage.size(SAVEPOINT_REQUEST).is_ok() {
                        c.storage.delete(SAVEPOINT_REQUEST).map_err(|source| {
                            OwnershipError::Storage {
                                location: shown,
                                source,
                            }
                        })?;
                        stale_request();
                    }
                }
                None
            }
            None => None,
        };
        let working_dir = working_dir.map(WorkingDir::claim).transpose()?;
        Ok(JobDirs {
            checkpoint_lock,
            working_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths() {
        for ok in [
            "chk-1/_metadata",
            "chk-12/keyed-2-0.kgs",
            "shared/s-000001.sst",
            "savepoints/sp-3/_metadata",
            "savepoints/sp-3/sst/x.sst",
            "taskowned/x",
        ] {
            assert!(is_layout_path(ok), "{ok}");
        }
        for bad in [
            "",
            "chk-1",
            "chk-/x",
            "chk-1a/x",
            "chk-1//x",
            "chk-1/./x",
            "chk-1/../x",
            "shared/../../x",
            "savepoints/x/_metadata",
            "savepoints/sp-1",
            "/chk-1/x",
            "out/part-0-1",
            "shared\\x",
            "chk-1/\0",
        ] {
            assert!(!is_layout_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn working_dir_refuses_foreign_and_wipes_own() {
        let base = tempfile::tempdir().unwrap();
        let foreign = base.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("keep.txt"), b"x").unwrap();
        let e = WorkingDir::claim(&foreign).unwrap_err();
        assert!(matches!(e, OwnershipError::Foreign { .. }), "{e}");
        assert!(foreign.join("keep.txt").exists());

        let own = base.path().join("own");
        let w = WorkingDir::claim(&own).unwrap();
        std::fs::write(own.join("db-1"), b"scratch").unwrap();
        let again = WorkingDir::claim(&own).unwrap_err();
        assert!(matches!(again, OwnershipError::Locked { .. }), "{again}");
        drop(w);
        let _w = WorkingDir::claim(&own).unwrap();
        assert!(!own.join("db-1").exists());
        assert!(own.join(WORKING_DIR_MARKER).exists());
    }

    #[test]
    fn special_paths_refused() {
        for p in [".", "..", "/"] {
            assert!(WorkingDir::claim(Path::new(p)).is_err(), "{p}");
        }
        assert!(claim_checkpoint_dir(Path::new("/")).is_err());
    }

    #[test]
    fn checkpoint_dir_symlinked_entry_refused() {
        let base = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let dir = base.path().join("ck");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(other.path(), dir.join("chk-99")).unwrap();
        let e = claim_checkpoint_dir(&dir).unwrap_err();
        assert!(matches!(e, OwnershipError::Symlink { .. }), "{e}");
    }
}

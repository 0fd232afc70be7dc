//! Checkpoint storage on the `object_store` crate.
//!
//! [`ObjectCheckpointStorage`] implements [`CheckpointStorage`] for any
//! [`ObjectStore`]: a local directory ([`ObjectCheckpointStorage::local`], the default)
//! and, through the same type, S3-compatible stores ([`ObjectCheckpointStorage::s3`])
//! for jobs that span machines. [`CheckpointLocation`] is what the user names
//! (`/path` or `s3://bucket/prefix`). Writes are atomic: `object_store`'s local store
//! writes a temporary file and renames it, and object stores publish an object only
//! when its put completes, so a crash mid-write never leaves a partial file under the
//! final name. Local writes are fsynced. Objects past 8 MiB are written as multipart
//! uploads; [`CheckpointStorage::put_if_absent`] is a conditional write
//! (`If-None-Match: *` on S3) where the store supports it.
//!
//! `object_store` is async; this crate owns a small Tokio runtime and blocks on it, so
//! callers (snapshot threads, restores) need no executor of their own and may call it
//! from inside another runtime's context without nesting runtimes. Every call has a
//! timeout ([`ObjectCheckpointStorage::with_timeout`], default
//! [`DEFAULT_TIMEOUT`]): a hung disk or network fails the call
//! ([`StorageError::TimedOut`]), so the checkpoint fails instead of the job hanging.
//!
//! **Never through a link.** On a local directory, `put`, `create` and `delete` refuse
//! a path any component of which is a symbolic link
//! ([`StorageError::InvalidPath`]): a link planted in a checkpoint directory can
//! never make the job overwrite or delete files elsewhere.
//!
//! ```
//! use flowstate_core::storage::CheckpointStorage;
//! let dir = tempfile::tempdir().unwrap();
//! let storage = flowstate_storage::ObjectCheckpointStorage::local(dir.path()).unwrap();
//! storage.put("chk-1/a", bytes::Bytes::from_static(b"hello")).unwrap();
//! assert_eq!(&storage.get_range("chk-1/a", 1..3).unwrap()[..], b"el");
//! ```

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flowstate_core::StorageError;
use flowstate_core::storage::{CheckpointStorage, StorageWrite};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutPayload};

mod faults;
mod local_recovery;
mod location;
mod retry;
pub use faults::{FaultPlan, FaultyStorage};
pub use local_recovery::{LOCAL_RECOVERY_MARKER, LocalRecovery};
pub use location::{CheckpointLocation, LocationError, S3Settings};
pub mod s3_test_server;
pub use retry::RetryingReads;

/// Part size of streamed writes (object stores want parts of at least 5 MiB).
const PART_BYTES: usize = 8 << 20;

/// Time a single storage call may take before it fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The storage's own runtime. Dropping a runtime waits for its threads, which Tokio
/// forbids inside another runtime's async context (a query server dropping the last
/// reader of a checkpoint, say): there it is shut down in the background instead.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            rt.shutdown_background();
        }
    }
}

/// Checkpoint storage over an [`ObjectStore`].
pub struct ObjectCheckpointStorage {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Handle,
    _owned: OwnedRuntime,
    description: String,
    /// The local directory behind the store, when local (for the link checks).
    root: Option<PathBuf>,
    timeout: Duration,
}

impl fmt::Debug for ObjectCheckpointStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectCheckpointStorage({})", self.description)
    }
}

impl ObjectCheckpointStorage {
    /// Storage in a local directory, created (owner-only) if missing.
    pub fn local(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = dir.as_ref();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StorageError::Io {
                op: "create directory",
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
        Self::open_local(dir)
    }

    /// Storage in an existing local directory (never creates it: for readers such
    /// as `flowstate checkpoints`).
    pub fn existing_local(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(StorageError::NotFound {
                path: dir.display().to_string(),
            });
        }
        Self::open_local(dir)
    }

    fn open_local(dir: &Path) -> Result<Self, StorageError> {
        let shown = dir.display().to_string();
        // fsync: a complete checkpoint must survive power loss, not only a crash.
        // Automatic cleanup: deleting a directory's last object removes the directory,
        // so retention leaves no empty `chk-<id>/` behind.
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| StorageError::Io {
                op: "open directory",
                path: shown.clone(),
                message: e.to_string(),
            })?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        let mut storage = Self::new(Arc::new(fs), format!("local:{shown}"))?;
        storage.root = Some(dir.to_path_buf());
        Ok(storage)
    }

    /// Storage under `prefix` in the S3-compatible `bucket`, reached as `s3` says
    /// (usually [`S3Settings::from_env`]). An endpoint named with `http://` is used
    /// over plain HTTP (a store on the same host or network); any other needs TLS.
    /// Requests are path-style. Nothing is contacted here: a wrong endpoint or
    /// credential fails the first call.
    pub fn s3(bucket: &str, prefix: &str, s3: &S3Settings) -> Result<Self, StorageError> {
        let shown = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&s3.region);
        if let Some(endpoint) = &s3.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some((id, secret)) = &s3.credentials {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|e| StorageError::Io {
            op: "configure S3",
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(store)
        } else {
            Arc::new(PrefixStore::new(store, prefix))
        };
        Self::new(store, shown)
    }

    /// Sets the time one storage call may take (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Refuses a local path with a symbolic link among its components (below the
    /// root): writing or deleting through it would reach outside the directory.
    fn check_no_link(&self, path: &str) -> Result<(), StorageError> {
        let Some(root) = &self.root else {
            return Ok(());
        };
        let mut at = root.clone();
        for segment in path.split('/') {
            at.push(segment);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(StorageError::InvalidPath {
                        path: path.into(),
                        reason: format!("{} is a symbolic link", at.display()),
                    });
                }
                Ok(_) => {}
                // Missing from here on: nothing below can be a link.
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Storage over any object store (S3-compatible, in-memory, ...).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        description: impl Into<String>,
    ) -> Result<Self, StorageError> {
        let description = description.into();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flowstate-storage")
            .enable_all()
            .build()
            .map_err(|e| StorageError::Io {
                op: "start runtime",
                path: description.clone(),
                message: e.to_string(),
            })?;
        Ok(ObjectCheckpointStorage {
            store,
            runtime: runtime.handle().clone(),
            _owned: OwnedRuntime(Some(runtime)),
            description,
            root: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Runs `fut` on the storage runtime and waits for it, at most the timeout.
    /// Spawning (rather than `block_on`) works from any thread, including one inside
    /// another Tokio runtime.
    fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        path: &str,
        fut: impl Future<Output = Result<T, StorageError>> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        let timed_out = StorageError::TimedOut {
            op,
            path: path.to_string(),
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        self.runtime.spawn(async move {
            let r = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(timed_out),
            };
            let _ = tx.send(r);
        });
        rx.recv().map_err(|_| StorageError::Io {
            op: "await",
            path: self.description.clone(),
            message: "storage task ended without a result".into(),
        })?
    }
}

fn object_path(path: &str) -> Result<ObjectPath, StorageError> {
    if path.is_empty() {
        return Err(StorageError::InvalidPath {
            path: path.into(),
            reason: "empty".into(),
        });
    }
    ObjectPath::parse(path).map_err(|e| StorageError::InvalidPath {
        path: path.into(),
        reason: e.to_string(),
    })
}

fn map_err(op: &'static str, path: &str, e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound { path: path.into() },
        other => StorageError::Io {
            op,
            path: path.into(),
            message: other.to_string(),
        },
    }
}

impl CheckpointStorage for ObjectCheckpointStorage {
    fn put(&self, path: &str, data: Bytes) -> Result<(), StorageError> {
        self.check_no_link(path)?;
        let (p, store, owned) = (object_path(path)?, self.store.clone(), path.to_string());
        self.run("put", path, async move {
            store
                .put(&p, PutPayload::from_bytes(data))
                .await
                .map(|_| ())
                .map_err(|e| map_err("put", &owned, e))
        })
    }

    fn put_if_absent(&self, path: &str, data: Bytes) -> Result<bool, StorageError> {
        self.check_no_link(path)?;
        let (p, store, owned) = (object_path(path)?, self.store.clone(), path.to_string());
        let payload = PutPayload::from_bytes(data.clone());
        let written = self.run("put if absent", path, async move {
            match store.put_opts(&p, payload, PutMode::Create.into()).await {
                Ok(_) => Ok(Some(true)),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => Ok(Some(false)),
                // A store without conditional writes: check, then write (racy, but
                // the best such a store allows).
                Err(object_store::Error::NotImplemented { .. }) => Ok(None),
                Err(e) => Err(map_err("put if absent", &owned, e)),
            }
        })?;
        match written {
            Some(w) => Ok(w),
            None => match self.size(path) {
                Ok(_) => Ok(false),
                Err(StorageError::NotFound { .. }) => self.put(path, data).map(|()| true),
                Err(e) => Err(e),
            },
        }
    }

    fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        let (p, store, owned) = (object_path(path)?, self.store.clone(), path.to_string());
        self.run("get", path, async move {
            let r = store.get(&p).await.map_err(|e| map_err("get", &owned, e))?;
            r.bytes().await.map_err(|e| map_err("get", &owned, e))
        })
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        if range.end < range.start {
            return Err(StorageError::OutOfRange {
                path: path.into(),
                start: range.start,
                end: range.end,
                size: 0,
            });
        }
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let size = self.size(path)?;
        if range.end > size {
            return Err(StorageError::OutOfRange {
                path: path.into(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        let (p, store, owned) = (object_path(path)?, self.store.clone(), path.to_string());
        self.run("get range", path, async move {
            store
                .get_range(&p, range)
                .await
                .map_err(|e| map_err("get range", &owned, e))
        })
    }

    fn size(&self, path: &str) -> Result<u64, StorageError> {
        let (p, store, owned) = (object_path(path)?, self.store.clone(), path.to_string());
        self.run("head", path, async move {
            store
                .head(&p)
                .await
                .map(|m| m.size)
                .map_err(|e| map_err("head", &owned, e))
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let p = if prefix.is_empty() {
            None
        } else {
            Some(object_path(prefix)?)
        };
        let (store, owned) = (self.store.clone(), prefix.to_string());
        self.run("list", prefix, async move {
            use futures_util::TryStreamExt;
            let metas: Vec<_> = store
                .list(p.as_ref())
                .try_collect()
                .await
                .map_err(|e| map_err("list", &owned, e))?;
            let mut out: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
            out.sort();
            Ok(out)
        })
    }

    fn create(&self, path: &str) -> Result<Box<dyn StorageWrite + '_>, StorageError> {
        self.check_no_link(path)?;
        Ok(Box::new(ObjectWrite {
            storage: self,
            location: object_path(path)?,
            path: path.to_string(),
            upload: None,
            buf: Vec::new(),
            size: 0,
        }))
    }

    fn delete(&self, path: &str) -> Result<(), StorageError> {
        self.check_no_link(path)?;
        let (p, store, owned) = (object_path(path)?, self.store.clone(), path.to_string());
        self.run("delete", path, async move {
            match store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(map_err("delete", &owned, e)),
            }
        })
    }
}

/// A streamed write: small objects are one atomic put; larger ones a multipart upload
/// (on the local file system a staging file renamed into place on completion).
struct ObjectWrite<'s> {
    storage: &'s ObjectCheckpointStorage,
    location: ObjectPath,
    path: String,
    upload: Option<Box<dyn MultipartUpload>>,
    buf: Vec<u8>,
    size: u64,
}

impl ObjectWrite<'_> {
    fn flush_part(&mut self) -> Result<(), StorageError> {
        if self.upload.is_none() {
            let (store, location, path) = (
                self.storage.store.clone(),
                self.location.clone(),
                self.path.clone(),
            );
            let upload = self.storage.run("start upload", &self.path, async move {
                store
                    .put_multipart(&location)
                    .await
                    .map_err(|e| map_err("start upload", &path, e))
            })?;
            self.upload = Some(upload);
        }
        let data = PutPayload::from(std::mem::take(&mut self.buf));
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        let part = upload.put_part(data);
        let path = self.path.clone();
        self.storage.run("upload part", &self.path, async move {
            part.await.map_err(|e| map_err("upload part", &path, e))
        })
    }
}

impl StorageWrite for ObjectWrite<'_> {
    fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.buf.extend_from_slice(data);
        self.size += data.len() as u64;
        if self.buf.len() >= PART_BYTES {
            self.flush_part()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        if self.upload.is_none() {
            let data = Bytes::from(std::mem::take(&mut self.buf));
            self.storage.put(&self.path, data)?;
            return Ok(self.size);
        }
        if !self.buf.is_empty() {
            self.flush_part()?;
        }
        if let Some(mut upload) = self.upload.take() {
            let path = self.path.clone();
            self.storage
                .run("complete upload", &self.path, async move {
                    upload
                        .complete()
                        .await
                        .map(|_| ())
                        .map_err(|e| map_err("complete upload", &path, e))
                })?;
        }
        Ok(self.size)
    }
}

impl Drop for ObjectWrite<'_> {
    fn drop(&mut self) {
        // Unfinished: discard the parts (nothing was published under the path).
        if let Some(mut upload) = self.upload.take() {
            self.storage.runtime.spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}

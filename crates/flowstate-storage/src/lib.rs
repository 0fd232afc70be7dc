//! Checkpoint storage on the `object_store` crate.
//!
//! [`ObjectCheckpointStorage`] implements [`CheckpointStorage`] for any
//! [`ObjectStore`]: a local directory ([`ObjectCheckpointStorage::local`], the default)
//! and, through the same type, S3-compatible stores for multi-machine jobs. Writes are
//! atomic: `object_store`'s local store writes a temporary file and renames it, and
//! object stores publish an object only when its put completes, so a crash mid-write
//! never leaves a partial file under the final name. Local writes are fsynced.
//!
//! `object_store` is async; this crate owns a small Tokio runtime and blocks on it, so
//! callers (snapshot threads, restores) need no executor of their own and may call it
//! from inside another runtime's context without nesting runtimes.
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
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use flowstate_core::StorageError;
use flowstate_core::storage::{CheckpointStorage, StorageWrite};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};

/// Part size of streamed writes (object stores want parts of at least 5 MiB).
const PART_BYTES: usize = 8 << 20;

/// Checkpoint storage over an [`ObjectStore`].
pub struct ObjectCheckpointStorage {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    description: String,
}

impl fmt::Debug for ObjectCheckpointStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectCheckpointStorage({})", self.description)
    }
}

impl ObjectCheckpointStorage {
    /// Storage in a local directory, created if missing.
    pub fn local(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        let shown = dir.display().to_string();
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Io {
            op: "create directory",
            path: shown.clone(),
            message: e.to_string(),
        })?;
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
        Self::new(Arc::new(fs), format!("local:{shown}"))
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
            runtime,
            description,
        })
    }

    /// Runs `fut` on the storage runtime and waits for it. Spawning (rather than
    /// `block_on`) works from any thread, including one inside another Tokio runtime.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StorageError>> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
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
        let (p, store, owned) = (object_path(path)?, self.store.clone(), path.to_string());
        self.run(async move {
            store
                .put(&p, PutPayload::from_bytes(data))
                .await
                .map(|_| ())
                .map_err(|e| map_err("put", &owned, e))
        })
    }

    fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        let (p, store, owned) = (object_path(path)?, self.store.clone(), path.to_string());
        self.run(async move {
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
        self.run(async move {
            store
                .get_range(&p, range)
                .await
                .map_err(|e| map_err("get range", &owned, e))
        })
    }

    fn size(&self, path: &str) -> Result<u64, StorageError> {
        let (p, store, owned) = (object_path(path)?, self.store.clone(), path.to_string());
        self.run(async move {
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
        self.run(async move {
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
        let (p, store, owned) = (object_path(path)?, self.store.clone(), path.to_string());
        self.run(async move {
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
            let upload = self.storage.run(async move {
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
        self.storage
            .run(async move { part.await.map_err(|e| map_err("upload part", &path, e)) })
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
            self.storage.run(async move {
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

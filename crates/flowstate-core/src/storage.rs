//! The checkpoint-storage interface: where snapshot files go.
//!
//! Paths are `/`-separated relative object names (`chk-7/op-1/keyed-0.kgs`); nothing
//! here assumes a local file system. Writes are atomic: a reader sees the whole
//! object or none of it. The implementation on the `object_store` crate (local
//! directory and S3-compatible stores) lives in `flowstate-storage`.
//!
//! The interface is blocking on purpose: snapshots are written from the asynchronous
//! snapshot thread and restores run before processing starts, neither on an async
//! executor.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;

use crate::error::StorageError;

/// An object being written piece by piece. It appears under its path, whole, only when
/// [`StorageWrite::finish`] succeeds; dropped unfinished, nothing appears. Lets
/// snapshots of state larger than memory be written without holding them in memory.
pub trait StorageWrite: Send {
    /// Appends bytes.
    fn write(&mut self, data: &[u8]) -> Result<(), StorageError>;
    /// Publishes the object and returns its size.
    fn finish(self: Box<Self>) -> Result<u64, StorageError>;
}

/// Storage of checkpoint and savepoint files.
pub trait CheckpointStorage: Send + Sync + fmt::Debug {
    /// Writes `data` at `path` atomically, replacing any previous object.
    fn put(&self, path: &str, data: Bytes) -> Result<(), StorageError>;
    /// Writes `data` at `path` only if nothing is there yet (a conditional write on
    /// stores that have one); `Ok(false)` when an object already was, untouched. The
    /// default checks and then writes, which is not atomic.
    fn put_if_absent(&self, path: &str, data: Bytes) -> Result<bool, StorageError> {
        match self.size(path) {
            Ok(_) => Ok(false),
            Err(StorageError::NotFound { .. }) => self.put(path, data).map(|()| true),
            Err(e) => Err(e),
        }
    }
    /// Starts writing `path` piece by piece (see [`StorageWrite`]).
    fn create(&self, path: &str) -> Result<Box<dyn StorageWrite + '_>, StorageError>;
    /// Reads a whole object.
    fn get(&self, path: &str) -> Result<Bytes, StorageError>;
    /// Reads the bytes `range` of an object; a range past the end is an error.
    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, StorageError>;
    /// The size of an object in bytes.
    fn size(&self, path: &str) -> Result<u64, StorageError>;
    /// Paths of all objects under `prefix` (a directory-like prefix; `""` for all).
    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Deletes an object; deleting a missing object is not an error.
    fn delete(&self, path: &str) -> Result<(), StorageError>;
}

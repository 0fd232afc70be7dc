//! A [`CheckpointStorage`] wrapper whose reads retry transient errors
//! ([`StorageError::is_transient`]: I/O and service errors, timeouts) with backoff;
//! writes and deletes pass through once. What a job reads its checkpoints through:
//! a storage hiccup must never make a checkpoint look unusable, since falling back to
//! an older one repeats the output committed since.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flowstate_core::StorageError;
use flowstate_core::storage::{CheckpointStorage, StorageWrite};

/// Attempts of one read (the first included).
const ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubled after each.
const FIRST_WAIT: Duration = Duration::from_millis(20);

/// Checkpoint storage whose reads retry transient errors (5 attempts, 20 ms doubling).
#[derive(Debug)]
pub struct RetryingReads(Arc<dyn CheckpointStorage>);

impl RetryingReads {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn CheckpointStorage>) -> Self {
        RetryingReads(inner)
    }

    fn retry<T>(
        &self,
        mut call: impl FnMut() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut wait = FIRST_WAIT;
        let mut attempt = 1;
        loop {
            match call() {
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tracing::debug!("storage read failed ({e}); retrying in {wait:?}");
                    std::thread::sleep(wait);
                    wait *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

impl CheckpointStorage for RetryingReads {
    fn put(&self, path: &str, data: Bytes) -> Result<(), StorageError> {
        self.0.put(path, data)
    }
    fn put_if_absent(&self, path: &str, data: Bytes) -> Result<bool, StorageError> {
        self.0.put_if_absent(path, data)
    }
    fn create(&self, path: &str) -> Result<Box<dyn StorageWrite + '_>, StorageError> {
        self.0.create(path)
    }
    fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        self.retry(|| self.0.get(path))
    }
    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.retry(|| self.0.get_range(path, range.clone()))
    }
    fn size(&self, path: &str) -> Result<u64, StorageError> {
        self.retry(|| self.0.size(path))
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.retry(|| self.0.list(prefix))
    }
    fn delete(&self, path: &str) -> Result<(), StorageError> {
        self.0.delete(path)
    }
}

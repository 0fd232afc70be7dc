//! A fault-injecting [`CheckpointStorage`] wrapper, for tests of what a job does when
//! its storage misbehaves: seeded and repeatable, it fails or delays every k-th call
//! (`put`, `create`, `get`, `get_range`, `size`, `list`, `delete`). Every injected
//! fault is logged (`tracing` warning `injected storage fault`) and counted.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use flowstate_core::StorageError;
use flowstate_core::storage::{CheckpointStorage, StorageWrite};

/// Which calls fail or are delayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// Seed of the choice between failing and delaying.
    pub seed: u64,
    /// Every `every`-th call is faulted (0: none).
    pub every: u64,
    /// How long a delayed call waits before it runs.
    pub delay: Duration,
}

impl std::fmt::Display for FaultPlan {
    /// `seed:every:delay_ms`, what its `FromStr` reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.seed, self.every, self.delay.as_millis())
    }
}

impl std::str::FromStr for FaultPlan {
    type Err = String;

    /// `seed:every` or `seed:every:delay_ms` (delay default 200 ms).
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |i: usize, what: &str| -> Result<u64, String> {
            parts
                .get(i)
                .ok_or_else(|| format!("fault plan `{s}`: missing {what}"))?
                .parse::<u64>()
                .map_err(|e| format!("fault plan `{s}`: {what}: {e}"))
        };
        if !(2..=3).contains(&parts.len()) {
            return Err(format!("fault plan `{s}`: expected seed:every[:delay_ms]"));
        }
        Ok(FaultPlan {
            seed: num(0, "seed")?,
            every: num(1, "every")?,
            delay: Duration::from_millis(if parts.len() == 3 {
                num(2, "delay")?
            } else {
                200
            }),
        })
    }
}

/// What happens to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    Fail,
    Delay,
}

/// splitmix64: a well-mixed 64-bit function of its input.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Checkpoint storage that fails or delays calls of `inner` as a [`FaultPlan`] says.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: Arc<dyn CheckpointStorage>,
    plan: FaultPlan,
    calls: AtomicU64,
    failed: AtomicU64,
    delayed: AtomicU64,
}

impl FaultyStorage {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn CheckpointStorage>, plan: FaultPlan) -> Self {
        FaultyStorage {
            inner,
            plan,
            calls: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
        }
    }

    /// Calls failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Calls delayed so far.
    pub fn delayed(&self) -> u64 {
        self.delayed.load(Ordering::Relaxed)
    }

    fn fault(&self, op: &'static str, path: &str) -> Result<(), StorageError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let fault = if self.plan.every == 0 || !n.is_multiple_of(self.plan.every) {
            Fault::None
        } else if mix(self.plan.seed ^ n).is_multiple_of(3) {
            Fault::Delay
        } else {
            Fault::Fail
        };
        match fault {
            Fault::None => Ok(()),
            Fault::Delay => {
                self.delayed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(op, path, "injected storage fault: delay");
                std::thread::sleep(self.plan.delay);
                Ok(())
            }
            Fault::Fail => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(op, path, "injected storage fault: failure");
                Err(StorageError::Io {
                    op,
                    path: path.into(),
                    message: format!("injected fault (call {n})"),
                })
            }
        }
    }
}

impl CheckpointStorage for FaultyStorage {
    fn put(&self, path: &str, data: Bytes) -> Result<(), StorageError> {
        self.fault("put", path)?;
        self.inner.put(path, data)
    }
    fn put_if_absent(&self, path: &str, data: Bytes) -> Result<bool, StorageError> {
        self.fault("put if absent", path)?;
        self.inner.put_if_absent(path, data)
    }
    fn create(&self, path: &str) -> Result<Box<dyn StorageWrite + '_>, StorageError> {
        self.fault("create", path)?;
        self.inner.create(path)
    }
    fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        self.fault("get", path)?;
        self.inner.get(path)
    }
    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.fault("get range", path)?;
        self.inner.get_range(path, range)
    }
    fn size(&self, path: &str) -> Result<u64, StorageError> {
        self.fault("size", path)?;
        self.inner.size(path)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.fault("list", prefix)?;
        self.inner.list(prefix)
    }
    fn delete(&self, path: &str) -> Result<(), StorageError> {
        self.fault("delete", path)?;
        self.inner.delete(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Null;
    impl CheckpointStorage for Null {
        fn put(&self, _: &str, _: Bytes) -> Result<(), StorageError> {
            Ok(())
        }
        fn create(&self, path: &str) -> Result<Box<dyn StorageWrite + '_>, StorageError> {
            Err(StorageError::NotFound { path: path.into() })
        }
        fn get(&self, _: &str) -> Result<Bytes, StorageError> {
            Ok(Bytes::new())
        }
        fn get_range(&self, _: &str, _: Range<u64>) -> Result<Bytes, StorageError> {
            Ok(Bytes::new())
        }
        fn size(&self, _: &str) -> Result<u64, StorageError> {
            Ok(0)
        }
        fn list(&self, _: &str) -> Result<Vec<String>, StorageError> {
            Ok(Vec::new())
        }
        fn delete(&self, _: &str) -> Result<(), StorageError> {
            Ok(())
        }
    }

    #[test]
    fn every_kth_call_is_faulted_and_seeded() {
        let plan: FaultPlan = "7:4:0".parse().unwrap();
        let run = || {
            let s = FaultyStorage::new(Arc::new(Null), plan);
            let outcomes: Vec<bool> = (0..40)
                .map(|_| s.put("chk-1/x", Bytes::new()).is_ok())
                .collect();
            (outcomes, s.failed(), s.delayed())
        };
        let (a, failed, delayed) = run();
        assert_eq!(failed + delayed, 10);
        assert!(failed > 0);
        assert_eq!(a.iter().filter(|ok| !**ok).count() as u64, failed);
        assert!(a.iter().enumerate().all(|(i, ok)| *ok || (i + 1) % 4 == 0));
        assert_eq!(run().0, a, "same seed, same faults");
        assert!("x".parse::<FaultPlan>().is_err());
        assert_eq!(plan.to_string().parse::<FaultPlan>(), Ok(plan));
    }
}

//! TTL configuration: clocks, update type, visibility, cleanup strategies, and what a
//! backend is told about a state stored with TTL. A leaf: descriptors carry it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::error::{StateError, StateResult};

/// Milliseconds since an epoch of the clock's choosing; TTL compares them only with
/// each other.
pub trait TtlClock: Send + Sync + 'static {
    /// The current time in milliseconds.
    fn now_ms(&self) -> i64;
}

/// The default clock: milliseconds since the Unix epoch, read cheaply.
///
/// It is the wall-clock time when the process first read it, advanced by the kernel's
/// coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`: resolution of a scheduler tick,
/// 1-4 ms). Reading the precise clock costs a serializing timestamp-counter read that
/// stalls the out-of-order memory accesses state lookups overlap; this read does not,
/// and TTLs are far longer than a tick. It also never steps back within a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

pub(super) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl TtlClock for SystemClock {
    #[inline]
    fn now_ms(&self) -> i64 {
        static ANCHOR: std::sync::OnceLock<(i64, coarsetime::Instant)> = std::sync::OnceLock::new();
        let (wall, start) =
            ANCHOR.get_or_init(|| (wall_ms(), coarsetime::Instant::now_without_cache_update()));
        let elapsed = coarsetime::Instant::now_without_cache_update().duration_since(*start);
        wall.saturating_add(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to; clones share the time (tests, replays).
///
/// ```
/// use flowstate_core::ttl::{ManualClock, TtlClock};
/// let c = ManualClock::new(10);
/// let c2 = c.clone();
/// c.advance(5);
/// assert_eq!(c2.now_ms(), 15);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(now_ms)))
    }
    /// Sets the time.
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl TtlClock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// When the last-access timestamp is refreshed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UpdateType {
    /// On creation and every write (Flink's default).
    #[default]
    OnCreateAndWrite,
    /// Also on every read that returns the value.
    OnReadAndWrite,
    /// TTL is switched off: the state is stored without timestamps and never expires.
    Disabled,
}

/// Whether a read may return a value that expired but was not removed yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StateVisibility {
    /// Expired values are never returned (Flink's default).
    #[default]
    NeverReturnExpired,
    /// An expired value still stored is returned once (and then removed).
    ReturnExpiredIfNotCleanedUp,
}

/// Heap backend cleanup: check a few entries on every state access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IncrementalCleanup {
    /// Entries checked per state access (default 5).
    pub cleanup_size: u32,
    /// Also check `cleanup_size` entries for every record (`set_current_key`).
    pub run_for_every_record: bool,
}

/// RocksDB backend cleanup: drop expired values while compacting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CompactionFilterCleanup {
    /// The filter re-reads the clock after this many entries (default 1000).
    pub query_time_after_num_entries: u64,
    /// Files older than this are compacted even without writes (default 30 days;
    /// zero disables), so expired data in cold files goes away too.
    pub periodic_compaction: Duration,
}

/// Which background cleanups run. All three are on by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CleanupStrategies {
    /// Leave expired entries out of full (canonical) snapshots and savepoints.
    pub full_snapshot: bool,
    /// Heap backend: incremental cleanup.
    pub incremental: Option<IncrementalCleanup>,
    /// RocksDB backend: compaction filter.
    pub compaction_filter: Option<CompactionFilterCleanup>,
}

impl Default for CleanupStrategies {
    fn default() -> Self {
        CleanupStrategies {
            full_snapshot: true,
            incremental: Some(IncrementalCleanup {
                cleanup_size: 5,
                run_for_every_record: false,
            }),
            compaction_filter: Some(CompactionFilterCleanup {
                query_time_after_num_entries: 1000,
                periodic_compaction: Duration::from_secs(30 * 24 * 3600),
            }),
        }
    }
}

/// Time-to-live of a keyed state (see the module docs).
#[derive(Clone)]
pub struct StateTtlConfig {
    ttl: Duration,
    ttl_ms: i64,
    update_type: UpdateType,
    visibility: StateVisibility,
    clock: Arc<dyn TtlClock>,
    cleanup: CleanupStrategies,
}

impl fmt::Debug for StateTtlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateTtlConfig")
            .field("ttl", &self.ttl)
            .field("update_type", &self.update_type)
            .field("visibility", &self.visibility)
            .field("cleanup", &self.cleanup)
            .finish_non_exhaustive()
    }
}

fn invalid(reason: impl Into<String>) -> StateError {
    StateError::InvalidTtlConfig(reason.into())
}

impl StateTtlConfig {
    /// A config with time to live `ttl` (at least 1 ms), the default update type,
    /// visibility and cleanups, and the system clock.
    pub fn new(ttl: Duration) -> StateResult<Self> {
        let ttl_ms = i64::try_from(ttl.as_millis())
            .map_err(|_| invalid(format!("time to live {ttl:?} is too large")))?;
        if ttl_ms <= 0 {
            return Err(invalid(format!(
                "time to live must be positive (at least 1 ms), got {ttl:?}"
            )));
        }
        Ok(StateTtlConfig {
            ttl,
            ttl_ms,
            update_type: UpdateType::default(),
            visibility: StateVisibility::default(),
            clock: Arc::new(SystemClock),
            cleanup: CleanupStrategies::default(),
        })
    }
    /// Sets when timestamps are refreshed.
    pub fn with_update_type(mut self, update_type: UpdateType) -> Self {
        self.update_type = update_type;
        self
    }
    /// Sets whether expired values not yet cleaned up may be returned.
    pub fn with_visibility(mut self, visibility: StateVisibility) -> Self {
        self.visibility = visibility;
        self
    }
    /// Replaces the processing-time clock (tests inject a [`ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn TtlClock>) -> Self {
        self.clock = clock;
        self
    }
    /// Switches full-snapshot cleanup on or off.
    pub fn with_full_snapshot_cleanup(mut self, on: bool) -> Self {
        self.cleanup.full_snapshot = on;
        self
    }
    /// Heap incremental cleanup with `cleanup_size` (positive) entries per access.
    pub fn with_incremental_cleanup(
        mut self,
        cleanup_size: u32,
        run_for_every_record: bool,
    ) -> StateResult<Self> {
        if cleanup_size == 0 {
            return Err(invalid("incremental cleanup size must be positive"));
        }
        self.cleanup.incremental = Some(IncrementalCleanup {
            cleanup_size,
            run_for_every_record,
        });
        Ok(self)
    }
    /// RocksDB compaction-filter cleanup; `query_time_after_num_entries` must be
    /// positive, a zero `periodic_compaction` disables periodic compaction.
    pub fn with_compaction_filter_cleanup(
        mut self,
        query_time_after_num_entries: u64,
        periodic_compaction: Duration,
    ) -> StateResult<Self> {
        if query_time_after_num_entries == 0 {
            return Err(invalid(
                "compaction filter query_time_after_num_entries must be positive",
            ));
        }
        self.cleanup.compaction_filter = Some(CompactionFilterCleanup {
            query_time_after_num_entries,
            periodic_compaction,
        });
        Ok(self)
    }
    /// Turns every background cleanup off (full snapshot, incremental, compaction
    /// filter); expired data is then removed only when read.
    pub fn disable_cleanup_in_background(mut self) -> Self {
        self.cleanup = CleanupStrategies {
            full_snapshot: false,
            incremental: None,
            compaction_filter: None,
        };
        self
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
    /// The time to live in milliseconds.
    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }
    /// When timestamps are refreshed.
    pub fn update_type(&self) -> UpdateType {
        self.update_type
    }
    /// Whether expired values may be returned.
    pub fn visibility(&self) -> StateVisibility {
        self.visibility
    }
    /// The clock.
    pub fn clock(&self) -> &Arc<dyn TtlClock> {
        &self.clock
    }
    /// The background cleanups.
    pub fn cleanup(&self) -> &CleanupStrategies {
        &self.cleanup
    }
    /// Whether TTL is in effect (update type not [`UpdateType::Disabled`]).
    pub fn is_enabled(&self) -> bool {
        self.update_type != UpdateType::Disabled
    }
    /// Whether a value last accessed at `last_access` is expired at `now`.
    #[inline]
    pub fn is_expired(&self, last_access: i64, now: i64) -> bool {
        expired(last_access, self.ttl_ms, now)
    }
}

#[inline]
pub(super) fn expired(last_access: i64, ttl_ms: i64, now: i64) -> bool {
    last_access.saturating_add(ttl_ms) <= now
}

/// What the TTL layer tells a backend about a state stored as [`TtlValue`](super::serializer::TtlValue)s, so it can
/// clean up in the background. `T` is the stored value type (a `TtlValue<_>`).
pub struct TtlStorage<T> {
    /// The state's TTL config.
    pub config: StateTtlConfig,
    /// Reads the last access of a stored value.
    pub last_access: fn(&T) -> i64,
}

impl<T> Clone for TtlStorage<T> {
    fn clone(&self) -> Self {
        TtlStorage {
            config: self.config.clone(),
            last_access: self.last_access,
        }
    }
}

impl<T> TtlStorage<T> {
    /// Whether stored `value` is expired at `now`.
    #[inline]
    pub fn is_expired(&self, value: &T, now: i64) -> bool {
        self.config.is_expired((self.last_access)(value), now)
    }
}

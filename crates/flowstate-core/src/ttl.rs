//! State time-to-live: configuration, the stored form, and the decorators that give
//! every keyed state kind expiry semantics on any backend.
//!
//! TTL works the way Flink's does. A state declared with a [`StateTtlConfig`] is stored
//! as [`TtlValue`]s: the user value plus the 8-byte last-access timestamp (milliseconds
//! of the config's [`TtlClock`]). Backends store these like any other value; the
//! decorators here ([`value_state`], [`list_state`], ...) wrap the stored state so user
//! code keeps seeing `ValueState<T>` etc. List elements and map entries carry their own
//! timestamps and expire one by one; reducing and aggregating state expire as a whole.
//!
//! The stored encoding of a [`TtlValue`] (by [`TtlSerializer`]) is the timestamp as
//! 8 bytes little-endian followed by the inner serializer's bytes, so backends and
//! snapshot writers can test expiry without knowing the value type
//! ([`payload_expired`], [`filter_expired_payload`]).
//!
//! Cleanup of expired data:
//! - on read: a read that meets an expired value removes it (both visibilities);
//! - full snapshot: canonical snapshots and savepoints leave expired entries out
//!   ([`filter_snapshot_writer`]);
//! - incremental (heap backend): `cleanup_size` entries checked per state access, and
//!   optionally per record (each `set_current_key`);
//! - compaction filter (RocksDB backend): expired values dropped during compactions,
//!   clock re-read every `query_time_after_num_entries` entries, periodic compaction
//!   (30 days by default) so cold files are compacted too.
//!
//! Restores: a state that had no TTL and now has one is migrated (restored values get
//! the restore time as last access); a state that had TTL and now has none is migrated
//! by dropping the timestamps ([`crate::serializer::resolve_value_serializer`]). A
//! changed duration applies to restored data, because only timestamps are stored.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use flowstate_core::descriptor::ValueStateDescriptor;
//! use flowstate_core::ttl::{ManualClock, StateTtlConfig, UpdateType};
//! let clock = ManualClock::new(0);
//! let ttl = StateTtlConfig::new(Duration::from_secs(60))
//!     .unwrap()
//!     .with_update_type(UpdateType::OnReadAndWrite)
//!     .with_clock(Arc::new(clock.clone()));
//! let desc = ValueStateDescriptor::<u64>::new("last-seen").with_ttl(ttl);
//! assert_eq!(desc.ttl().unwrap().ttl(), Duration::from_secs(60));
//! ```

use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::backend::KeyedStateBackend;
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use crate::error::{SerializationError, StateError, StateResult};
use crate::format::{put_varint, put_vbytes};
use crate::serializer::{Compatibility, MigrationReader, SerializerSnapshot, TypeSerializer};
use crate::snapshot::{EntryEncoder, KeyedStateWriter, StateMetaInfo, payload, section_entries};
use crate::state::{
    AggregatingState, InternalAggregatingState, InternalKvState, InternalListState,
    InternalMapState, InternalMergingState, InternalReducingState, InternalValueState, ListState,
    MapState, Namespace, ReducingState, StateKey, StateKind, StateValue, ValueState,
};

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

fn wall_ms() -> i64 {
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
fn expired(last_access: i64, ttl_ms: i64, now: i64) -> bool {
    last_access.saturating_add(ttl_ms) <= now
}

/// The stored form of a value of a TTL state: the value and its last access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtlValue<T> {
    /// The user value.
    pub value: T,
    /// Milliseconds of the state's clock at the last refreshing access.
    pub last_access: i64,
}

/// Serializer identity of [`TtlSerializer`].
pub const TTL_IDENTITY: &str = "flowstate.ttl";
const TTL_VERSION: u32 = 1;

/// Serializes [`TtlValue`]s: 8-byte little-endian timestamp, then the inner bytes.
/// Its snapshot embeds the inner serializer's snapshot, so compatibility is resolved
/// on the inner type.
pub struct TtlSerializer<T> {
    inner: Arc<dyn TypeSerializer<T>>,
    clock: Arc<dyn TtlClock>,
}

impl<T> TtlSerializer<T> {
    /// Wraps `inner`; `clock` stamps values migrated from a state without TTL.
    pub fn new(inner: Arc<dyn TypeSerializer<T>>, clock: Arc<dyn TtlClock>) -> Self {
        TtlSerializer { inner, clock }
    }
}

/// Encodes a serializer snapshot as bytes (the schema of a TTL snapshot).
fn encode_snapshot(s: &SerializerSnapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.identity.len() + s.schema.len() + 12);
    out.extend_from_slice(&(s.identity.len() as u32).to_le_bytes());
    out.extend_from_slice(s.identity.as_bytes());
    out.extend_from_slice(&s.version.to_le_bytes());
    out.extend_from_slice(&s.schema);
    out
}

/// The inner snapshot of a [`TtlSerializer`] snapshot, if `s` is one and well formed.
pub fn ttl_inner_snapshot(s: &SerializerSnapshot) -> Option<SerializerSnapshot> {
    if s.identity != TTL_IDENTITY {
        return None;
    }
    let b = &s.schema;
    let len = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let identity = std::str::from_utf8(b.get(4..4usize.checked_add(len)?)?).ok()?;
    let version = u32::from_le_bytes(b.get(4 + len..8 + len)?.try_into().ok()?);
    Some(SerializerSnapshot {
        identity: identity.to_string(),
        version,
        schema: b.get(8 + len..)?.to_vec(),
    })
}

/// The last-access timestamp of a stored TTL value, or `None` if too short.
#[inline]
pub fn stored_timestamp(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?))
}

fn split_ttl(bytes: &[u8]) -> Result<(i64, &[u8]), SerializationError> {
    match (stored_timestamp(bytes), bytes.get(8..)) {
        (Some(ts), Some(rest)) => Ok((ts, rest)),
        _ => Err(SerializationError::new(format!(
            "TTL value of {} bytes is shorter than its 8-byte timestamp",
            bytes.len()
        ))),
    }
}

impl<T: 'static> TypeSerializer<TtlValue<T>> for TtlSerializer<T> {
    fn serialize_into(
        &self,
        value: &TtlValue<T>,
        out: &mut Vec<u8>,
    ) -> Result<(), SerializationError> {
        out.extend_from_slice(&value.last_access.to_le_bytes());
        self.inner.serialize_into(&value.value, out)
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<TtlValue<T>, SerializationError> {
        let (last_access, rest) = split_ttl(bytes)?;
        Ok(TtlValue {
            value: self.inner.deserialize(rest)?,
            last_access,
        })
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot {
            identity: TTL_IDENTITY.to_string(),
            version: TTL_VERSION,
            schema: encode_snapshot(&self.inner.snapshot()),
        }
    }

    /// A TTL snapshot resolves on its inner one; a snapshot without TTL migrates:
    /// each restored value gets the restore time as its last access.
    fn resolve_compatibility(&self, previous: &SerializerSnapshot) -> Compatibility<TtlValue<T>> {
        if previous.identity == TTL_IDENTITY {
            if previous.version > TTL_VERSION {
                return Compatibility::Incompatible(format!(
                    "stored by {TTL_IDENTITY} version {}, this build knows up to {TTL_VERSION}",
                    previous.version
                ));
            }
            let Some(inner_prev) = ttl_inner_snapshot(previous) else {
                return Compatibility::Incompatible(
                    "stored TTL serializer schema is malformed".into(),
                );
            };
            return match self.inner.resolve_compatibility(&inner_prev) {
                Compatibility::CompatibleAsIs => Compatibility::CompatibleAsIs,
                Compatibility::CompatibleAfterMigration(reader) => {
                    Compatibility::CompatibleAfterMigration(Arc::new(move |b: &[u8]| {
                        let (last_access, rest) = split_ttl(b)?;
                        Ok(TtlValue {
                            value: reader(rest)?,
                            last_access,
                        })
                    }))
                }
                Compatibility::CompatibleWithReconfiguredSerializer(s) => {
                    Compatibility::CompatibleWithReconfiguredSerializer(Arc::new(
                        TtlSerializer::new(s, self.clock.clone()),
                    ))
                }
                Compatibility::Incompatible(r) => Compatibility::Incompatible(r),
            };
        }
        // TTL switched on for a state stored without it.
        let reader: MigrationReader<T> = match self.inner.resolve_compatibility(previous) {
            Compatibility::CompatibleAsIs => {
                let s = self.inner.clone();
                Arc::new(move |b: &[u8]| s.deserialize(b))
            }
            Compatibility::CompatibleAfterMigration(r) => r,
            Compatibility::CompatibleWithReconfiguredSerializer(s) => {
                Arc::new(move |b: &[u8]| s.deserialize(b))
            }
            Compatibility::Incompatible(r) => return Compatibility::Incompatible(r),
        };
        let now = self.clock.now_ms();
        Compatibility::CompatibleAfterMigration(Arc::new(move |b: &[u8]| {
            Ok(TtlValue {
                value: reader(b)?,
                last_access: now,
            })
        }))
    }
}

/// Reader of values stored with TTL by a state that now has none: drops timestamps.
pub(crate) fn strip_ttl_reader<T: 'static>(inner: MigrationReader<T>) -> MigrationReader<T> {
    Arc::new(move |b: &[u8]| {
        let (_, rest) = split_ttl(b)?;
        inner(rest)
    })
}

/// What the TTL layer tells a backend about a state stored as [`TtlValue`]s, so it can
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

fn last_access_of<T>(v: &TtlValue<T>) -> i64 {
    v.last_access
}

fn storage_for<T>(config: &StateTtlConfig) -> TtlStorage<TtlValue<T>> {
    TtlStorage {
        config: config.clone(),
        last_access: last_access_of::<T>,
    }
}

// ---- byte-level expiry (snapshots, compaction filters) ----

/// Whether a stored TTL value (timestamp first) is expired; malformed values are kept
/// (they are reported when read, not silently dropped).
#[inline]
pub fn payload_expired(stored: &[u8], ttl_ms: i64, now: i64) -> bool {
    stored_timestamp(stored).is_some_and(|ts| expired(ts, ttl_ms, now))
}

/// Filters one canonical payload of a TTL state of `kind`: `None` when nothing in it is
/// alive, else the payload with expired list elements / map entries removed.
pub fn filter_expired_payload(
    kind: StateKind,
    payload_bytes: &[u8],
    ttl_ms: i64,
    now: i64,
    path: &str,
) -> StateResult<Option<Vec<u8>>> {
    match kind {
        StateKind::Value | StateKind::Reducing | StateKind::Aggregating => {
            Ok((!payload_expired(payload_bytes, ttl_ms, now)).then(|| payload_bytes.to_vec()))
        }
        StateKind::List => {
            let items = payload::list_items(payload_bytes, path)?;
            let alive: Vec<&[u8]> = items
                .into_iter()
                .filter(|i| !payload_expired(i, ttl_ms, now))
                .collect();
            if alive.is_empty() {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(payload_bytes.len());
            put_varint(&mut out, alive.len() as u32);
            for i in alive {
                put_vbytes(&mut out, i)?;
            }
            Ok(Some(out))
        }
        StateKind::Map => {
            let pairs = payload::map_pairs(payload_bytes, path)?;
            let alive: Vec<(&[u8], &[u8])> = pairs
                .into_iter()
                .filter(|(_, v)| !payload_expired(v, ttl_ms, now))
                .collect();
            if alive.is_empty() {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(payload_bytes.len());
            put_varint(&mut out, alive.len() as u32);
            for (k, v) in alive {
                put_vbytes(&mut out, k)?;
                put_vbytes(&mut out, v)?;
            }
            Ok(Some(out))
        }
    }
}

/// A snapshot writer that leaves expired entries of a TTL state out (full-snapshot
/// cleanup). `now` is read once, at the synchronous part, so the snapshot is the
/// state as of that instant.
struct ExpiryFilteringWriter {
    inner: Box<dyn KeyedStateWriter>,
    ttl_ms: i64,
    now: i64,
    scratch: Vec<u8>,
}

impl KeyedStateWriter for ExpiryFilteringWriter {
    fn meta(&self) -> &StateMetaInfo {
        self.inner.meta()
    }

    fn write_key_group(&mut self, key_group: u32, out: &mut EntryEncoder<'_>) -> StateResult<()> {
        self.scratch.clear();
        let mut enc = EntryEncoder::new(&mut self.scratch);
        self.inner.write_key_group(key_group, &mut enc)?;
        let kind = self.inner.meta().kind;
        let path = "<snapshot being written>";
        for e in section_entries(&self.scratch, path)? {
            if let Some(p) = filter_expired_payload(kind, e.payload, self.ttl_ms, self.now, path)? {
                out.raw_entry(e.key, e.namespace, &p)?;
            }
        }
        Ok(())
    }
}

/// Wraps a state's snapshot writer with full-snapshot cleanup when `ttl` asks for it.
pub fn filter_snapshot_writer(
    writer: Box<dyn KeyedStateWriter>,
    ttl: Option<&StateTtlConfig>,
) -> Box<dyn KeyedStateWriter> {
    match ttl {
        Some(cfg) if cfg.cleanup().full_snapshot => Box::new(ExpiryFilteringWriter {
            inner: writer,
            ttl_ms: cfg.ttl_ms(),
            now: cfg.clock().now_ms(),
            scratch: Vec::new(),
        }),
        _ => writer,
    }
}

// ---- decorators ----

/// What every decorator needs from the config.
#[derive(Clone)]
struct Ttl {
    ttl_ms: i64,
    refresh_on_read: bool,
    return_expired: bool,
    clock: Arc<dyn TtlClock>,
}

impl Ttl {
    fn new(cfg: &StateTtlConfig) -> Self {
        Ttl {
            ttl_ms: cfg.ttl_ms,
            refresh_on_read: cfg.update_type == UpdateType::OnReadAndWrite,
            return_expired: cfg.visibility == StateVisibility::ReturnExpiredIfNotCleanedUp,
            clock: cfg.clock.clone(),
        }
    }
    #[inline]
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }
    #[inline]
    fn expired(&self, last_access: i64, now: i64) -> bool {
        expired(last_access, self.ttl_ms, now)
    }
    #[inline]
    fn wrap<T>(&self, value: T, now: i64) -> TtlValue<T> {
        TtlValue {
            value,
            last_access: now,
        }
    }
}

/// Refreshes the timestamp of the stored value through its serialized form (reducing
/// and aggregating state have no typed access to the stored accumulator).
fn refresh_serialized<N>(inner: &dyn InternalKvState<N>, now: i64) -> StateResult<()> {
    if let Some(mut bytes) = inner.get_serialized()?
        && bytes.len() >= 8
    {
        bytes[..8].copy_from_slice(&now.to_le_bytes());
        inner.set_serialized(&bytes)?;
    }
    Ok(())
}

/// [`ValueState`] with TTL over a stored `TtlValue<T>` state.
pub struct TtlValueState<N, T> {
    inner: Rc<dyn InternalValueState<N, TtlValue<T>>>,
    ttl: Ttl,
    default: Option<T>,
}

impl<N, T: Clone> ValueState<T> for TtlValueState<N, T> {
    fn value(&self) -> StateResult<Option<T>> {
        let Some(tv) = self.inner.value()? else {
            return Ok(self.default.clone());
        };
        let now = self.ttl.now();
        if self.ttl.expired(tv.last_access, now) {
            self.inner.clear()?;
            return Ok(if self.ttl.return_expired {
                Some(tv.value)
            } else {
                self.default.clone()
            });
        }
        if self.ttl.refresh_on_read {
            self.inner.update(self.ttl.wrap(tv.value.clone(), now))?;
        }
        Ok(Some(tv.value))
    }
    fn update(&self, value: T) -> StateResult<()> {
        self.inner.update(self.ttl.wrap(value, self.ttl.now()))
    }
    fn clear(&self) -> StateResult<()> {
        self.inner.clear()
    }
}

/// Forwards the engine-only operations to the stored state (serialized access sees
/// the stored form, timestamps included).
macro_rules! forward_kv {
    ($ty:ident < $($p:ident),* >) => {
        impl<N, $($p),*> InternalKvState<N> for $ty<N, $($p),*> {
            fn name(&self) -> &str {
                self.inner.name()
            }
            fn set_current_namespace(&self, namespace: N) {
                self.inner.set_current_namespace(namespace)
            }
            fn get_serialized(&self) -> StateResult<Option<Vec<u8>>> {
                self.inner.get_serialized()
            }
            fn set_serialized(&self, payload: &[u8]) -> StateResult<()> {
                self.inner.set_serialized(payload)
            }
        }
    };
}

forward_kv!(TtlValueState<T>);
impl<N, T: Clone> InternalValueState<N, T> for TtlValueState<N, T> {}

/// [`ListState`] with TTL: each element carries its own timestamp.
pub struct TtlListState<N, T> {
    inner: Rc<dyn InternalListState<N, TtlValue<T>>>,
    ttl: Ttl,
}

impl<N, T: Clone> ListState<T> for TtlListState<N, T> {
    fn get(&self) -> StateResult<Vec<T>> {
        let stored = self.inner.get()?;
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.ttl.now();
        let any_expired = stored.iter().any(|e| self.ttl.expired(e.last_access, now));
        if !any_expired && !self.ttl.refresh_on_read {
            return Ok(stored.into_iter().map(|e| e.value).collect());
        }
        let mut visible = Vec::with_capacity(stored.len());
        let mut kept = Vec::with_capacity(stored.len());
        for e in stored {
            if self.ttl.expired(e.last_access, now) {
                if self.ttl.return_expired {
                    visible.push(e.value);
                }
            } else {
                visible.push(e.value.clone());
                let last_access = if self.ttl.refresh_on_read {
                    now
                } else {
                    e.last_access
                };
                kept.push(TtlValue {
                    value: e.value,
                    last_access,
                });
            }
        }
        self.inner.update(kept)?;
        Ok(visible)
    }
    fn add(&self, value: T) -> StateResult<()> {
        self.inner.add(self.ttl.wrap(value, self.ttl.now()))
    }
    fn add_all(&self, values: Vec<T>) -> StateResult<()> {
        let now = self.ttl.now();
        self.inner
            .add_all(values.into_iter().map(|v| self.ttl.wrap(v, now)).collect())
    }
    fn update(&self, values: Vec<T>) -> StateResult<()> {
        let now = self.ttl.now();
        self.inner
            .update(values.into_iter().map(|v| self.ttl.wrap(v, now)).collect())
    }
    fn clear(&self) -> StateResult<()> {
        self.inner.clear()
    }
}

forward_kv!(TtlListState<T>);
impl<N, T> InternalMergingState<N> for TtlListState<N, T> {
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()> {
        self.inner.merge_namespaces(target, sources)
    }
}
impl<N, T: Clone> InternalListState<N, T> for TtlListState<N, T> {}

/// [`MapState`] with TTL: each entry carries its own timestamp.
pub struct TtlMapState<N, K, V> {
    inner: Rc<dyn InternalMapState<N, K, TtlValue<V>>>,
    ttl: Ttl,
}

impl<N, K: Clone, V: Clone> TtlMapState<N, K, V> {
    /// Every stored entry, with expired ones removed (and returned only when the
    /// visibility allows) and read timestamps refreshed when configured.
    fn live_entries(&self) -> StateResult<Vec<(K, V)>> {
        let stored = self.inner.entries()?;
        let now = self.ttl.now();
        let mut out = Vec::with_capacity(stored.len());
        for (k, e) in stored {
            if self.ttl.expired(e.last_access, now) {
                self.inner.remove(&k)?;
                if self.ttl.return_expired {
                    out.push((k, e.value));
                }
            } else {
                if self.ttl.refresh_on_read {
                    self.inner
                        .put(k.clone(), self.ttl.wrap(e.value.clone(), now))?;
                }
                out.push((k, e.value));
            }
        }
        Ok(out)
    }
}

impl<N, K: Clone, V: Clone> MapState<K, V> for TtlMapState<N, K, V> {
    fn get(&self, key: &K) -> StateResult<Option<V>> {
        let Some(e) = self.inner.get(key)? else {
            return Ok(None);
        };
        let now = self.ttl.now();
        if self.ttl.expired(e.last_access, now) {
            self.inner.remove(key)?;
            return Ok(self.ttl.return_expired.then_some(e.value));
        }
        if self.ttl.refresh_on_read {
            self.inner
                .put(key.clone(), self.ttl.wrap(e.value.clone(), now))?;
        }
        Ok(Some(e.value))
    }
    fn put(&self, key: K, value: V) -> StateResult<()> {
        self.inner.put(key, self.ttl.wrap(value, self.ttl.now()))
    }
    fn put_all(&self, entries: Vec<(K, V)>) -> StateResult<()> {
        let now = self.ttl.now();
        self.inner.put_all(
            entries
                .into_iter()
                .map(|(k, v)| (k, self.ttl.wrap(v, now)))
                .collect(),
        )
    }
    fn remove(&self, key: &K) -> StateResult<()> {
        self.inner.remove(key)
    }
    fn contains(&self, key: &K) -> StateResult<bool> {
        Ok(self.get(key)?.is_some())
    }
    fn entries(&self) -> StateResult<Vec<(K, V)>> {
        self.live_entries()
    }
    fn keys(&self) -> StateResult<Vec<K>> {
        Ok(self.live_entries()?.into_iter().map(|(k, _)| k).collect())
    }
    fn values(&self) -> StateResult<Vec<V>> {
        Ok(self.live_entries()?.into_iter().map(|(_, v)| v).collect())
    }
    fn is_empty(&self) -> StateResult<bool> {
        Ok(self.live_entries()?.is_empty())
    }
    fn clear(&self) -> StateResult<()> {
        self.inner.clear()
    }
}

forward_kv!(TtlMapState<K, V>);
impl<N, K: Clone, V: Clone> InternalMapState<N, K, V> for TtlMapState<N, K, V> {}

/// Reads a whole-value TTL state (reducing, aggregating) with expiry and refresh.
fn read_whole<N, T>(
    inner: &dyn InternalKvState<N>,
    stored: Option<TtlValue<T>>,
    clear: impl FnOnce() -> StateResult<()>,
    ttl: &Ttl,
) -> StateResult<Option<T>> {
    let Some(tv) = stored else { return Ok(None) };
    let now = ttl.now();
    if ttl.expired(tv.last_access, now) {
        clear()?;
        return Ok(ttl.return_expired.then_some(tv.value));
    }
    if ttl.refresh_on_read {
        refresh_serialized(inner, now)?;
    }
    Ok(Some(tv.value))
}

/// [`ReducingState`] with TTL: the folded value expires as a whole; adding to an
/// expired value starts afresh.
pub struct TtlReducingState<N, T> {
    inner: Rc<dyn InternalReducingState<N, TtlValue<T>>>,
    ttl: Ttl,
}

impl<N, T> ReducingState<T> for TtlReducingState<N, T> {
    fn get(&self) -> StateResult<Option<T>> {
        read_whole(
            self.inner.as_ref(),
            self.inner.get()?,
            || self.inner.clear(),
            &self.ttl,
        )
    }
    fn add(&self, value: T) -> StateResult<()> {
        self.inner.add(self.ttl.wrap(value, self.ttl.now()))
    }
    fn clear(&self) -> StateResult<()> {
        self.inner.clear()
    }
}

forward_kv!(TtlReducingState<T>);
impl<N, T> InternalMergingState<N> for TtlReducingState<N, T> {
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()> {
        self.inner.merge_namespaces(target, sources)
    }
}
impl<N, T> InternalReducingState<N, T> for TtlReducingState<N, T> {}

/// [`AggregatingState`] with TTL: the accumulator expires as a whole; adding to an
/// expired accumulator starts a fresh one.
pub struct TtlAggregatingState<N, IN, OUT> {
    inner: Rc<dyn InternalAggregatingState<N, IN, TtlValue<OUT>>>,
    ttl: Ttl,
}

impl<N, IN, OUT> AggregatingState<IN, OUT> for TtlAggregatingState<N, IN, OUT> {
    fn get(&self) -> StateResult<Option<OUT>> {
        read_whole(
            self.inner.as_ref(),
            self.inner.get()?,
            || self.inner.clear(),
            &self.ttl,
        )
    }
    fn add(&self, value: IN) -> StateResult<()> {
        self.inner.add(value)
    }
    fn clear(&self) -> StateResult<()> {
        self.inner.clear()
    }
}

forward_kv!(TtlAggregatingState<IN, OUT>);
impl<N, IN, OUT> InternalMergingState<N> for TtlAggregatingState<N, IN, OUT> {
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()> {
        self.inner.merge_namespaces(target, sources)
    }
}
impl<N, IN, OUT> InternalAggregatingState<N, IN, OUT> for TtlAggregatingState<N, IN, OUT> {}

/// The user's aggregate function over timestamped accumulators: an expired
/// accumulator is replaced by a fresh one before adding; results carry the timestamp
/// so the decorator can check expiry.
struct TtlAggregateFunction<IN, ACC, OUT> {
    function: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
    ttl: Ttl,
}

impl<IN: 'static, ACC: 'static, OUT: 'static> AggregateFunction<IN, TtlValue<ACC>, TtlValue<OUT>>
    for TtlAggregateFunction<IN, ACC, OUT>
{
    fn create_accumulator(&self) -> TtlValue<ACC> {
        self.ttl
            .wrap(self.function.create_accumulator(), self.ttl.now())
    }
    fn add(&self, value: IN, acc: &mut TtlValue<ACC>) {
        let now = self.ttl.now();
        if self.ttl.expired(acc.last_access, now) {
            acc.value = self.function.create_accumulator();
        }
        self.function.add(value, &mut acc.value);
        acc.last_access = now;
    }
    fn get_result(&self, acc: &TtlValue<ACC>) -> TtlValue<OUT> {
        TtlValue {
            value: self.function.get_result(&acc.value),
            last_access: acc.last_access,
        }
    }
    fn merge(&self, acc: &mut TtlValue<ACC>, other: TtlValue<ACC>) {
        let now = self.ttl.now();
        match (
            self.ttl.expired(acc.last_access, now),
            self.ttl.expired(other.last_access, now),
        ) {
            (false, false) => {
                self.function.merge(&mut acc.value, other.value);
                acc.last_access = now;
            }
            (true, false) => *acc = other,
            _ => {}
        }
    }
}

// ---- building TTL states on any backend ----

/// The value state of `desc` with TTL `cfg` on `backend` (backends call this when a
/// descriptor carries an enabled TTL).
pub fn value_state<K, B, N, T>(
    backend: &B,
    desc: &ValueStateDescriptor<T>,
    cfg: &StateTtlConfig,
) -> StateResult<Rc<dyn InternalValueState<N, T>>>
where
    K: StateKey,
    B: KeyedStateBackend<K> + ?Sized,
    N: Namespace,
    T: StateValue,
{
    let stored = ValueStateDescriptor::with_serializer(
        desc.name(),
        Arc::new(TtlSerializer::new(
            desc.serializer().clone(),
            cfg.clock.clone(),
        )),
    )
    .with_ttl_storage(storage_for::<T>(cfg));
    Ok(Rc::new(TtlValueState {
        inner: backend.create_value_state::<N, TtlValue<T>>(&stored)?,
        ttl: Ttl::new(cfg),
        default: desc.default_value().cloned(),
    }))
}

/// The list state of `desc` with TTL `cfg` on `backend`.
pub fn list_state<K, B, N, T>(
    backend: &B,
    desc: &ListStateDescriptor<T>,
    cfg: &StateTtlConfig,
) -> StateResult<Rc<dyn InternalListState<N, T>>>
where
    K: StateKey,
    B: KeyedStateBackend<K> + ?Sized,
    N: Namespace,
    T: StateValue,
{
    let stored = ListStateDescriptor::with_serializer(
        desc.name(),
        Arc::new(TtlSerializer::new(
            desc.serializer().clone(),
            cfg.clock.clone(),
        )),
    )
    .with_ttl_storage(storage_for::<T>(cfg));
    Ok(Rc::new(TtlListState {
        inner: backend.create_list_state::<N, TtlValue<T>>(&stored)?,
        ttl: Ttl::new(cfg),
    }))
}

/// The map state of `desc` with TTL `cfg` on `backend`.
pub fn map_state<K, B, N, UK, UV>(
    backend: &B,
    desc: &MapStateDescriptor<UK, UV>,
    cfg: &StateTtlConfig,
) -> StateResult<Rc<dyn InternalMapState<N, UK, UV>>>
where
    K: StateKey,
    B: KeyedStateBackend<K> + ?Sized,
    N: Namespace,
    UK: StateKey,
    UV: StateValue,
{
    let stored = MapStateDescriptor::with_serializers(
        desc.name(),
        desc.key_serializer().clone(),
        Arc::new(TtlSerializer::new(
            desc.value_serializer().clone(),
            cfg.clock.clone(),
        )),
    )
    .with_ttl_storage(storage_for::<UV>(cfg));
    Ok(Rc::new(TtlMapState {
        inner: backend.create_map_state::<N, UK, TtlValue<UV>>(&stored)?,
        ttl: Ttl::new(cfg),
    }))
}

/// The reducing state of `desc` with TTL `cfg` on `backend`.
pub fn reducing_state<K, B, N, T>(
    backend: &B,
    desc: &ReducingStateDescriptor<T>,
    cfg: &StateTtlConfig,
) -> StateResult<Rc<dyn InternalReducingState<N, T>>>
where
    K: StateKey,
    B: KeyedStateBackend<K> + ?Sized,
    N: Namespace,
    T: StateValue,
{
    let ttl = Ttl::new(cfg);
    let reduce = desc.reduce_fn().clone();
    let t = ttl.clone();
    // Folding into an expired value starts afresh (Flink's TtlReduceFunction).
    let ttl_reduce = move |acc: &TtlValue<T>, new: &TtlValue<T>| -> TtlValue<T> {
        let now = t.now();
        match (
            t.expired(acc.last_access, now),
            t.expired(new.last_access, now),
        ) {
            (false, false) => t.wrap(reduce(&acc.value, &new.value), now),
            (true, false) => new.clone(),
            (false, true) => acc.clone(),
            (true, true) => new.clone(),
        }
    };
    let stored = ReducingStateDescriptor::with_serializer(
        desc.name(),
        Arc::new(ttl_reduce),
        Arc::new(TtlSerializer::new(
            desc.serializer().clone(),
            cfg.clock.clone(),
        )),
    )
    .with_ttl_storage(storage_for::<T>(cfg));
    Ok(Rc::new(TtlReducingState {
        inner: backend.create_reducing_state::<N, TtlValue<T>>(&stored)?,
        ttl,
    }))
}

/// The aggregating state of `desc` with TTL `cfg` on `backend`.
pub fn aggregating_state<K, B, N, IN, ACC, OUT>(
    backend: &B,
    desc: &AggregatingStateDescriptor<IN, ACC, OUT>,
    cfg: &StateTtlConfig,
) -> StateResult<Rc<dyn InternalAggregatingState<N, IN, OUT>>>
where
    K: StateKey,
    B: KeyedStateBackend<K> + ?Sized,
    N: Namespace,
    IN: 'static,
    ACC: StateValue,
    OUT: 'static,
{
    let ttl = Ttl::new(cfg);
    let stored = AggregatingStateDescriptor::with_serializer(
        desc.name(),
        Arc::new(TtlAggregateFunction {
            function: desc.function().clone(),
            ttl: ttl.clone(),
        }),
        Arc::new(TtlSerializer::new(
            desc.serializer().clone(),
            cfg.clock.clone(),
        )),
    )
    .with_ttl_storage(storage_for::<ACC>(cfg));
    Ok(Rc::new(TtlAggregatingState {
        inner: backend.create_aggregating_state::<N, IN, TtlValue<ACC>, TtlValue<OUT>>(&stored)?,
        ttl,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serializer::SerdeSerializer;

    #[test]
    fn config_validation() {
        assert!(matches!(
            StateTtlConfig::new(Duration::ZERO),
            Err(StateError::InvalidTtlConfig(_))
        ));
        assert!(StateTtlConfig::new(Duration::from_micros(999)).is_err());
        assert!(StateTtlConfig::new(Duration::MAX).is_err());
        let c = StateTtlConfig::new(Duration::from_millis(1)).unwrap();
        assert!(c.clone().with_incremental_cleanup(0, false).is_err());
        assert!(
            c.clone()
                .with_compaction_filter_cleanup(0, Duration::ZERO)
                .is_err()
        );
        assert_eq!(c.cleanup(), &CleanupStrategies::default());
        let off = c.disable_cleanup_in_background();
        assert!(!off.cleanup().full_snapshot);
        assert!(off.cleanup().incremental.is_none() && off.cleanup().compaction_filter.is_none());
    }

    #[test]
    fn system_clock_follows_wall_time() {
        let before = wall_ms();
        let now = SystemClock.now_ms();
        std::thread::sleep(Duration::from_millis(30));
        let later = SystemClock.now_ms();
        // Anchored at the wall clock, moving forward with it (coarse resolution).
        assert!((now - before).abs() < 1000, "{now} vs {before}");
        assert!(later >= now + 20, "{later} vs {now}");
    }

    #[test]
    fn expiry_boundary_is_inclusive() {
        let c = StateTtlConfig::new(Duration::from_millis(10)).unwrap();
        assert!(!c.is_expired(100, 109));
        assert!(c.is_expired(100, 110));
        assert!(!c.is_expired(i64::MAX - 1, i64::MAX - 1));
    }

    #[test]
    fn serializer_round_trip_and_toggle_migration() {
        let inner = SerdeSerializer::<String>::arc();
        let s = TtlSerializer::new(inner.clone(), Arc::new(ManualClock::new(42)));
        let mut b = Vec::new();
        let v = TtlValue {
            value: "x".to_string(),
            last_access: -5,
        };
        s.serialize_into(&v, &mut b).unwrap();
        assert_eq!(stored_timestamp(&b), Some(-5));
        assert_eq!(s.deserialize(&b).unwrap(), v);
        assert!(s.deserialize(&b[..7]).is_err());
        assert!(matches!(
            s.resolve_compatibility(&s.snapshot()),
            Compatibility::CompatibleAsIs
        ));
        assert_eq!(ttl_inner_snapshot(&s.snapshot()), Some(inner.snapshot()));
        // TTL switched on: plain bytes are read and stamped.
        let Compatibility::CompatibleAfterMigration(r) = s.resolve_compatibility(&inner.snapshot())
        else {
            panic!("expected migration")
        };
        let mut plain = Vec::new();
        inner.serialize_into(&"y".to_string(), &mut plain).unwrap();
        let m = r(&plain).unwrap();
        assert_eq!(m.value, "y");
        assert_eq!(m.last_access, 42);
        // Another inner type stays incompatible.
        let other = SerdeSerializer::<u8>::arc();
        assert!(matches!(
            s.resolve_compatibility(&TtlSerializer::new(other, Arc::new(SystemClock)).snapshot()),
            Compatibility::Incompatible(_)
        ));
    }

    #[test]
    fn payload_filter_per_kind() {
        let ttl = 10;
        let stamp = |ts: i64, v: u8| {
            let mut b = ts.to_le_bytes().to_vec();
            b.push(v);
            b
        };
        assert!(
            filter_expired_payload(StateKind::Value, &stamp(0, 1), ttl, 10, "t")
                .unwrap()
                .is_none()
        );
        assert!(
            filter_expired_payload(StateKind::Value, &stamp(1, 1), ttl, 10, "t")
                .unwrap()
                .is_some()
        );
        let mut list = Vec::new();
        put_varint(&mut list, 3);
        for (ts, v) in [(0, 1), (5, 2), (0, 3)] {
            put_vbytes(&mut list, &stamp(ts, v)).unwrap();
        }
        let kept = filter_expired_payload(StateKind::List, &list, ttl, 12, "t")
            .unwrap()
            .unwrap();
        assert_eq!(
            payload::list_items(&kept, "t").unwrap(),
            vec![&stamp(5, 2)[..]]
        );
        assert!(
            filter_expired_payload(StateKind::List, &list, ttl, 100, "t")
                .unwrap()
                .is_none()
        );
        let mut map = Vec::new();
        put_varint(&mut map, 2);
        for (k, ts) in [(7u8, 0i64), (8, 5)] {
            put_vbytes(&mut map, &[k]).unwrap();
            put_vbytes(&mut map, &stamp(ts, k)).unwrap();
        }
        let kept = filter_expired_payload(StateKind::Map, &map, ttl, 12, "t")
            .unwrap()
            .unwrap();
        let pairs = payload::map_pairs(&kept, "t").unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].0, &[8u8][..]);
    }
}

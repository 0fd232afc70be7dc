//! Setting an op's state up as Flink's benchmarks do: the descriptors of each variant
//! (TTL, fixed-width integers), a freshly set-up backend, and the wait for RocksDB's
//! background work to settle before timing.

use std::time::{Duration, Instant};

use anyhow::Result;
use flowstate_core::backend::{KeyedBackendFactory, KeyedStateBackend};
use flowstate_core::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::serializer::{FixedIntegerSerializer, SerdeSerializer};
use flowstate_core::state::VoidNamespace;
use flowstate_core::ttl::StateTtlConfig;

use crate::config;

use super::{Data, Kind};

/// The TTL of `--ttl` runs: long enough that nothing expires while measuring, with
/// every default (OnCreateAndWrite, NeverReturnExpired, background cleanups on,
/// system clock), so the figures are the cost of TTL's bookkeeping.
pub(super) fn bench_ttl() -> Result<StateTtlConfig> {
    Ok(StateTtlConfig::new(Duration::from_secs(3600))?)
}

/// How a variant declares its state: with or without TTL, and with the default
/// serializer for the `u64`s it stores (postcard varints: 9 or 10 bytes for the random
/// full-range values here) or [`FixedIntegerSerializer`] (8 bytes, as Flink's
/// `LongSerializer` and the raw baseline write them).
#[derive(Clone, Copy, Default)]
pub(super) struct Shape<'a> {
    /// The TTL on the state, if any.
    pub(super) ttl: Option<&'a StateTtlConfig>,
    /// Whether the `u64`s are stored by [`FixedIntegerSerializer`].
    pub(super) fixed: bool,
}

pub(super) fn value_desc(shape: Shape<'_>) -> ValueStateDescriptor<u64> {
    let d = if shape.fixed {
        ValueStateDescriptor::with_serializer("valueState", FixedIntegerSerializer::arc())
    } else {
        ValueStateDescriptor::new("valueState")
    };
    match shape.ttl {
        Some(t) => d.with_ttl(t.clone()),
        None => d,
    }
}
pub(super) fn list_desc(shape: Shape<'_>) -> ListStateDescriptor<u64> {
    let d = if shape.fixed {
        ListStateDescriptor::with_serializer("listState", FixedIntegerSerializer::arc())
    } else {
        ListStateDescriptor::new("listState")
    };
    match shape.ttl {
        Some(t) => d.with_ttl(t.clone()),
        None => d,
    }
}
pub(super) fn map_desc(shape: Shape<'_>) -> MapStateDescriptor<u64, f64> {
    let d = if shape.fixed {
        MapStateDescriptor::with_serializers(
            "mapState",
            FixedIntegerSerializer::arc(),
            SerdeSerializer::arc(),
        )
    } else {
        MapStateDescriptor::new("mapState")
    };
    match shape.ttl {
        Some(t) => d.with_ttl(t.clone()),
        None => d,
    }
}

/// Whether op `op`'s state grows with every invocation, so that each timed run starts
/// from a freshly set-up state: otherwise the faster of two subjects works on longer
/// lists than the other, and the longer the suite has run, the longer all of them
/// (`listAddAll` adds 100 elements a call: its figure moved threefold with the order
/// of the runs).
pub(super) fn resets(op: &str) -> bool {
    matches!(op, "listAdd" | "listAppend" | "listAddAll")
}

/// Whether op `op`'s state is compacted before each timed run: the list ops', as
/// Flink's `ListStateBenchmark` compacts its list state before each iteration
/// ("make sure only one sst file left ... to prevent the spike caused by different key
/// distribution in multiple sst files"), and its `Value`/`MapStateBenchmark` do not.
/// Without it the kilobyte writes of `listUpdate` and `listAddAll` started each timed
/// second with whatever level-0 files and compactions the seconds before had left.
pub(super) fn compacts(kind: Kind) -> bool {
    kind == Kind::List
}

/// Compacting a backend's state now, for [`compacts`].
pub(crate) trait CompactState {
    /// Compacts the storage of state `name` into one sorted run and returns when that
    /// is done (nothing to do for a backend without one).
    fn compact_state(&self, name: &str) -> Result<()>;
}

impl CompactState for flowstate_heap::HeapKeyedStateBackend<u64> {
    fn compact_state(&self, _name: &str) -> Result<()> {
        Ok(())
    }
}

impl CompactState for flowstate_rocksdb::RocksDbKeyedStateBackend<u64> {
    fn compact_state(&self, name: &str) -> Result<()> {
        Ok(flowstate_rocksdb::RocksDbKeyedStateBackend::compact_state(
            self, name,
        )?)
    }
}

/// A backend from `f` with `setup`'s state for `kind`.
pub(super) fn fresh<F: KeyedBackendFactory>(
    f: &F,
    d: &Data,
    kind: Kind,
    shape: Shape<'_>,
) -> Result<F::Backend<u64>> {
    let b = f.create(config(128, KeyGroupRange::all(128)?))?;
    setup(&b, d, kind, shape)?;
    settle(|| b.properties());
    Ok(b)
}

/// Waits (at most five minutes) until RocksDB has no flush or compaction running or
/// pending, by `properties` (a backend's, or the raw baseline's database's; the heap
/// backend has none and returns at once). Each subject is set up and settled before
/// the next is set up: otherwise whichever subject is timed while its own or another
/// set-up's compactions still run (5,000,000 map entries take seconds) loses a
/// third to a half on the map scans, and which one that is changed from run to run.
/// (`measure` settles every subject again before each timed run, with [`wait_idle`].)
/// Flink's benchmark does not wait; its warm-up iterations run during them.
pub(super) fn settle(properties: impl Fn() -> Vec<(&'static str, u64)>) {
    let waited = wait_idle(&properties);
    let figures = properties();
    if let Some((_, files)) = figures.iter().find(|(n, _)| *n == "level0_files") {
        eprintln!(
            "[state] background work settled after {:.1} s; {files} level-0 files",
            waited.as_secs_f64()
        );
    }
}

/// Waits as [`settle`] does, without a word; returns how long it waited (nothing for
/// a subject without figures: the heap backend, the bare maps).
pub(super) fn wait_idle(properties: impl Fn() -> Vec<(&'static str, u64)>) -> Duration {
    let started = Instant::now();
    if properties().is_empty() {
        return Duration::ZERO;
    }
    // Idle three polls in a row: a flush that ends can schedule a compaction.
    let mut idle = 0;
    while idle < 3 && started.elapsed() < Duration::from_secs(300) {
        if flowstate_rocksdb::background_idle(&properties()) {
            idle += 1;
        } else {
            idle = 0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

pub(super) fn setup<B: KeyedStateBackend<u64>>(
    b: &B,
    d: &Data,
    kind: Kind,
    shape: Shape<'_>,
) -> Result<()> {
    match kind {
        Kind::Value => {
            let s = b.value_state::<VoidNamespace, u64>(&value_desc(shape))?;
            for (i, k) in d.setup_keys.iter().enumerate() {
                b.set_current_key(*k)?;
                s.update(d.value(i))?;
            }
        }
        Kind::List => {
            let s = b.list_state::<VoidNamespace, u64>(&list_desc(shape))?;
            for (i, k) in d.setup_keys.iter().enumerate() {
                b.set_current_key(*k)?;
                s.add(d.value(i))?;
            }
        }
        Kind::Map => {
            let s = b.map_state::<VoidNamespace, u64, f64>(&map_desc(shape))?;
            for k in &d.setup_keys {
                b.set_current_key(*k)?;
                for (mk, mv) in d.map_keys.iter().zip(&d.map_values) {
                    s.put(*mk, *mv)?;
                }
            }
        }
    }
    Ok(())
}

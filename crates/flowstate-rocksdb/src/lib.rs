//! Flowstate's embedded RocksDB keyed state backend.
//!
//! State larger than memory, like Flink's `EmbeddedRocksDBStateBackend`: one column
//! family per state; keys laid out as `key group | key | namespace | user key` so a key
//! group is a contiguous range (see `keys.rs`); list appends through a merge operator;
//! writes without a WAL (checkpoints give durability). Checkpoints are canonical,
//! native, or incremental (only SST files not uploaded by an earlier completed
//! checkpoint are uploaded; see `snapshot.rs`). Savepoints are always canonical, so state
//! moves between this backend and the heap backend in both directions. State TTL is
//! cleaned up by a compaction filter (`ttl_filter.rs`). The keyed operator's prefetch reads
//! the next records' values with one `MultiGet` (`prefetch.rs`); every state holds its
//! puts, deletes and list appends in memory up to a budget and writes them as one sorted
//! `WriteBatch` (`deferred.rs`), and keeps the entries it read from RocksDB, up to a
//! budget, to answer its next gets of them (`cache.rs`).

mod backend;
mod buffers;
mod cache;
mod db;
mod deferred;
mod keys;
mod offline;
mod options;
mod plain;
mod prefetch;
mod properties;
mod scan;
mod snapshot;
mod spill;
mod states;
#[cfg(test)]
mod test_keys;
mod ttl_filter;

pub use backend::RocksDbKeyedStateBackend;
pub use flowstate_core::snapshot::ClaimMode;
pub use offline::native_as_canonical;
pub use options::{Compression, RocksDbOptions, SnapshotMode};
pub use plain::PlainDb;
pub use properties::background_idle;
pub use snapshot::{NativeSnapshot, RocksDbSnapshot};
pub use spill::SpillSet;

//! Flowstate's heap keyed state backend.
//!
//! Keyed state lives in memory as live Rust values: per state, one hash table per key
//! group (`hashbrown::HashTable` keyed by key and namespace). Snapshots are
//! asynchronous and copy-on-write at key-group granularity: the synchronous part
//! clones one `Arc` per key group per state and copies no entry; a write to a key group
//! the running snapshot has not written yet copies that key group's table once. See
//! `table/mod.rs` for the design and `docs/formats.md` for the canonical snapshot format it
//! writes, which every backend reads.

mod backend;
mod states;
mod table;
mod user_map;

pub use backend::{HeapBackendFactory, HeapKeyedStateBackend};

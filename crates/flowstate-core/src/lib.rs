//! Flowstate's core state model.
//!
//! This crate holds what every state backend and the runtime share:
//! - [`keygroup`]: key groups, Flink's routing and range arithmetic;
//! - [`serializer`]: serializers, their stored snapshots and compatibility on restore;
//! - [`descriptor`]: how states are declared;
//! - [`state`]: the keyed state interfaces (value, list, map, reducing, aggregating);
//! - [`backend`]: the keyed state backend interface both backends implement;
//! - [`operator`]: operator state (even-split, union, broadcast);
//! - [`raw`]: raw keyed state written by operators per key group;
//! - [`schema`]: state schemas derived from serde types, and evolution between them;
//! - [`registry`]: reference counting of files shared between checkpoints;
//! - [`mod@format`] and [`snapshot`]: the canonical key-group-indexed snapshot format;
//! - [`storage`]: the checkpoint-storage interface;
//! - [`ttl`]: state time-to-live (config, stored form, decorators, cleanup helpers).
//!
//! Backends live in their own crates (`flowstate-heap`, ...); the object-store based
//! checkpoint storage in `flowstate-storage`.

pub mod backend;
pub mod checkpoint_history;
pub mod checkpoint_metadata;
pub mod descriptor;
pub mod error;
pub mod format;
pub mod keygroup;
pub mod native_manifest;
pub mod operator;
pub mod raw;
pub mod registry;
pub mod rocksdb_list;
pub mod schema;
pub mod serializer;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod ttl;

pub use error::{SerializationError, StateError, StateResult, StorageError};

//! Flowstate's state processor: checkpoints and savepoints read, written and
//! transformed offline, without the job's code (Flink's State Processor API, with
//! the schemas Flowstate stores beside every state doing the job's classes' work).
//!
//! - [`reader`]: open a checkpoint or savepoint ([`Snapshot`]) and read its keyed
//!   entries (canonical, or native RocksDB through a temporary instance) and operator
//!   state as stored;
//! - [`describe()`]: operators by uid, states with kinds, types, schemas, TTL, entries
//!   and bytes per key group, timers, operator and broadcast state;
//! - [`dump()`]: every entry rendered through its stored schema, as JSON lines or CSV;
//! - [`typed`]: the same entries read into the user's own types;
//! - [`bootstrap`]: a new savepoint from records (Rust iterators or JSON lines);
//! - [`transform()`]: a new savepoint from an existing one, changed (uids, states,
//!   keys, values, max parallelism);
//! - [`writer`]: how every new savepoint is written and verified before it counts.
//!
//! Inputs are only ever read; outputs go to a new `savepoints/sp-<id>` directory of a
//! checkpoint directory, never over anything.

pub mod bootstrap;
pub mod describe;
pub mod dump;
mod error;
pub mod reader;
pub mod transform;
pub mod typed;
pub mod writer;

pub use bootstrap::Bootstrap;
pub use describe::{Description, describe};
pub use dump::{DumpFilter, DumpFormat, DumpStats, Record, dump, records};
pub use error::{ProcessorError, Result};
pub use reader::Snapshot;
pub use transform::{Transform, TransformPlan, transform};
pub use typed::{read_lists, read_maps, read_values};
pub use writer::{SavepointWriter, Written};

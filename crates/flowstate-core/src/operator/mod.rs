//! Operator (non-keyed) state: per-instance lists, union lists and broadcast maps.
//!
//! Mirrors Flink's `OperatorStateStore`. On restore with another parallelism:
//! - even-split list state: the concatenation of all old instances' lists (in instance
//!   order) is cut into contiguous parts whose sizes differ by at most one, earlier
//!   instances taking the larger parts;
//! - union list state: every instance receives the whole concatenation;
//! - broadcast state: every instance receives one copy (the lowest old instance's).
//!
//! Restored states stay encoded until registered, where the serializer's compatibility
//! is checked first; states never registered are carried into later snapshots
//! unchanged, so nothing restored is dropped by accident.
//!
//! ```
//! use flowstate_core::operator::OperatorStateStore;
//! use flowstate_core::descriptor::ListStateDescriptor;
//! use flowstate_core::state::ListState;
//! let store = OperatorStateStore::new(0);
//! let offsets = store.list_state(&ListStateDescriptor::<u64>::new("offsets")).unwrap();
//! offsets.add(42).unwrap();
//! assert_eq!(offsets.get().unwrap(), vec![42]);
//! ```

mod file;
mod redistribute;
mod states;
mod store;

pub use file::{
    EncodedState, Item, OperatorSnapshot, OperatorStateHandle, OperatorStateMode,
    encode_operator_file, parse_operator_file,
};
pub use redistribute::{even_split, merge_operator_states};
pub use states::{BroadcastState, OperatorListState};
pub use store::OperatorStateStore;

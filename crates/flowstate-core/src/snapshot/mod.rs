//! Keyed-state snapshots in the canonical format, shared by every backend.
//!
//! A snapshot of one instance's keyed state is one key-group-indexed file
//! ([`crate::format`]) whose header lists the states (name, kind, serializer
//! snapshots) and whose block for each key group holds one section per state:
//! `state id | byte length | entries`. An entry is `key | namespace | payload`, each
//! length-prefixed; the payload of value, reducing and aggregating state is the
//! serialized value, of list state the element count and elements, of map state the
//! pair count and pairs. `docs/formats.md` specifies every byte.
//!
//! Backends produce a [`KeyedSnapshot`] in their synchronous phase (capturing what to
//! write without copying it) and the caller runs [`KeyedSnapshot::write`] on any thread.
//! Restores go through [`read_keyed_state`], which reads only the key groups a backend
//! owns and hands back raw sections per state; a backend decodes them when the state is
//! registered, after checking serializer compatibility.

mod entries;
mod handle;
mod meta;
pub mod payload;
mod read;
mod write;

pub use entries::{EntryEncoder, RawEntry, check_entry_key_group, section_entries};
pub use handle::{ClaimMode, KeyedStateHandle, SharedFile, SnapshotFormat};
pub use meta::{
    StateMetaInfo, check_kind, check_state_name, decode_header, encode_header, put_serializer,
    read_serializer,
};
pub(crate) use read::open_overlapping;
pub use read::{
    RestoredFileHeader, RestoredKeyedState, RestoredState, check_header_consistency,
    read_keyed_state, visit_keyed_state,
};
pub use write::{AsyncKeyedSnapshot, KeyedSnapshot, KeyedStateWriter};

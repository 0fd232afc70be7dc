//! Serializers for state values whose schemas are kept outside Rust types, for users
//! who already describe their records in Avro or protobuf:
//! - [`AvroSerializer`]: Avro binary datums; its snapshot stores the writer schema, and
//!   a restore with another schema resolves it by Avro's rules (fields added with a
//!   default, removed, reordered by name, renamed through aliases, `int`→`long`→
//!   `float`→`double` promotion, enum symbols added with a default, unions), checked
//!   before any state is read;
//! - [`ProstSerializer`]: protobuf messages through `prost`; protobuf's wire format is
//!   its own evolution (fields are numbered: added fields read as their default,
//!   removed ones are skipped), so a restore of the same message type reads stored
//!   bytes as they are.
//!
//! Either can be given to any state descriptor with `with_serializer`.

mod avro;
mod protobuf;

pub use avro::{AVRO_IDENTITY, AvroError, AvroSerializer};
pub use protobuf::{PROTOBUF_IDENTITY, ProstSerializer};

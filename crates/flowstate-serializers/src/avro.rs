//! Avro: values are Avro binary datums of a schema given by the user; the snapshot
//! stores that (writer) schema so a later reader schema can resolve against it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use flowstate_core::error::SerializationError;
use flowstate_core::serializer::{
    Compatibility, Incompatibility, SerializerSnapshot, TypeSerializer,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Identity of [`AvroSerializer`] snapshots; the schema bytes are the writer schema's
/// JSON.
pub const AVRO_IDENTITY: &str = "flowstate.avro";
const AVRO_VERSION: u32 = 1;

/// An Avro schema that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid Avro schema: {0}")]
pub struct AvroError(#[source] pub apache_avro::Error);

/// Serializes `T` (any serde type matching the schema) as Avro binary datums.
pub struct AvroSerializer<T> {
    schema: Arc<Schema>,
    json: String,
    _marker: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for AvroSerializer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AvroSerializer({})", self.schema.canonical_form())
    }
}

impl<T> AvroSerializer<T> {
    /// A serializer writing datums of the schema in `schema_json`.
    pub fn new(schema_json: &str) -> Result<Self, AvroError> {
        let schema = Schema::parse_str(schema_json).map_err(AvroError)?;
        Ok(Self::with_schema(schema))
    }

    /// A serializer writing datums of `schema`.
    pub fn with_schema(schema: Schema) -> Self {
        // A parsed schema always renders back to JSON.
        let json = serde_json::to_string(&schema).unwrap_or_default();
        AvroSerializer {
            schema: Arc::new(schema),
            json,
            _marker: PhantomData,
        }
    }

    /// The schema values are written with.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
}

fn ser_err(e: impl fmt::Display) -> SerializationError {
    SerializationError::new(format!("avro: {e}"))
}

/// Reads one datum of `writer` (resolved to `reader` when given) as `T`; every byte
/// must be used.
fn read<T: DeserializeOwned>(
    writer: &Schema,
    reader: Option<&Schema>,
    bytes: &[u8],
) -> Result<T, SerializationError> {
    let mut input = bytes;
    let mut value = GenericDatumReader::builder(writer)
        .build()
        .and_then(|r| r.read_value(&mut input))
        .map_err(ser_err)?;
    if !input.is_empty() {
        return Err(ser_err(format!("{} trailing bytes", input.len())));
    }
    if let Some(reader) = reader {
        // apache-avro resolves records by field name only; Avro's spec also matches a
        // reader field's aliases, so renamed fields are renamed here first.
        rename_aliased(&mut value, reader);
        value = value.resolve(reader).map_err(ser_err)?;
    }
    apache_avro::from_value(&value).map_err(ser_err)
}

/// Renames fields of records in `value` (decoded with the writer schema) that the
/// reader schema knows under another name, through its fields' `aliases`.
fn rename_aliased(value: &mut Value, reader: &Schema) {
    match (value, reader) {
        (Value::Record(fields), Schema::Record(r)) => {
            for rf in &r.fields {
                if !fields.iter().any(|(n, _)| *n == rf.name)
                    && let Some(slot) = fields.iter_mut().find(|(n, _)| rf.aliases.contains(n))
                {
                    slot.0 = rf.name.clone();
                }
                if let Some((_, v)) = fields.iter_mut().find(|(n, _)| *n == rf.name) {
                    rename_aliased(v, &rf.schema);
                }
            }
        }
        (Value::Array(items), Schema::Array(a)) => {
            items.iter_mut().for_each(|v| rename_aliased(v, &a.items));
        }
        (Value::Map(m), Schema::Map(s)) => {
            m.values_mut().for_each(|v| rename_aliased(v, &s.types));
        }
        (Value::Union(_, v), Schema::Union(u)) => {
            // The record branch of the reader's union, when there is one.
            if let Some(branch) = u.variants().iter().find(|b| matches!(b, Schema::Record(_))) {
                rename_aliased(v, branch);
            }
        }
        _ => {}
    }
}

impl<T: Serialize + DeserializeOwned + 'static> TypeSerializer<T> for AvroSerializer<T> {
    fn serialize_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerializationError> {
        GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|w| w.write_ser(out, value))
            .map(|_| ())
            .map_err(ser_err)
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerializationError> {
        read(&self.schema, None, bytes)
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot {
            identity: AVRO_IDENTITY.to_string(),
            version: AVRO_VERSION,
            schema: self.json.as_bytes().to_vec(),
        }
    }

    /// Same schema (canonical form): as is. Another one the current schema can read
    /// by Avro's resolution rules: after migration, each value read with the stored
    /// schema as writer and this one as reader. Anything else: incompatible.
    fn resolve_compatibility(&self, previous: &SerializerSnapshot) -> Compatibility<T> {
        if previous.identity != AVRO_IDENTITY || previous.version > AVRO_VERSION {
            return Compatibility::Incompatible(
                format!(
                    "stored by `{}` version {}, now `{AVRO_IDENTITY}` version {AVRO_VERSION}",
                    previous.identity, previous.version
                )
                .into(),
            );
        }
        let writer = match std::str::from_utf8(&previous.schema)
            .map_err(|e| e.to_string())
            .and_then(|s| Schema::parse_str(s).map_err(|e| e.to_string()))
        {
            Ok(w) => Arc::new(w),
            Err(e) => {
                return Compatibility::Incompatible(
                    format!("stored Avro schema is malformed: {e}").into(),
                );
            }
        };
        if writer.canonical_form() == self.schema.canonical_form() {
            return Compatibility::CompatibleAsIs;
        }
        if let Err(e) = SchemaCompatibility::can_read(&writer, &self.schema) {
            return Compatibility::Incompatible(Incompatibility {
                path: None,
                change: format!("Avro schema resolution: {e}"),
            });
        }
        let reader = self.schema.clone();
        Compatibility::CompatibleAfterMigration(Arc::new(move |b: &[u8]| {
            read(&writer, Some(&reader), b)
        }))
    }
}

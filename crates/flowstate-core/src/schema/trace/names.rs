//! Field names of a traced type, recorded by serializing a sample value.
//!
//! The tracer learns a struct's layout from its `Deserialize`, which lists every
//! accepted name (aliases included, sorted per field) and so cannot say which is the
//! field's own. Serializing a value names each field exactly once, in order; the
//! tracer serializes the sample values it builds and takes the names from here.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;
use serde::ser;

/// Names seen: per struct, and per (enum, variant index) for struct variants.
#[derive(Default, Debug)]
pub(super) struct Names {
    pub(super) structs: HashMap<&'static str, Vec<&'static str>>,
    pub(super) variants: HashMap<(&'static str, u32), Vec<&'static str>>,
}

impl Names {
    /// Records the field names of every struct in `value`.
    pub(super) fn record<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), String> {
        value.serialize(Rec(self)).map_err(|e| e.0)
    }
}

#[derive(Debug)]
pub(super) struct RecError(String);

impl fmt::Display for RecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecError {}

impl ser::Error for RecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        RecError(msg.to_string())
    }
}

type R = Result<(), RecError>;

struct Rec<'a>(&'a mut Names);

/// Collects one struct's field names while recursing into its values.
struct Fields<'a> {
    names: &'a mut Names,
    key: Key,
    seen: Vec<&'static str>,
}

enum Key {
    Struct(&'static str),
    Variant(&'static str, u32),
    None,
}

impl Fields<'_> {
    fn done(self) -> R {
        match self.key {
            Key::Struct(n) => {
                self.names.structs.insert(n, self.seen);
            }
            Key::Variant(n, i) => {
                self.names.variants.insert((n, i), self.seen);
            }
            Key::None => {}
        }
        Ok(())
    }
}

macro_rules! prim {
    ($($m:ident: $t:ty),*) => {
        $(fn $m(self, _v: $t) -> R { Ok(()) })*
    };
}

impl<'a> ser::Serializer for Rec<'a> {
    type Ok = ();
    type Error = RecError;
    type SerializeSeq = Fields<'a>;
    type SerializeTuple = Fields<'a>;
    type SerializeTupleStruct = Fields<'a>;
    type SerializeTupleVariant = Fields<'a>;
    type SerializeMap = Fields<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Fields<'a>;

    prim!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_f32: f32,
        serialize_f64: f64, serialize_char: char, serialize_str: &str, serialize_bytes: &[u8]);

    fn serialize_none(self) -> R {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _n: &'static str, _i: u32, _v: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _n: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _n: &'static str,
        _i: u32,
        _variant: &'static str,
        v: &T,
    ) -> R {
        v.serialize(self)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Fields<'a>, RecError> {
        Ok(self.fields(Key::None))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Fields<'a>, RecError> {
        Ok(self.fields(Key::None))
    }
    fn serialize_tuple_struct(self, _n: &'static str, _len: usize) -> Result<Fields<'a>, RecError> {
        Ok(self.fields(Key::None))
    }
    fn serialize_tuple_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Fields<'a>, RecError> {
        Ok(self.fields(Key::None))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Fields<'a>, RecError> {
        Ok(self.fields(Key::None))
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Fields<'a>, RecError> {
        Ok(self.fields(Key::Struct(name)))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Fields<'a>, RecError> {
        Ok(self.fields(Key::Variant(name, index)))
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

impl<'a> Rec<'a> {
    fn fields(self, key: Key) -> Fields<'a> {
        Fields {
            names: self.0,
            key,
            seen: Vec::new(),
        }
    }
}

impl Fields<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(Rec(&mut *self.names))
    }
}

macro_rules! seq_like {
    ($tr:ident, $m:ident) => {
        impl ser::$tr for Fields<'_> {
            type Ok = ();
            type Error = RecError;
            fn $m<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
                self.element(v)
            }
            fn end(self) -> R {
                self.done()
            }
        }
    };
}

seq_like!(SerializeSeq, serialize_element);
seq_like!(SerializeTuple, serialize_element);
seq_like!(SerializeTupleStruct, serialize_field);
seq_like!(SerializeTupleVariant, serialize_field);

impl ser::SerializeMap for Fields<'_> {
    type Ok = ();
    type Error = RecError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> R {
        self.element(k)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        self.element(v)
    }
    fn end(self) -> R {
        self.done()
    }
}

macro_rules! struct_like {
    ($tr:ident) => {
        impl ser::$tr for Fields<'_> {
            type Ok = ();
            type Error = RecError;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> R {
                self.seen.push(key);
                self.element(v)
            }
            fn skip_field(&mut self, key: &'static str) -> R {
                Err(RecError(format!(
                    "field `{key}` is skipped when serializing: its layout depends on the value"
                )))
            }
            fn end(self) -> R {
                self.done()
            }
        }
    };
}

struct_like!(SerializeStruct);
struct_like!(SerializeStructVariant);

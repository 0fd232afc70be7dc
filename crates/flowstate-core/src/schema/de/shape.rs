//! The `Deserializer` over one stored value: what the target type asks for is checked
//! against the stored shape (strict leaves, lossless widening, `T` → `Option<T>`).

use std::collections::HashSet;

use serde::de::{self, Visitor};

use super::access::{EnumAccess, Items, MapAccess, SeqAccess, StructAccess};
use super::reader::{Reader, Seg, signed_rank, unsigned_rank, zero_sized};
use super::{DecodeError, Result};
use crate::schema::{Field, Schema, Shape, TypeDef};

pub(super) struct ShapeDe<'r, 'de, 's> {
    pub(super) r: &'r mut Reader<'de, 's>,
    pub(super) schema: &'s Schema,
    pub(super) shape: &'s Shape,
}

impl<'r, 'de, 's> ShapeDe<'r, 'de, 's> {
    fn mismatch(&self, want: &str) -> DecodeError {
        let stored = self.describe();
        let hint = if matches!(self.shape, Shape::Option(_)) && !want.starts_with("Option") {
            " (an optional value cannot become required)"
        } else if unsigned_rank(self.shape).is_some() || signed_rank(self.shape).is_some() {
            " (integers may only widen, keeping their sign)"
        } else if *self.shape == Shape::F64 && want == "f32" {
            " (floats may only widen)"
        } else {
            ""
        };
        self.r
            .err(format!("stored {stored} cannot be read as {want}{hint}"))
    }

    fn describe(&self) -> String {
        match self.shape {
            Shape::Named(n) => match self.schema.def(n) {
                Some(d) => format!("{} `{n}`", d.kind()),
                None => format!("`{n}`"),
            },
            s => s.to_string(),
        }
    }

    fn def(&self) -> Result<(&'s str, &'s TypeDef)> {
        match self.shape {
            Shape::Named(n) => self
                .schema
                .def(n)
                .map(|d| (n.as_str(), d))
                .ok_or_else(|| self.r.err(format!("type `{n}` is not in the schema"))),
            _ => Err(self.r.err("not a named type")),
        }
    }

    fn count(&mut self, item: &Shape) -> Result<usize> {
        let n = self.r.len()?;
        if n > self.r.input.len() && !zero_sized(self.schema, item, &mut HashSet::new()) {
            return Err(self.r.err(format!(
                "count {n} exceeds the {} bytes left",
                self.r.input.len()
            )));
        }
        Ok(n)
    }

    fn uint<V: Visitor<'de>>(
        self,
        rank: u8,
        want: &str,
        visit: impl FnOnce(V, u128) -> Result<V::Value>,
        v: V,
    ) -> Result<V::Value> {
        match unsigned_rank(self.shape) {
            Some(r) if r <= rank => {
                let n = self.r.unsigned(self.shape)?;
                visit(v, n)
            }
            _ => Err(self.mismatch(want)),
        }
    }

    fn sint<V: Visitor<'de>>(
        self,
        rank: u8,
        want: &str,
        visit: impl FnOnce(V, i128) -> Result<V::Value>,
        v: V,
    ) -> Result<V::Value> {
        match signed_rank(self.shape) {
            Some(r) if r <= rank => {
                let n = self.r.signed(self.shape)?;
                visit(v, n)
            }
            _ => Err(self.mismatch(want)),
        }
    }

    /// Hands over the inner value of an option or newtype (one level deeper).
    fn inner<T>(
        self,
        shape: &'s Shape,
        f: impl FnOnce(ShapeDe<'_, 'de, 's>) -> Result<T>,
    ) -> Result<T> {
        let ShapeDe { r, schema, .. } = self;
        r.enter(Seg::Inner)?;
        let res = f(ShapeDe {
            r: &mut *r,
            schema,
            shape,
        })
        .map_err(|e| r.tag(e));
        r.path.pop();
        res
    }

    fn seq<V: Visitor<'de>>(self, items: Items<'s>, visitor: V) -> Result<V::Value> {
        let ShapeDe { r, schema, .. } = self;
        let res = visitor.visit_seq(SeqAccess {
            r: &mut *r,
            schema,
            items,
            pos: 0,
        });
        res.map_err(|e| r.tag(e))
    }

    fn fields<V: Visitor<'de>>(self, fields: &'s [Field], visitor: V) -> Result<V::Value> {
        let ShapeDe { r, schema, .. } = self;
        let res = visitor.visit_map(StructAccess {
            r: &mut *r,
            schema,
            fields,
            next: 0,
        });
        res.map_err(|e| r.tag(e))
    }
}

macro_rules! uint_method {
    ($name:ident, $rank:expr, $want:expr, $visit:ident, $t:ty) => {
        fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            // Widening only: the stored value always fits.
            self.uint($rank, $want, |v, n| v.$visit(n as $t), visitor)
        }
    };
}

macro_rules! sint_method {
    ($name:ident, $rank:expr, $want:expr, $visit:ident, $t:ty) => {
        fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            self.sint($rank, $want, |v, n| v.$visit(n as $t), visitor)
        }
    };
}

impl<'de> de::Deserializer<'de> for ShapeDe<'_, 'de, '_> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.shape {
            Shape::Unit => visitor.visit_unit(),
            Shape::Bool => self.deserialize_bool(visitor),
            Shape::I8 | Shape::I16 | Shape::I32 | Shape::I64 => {
                let n = self.r.signed(self.shape)?;
                visitor.visit_i64(n as i64)
            }
            Shape::I128 => self.deserialize_i128(visitor),
            Shape::U8 | Shape::U16 | Shape::U32 | Shape::U64 => {
                let n = self.r.unsigned(self.shape)?;
                visitor.visit_u64(n as u64)
            }
            Shape::U128 => self.deserialize_u128(visitor),
            Shape::F32 => self.deserialize_f32(visitor),
            Shape::F64 => self.deserialize_f64(visitor),
            Shape::Char => self.deserialize_char(visitor),
            Shape::Str => self.deserialize_str(visitor),
            Shape::Bytes => self.deserialize_bytes(visitor),
            Shape::Option(_) => self.deserialize_option(visitor),
            Shape::Seq(_) => self.deserialize_seq(visitor),
            Shape::Map { .. } => self.deserialize_map(visitor),
            Shape::Tuple(items) => self.seq(Items::List(items), visitor),
            Shape::Named(_) => {
                let (_, def) = self.def()?;
                match def {
                    TypeDef::UnitStruct => visitor.visit_unit(),
                    TypeDef::NewtypeStruct(inner) => {
                        self.inner(inner, |d| visitor.visit_newtype_struct(d))
                    }
                    TypeDef::TupleStruct(items) => self.seq(Items::List(items), visitor),
                    TypeDef::Struct(fields) => self.fields(fields, visitor),
                    TypeDef::Enum(_) => self.deserialize_enum("enum", &[], visitor),
                }
            }
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if *self.shape != Shape::Bool {
            return Err(self.mismatch("bool"));
        }
        match self.r.byte()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            b => Err(self.r.err(format!("bool byte {b}"))),
        }
    }

    sint_method!(deserialize_i8, 1, "i8", visit_i8, i8);
    sint_method!(deserialize_i16, 2, "i16", visit_i16, i16);
    sint_method!(deserialize_i32, 3, "i32", visit_i32, i32);
    sint_method!(deserialize_i64, 4, "i64", visit_i64, i64);
    sint_method!(deserialize_i128, 5, "i128", visit_i128, i128);
    uint_method!(deserialize_u8, 1, "u8", visit_u8, u8);
    uint_method!(deserialize_u16, 2, "u16", visit_u16, u16);
    uint_method!(deserialize_u32, 3, "u32", visit_u32, u32);
    uint_method!(deserialize_u64, 4, "u64", visit_u64, u64);
    uint_method!(deserialize_u128, 5, "u128", visit_u128, u128);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if *self.shape != Shape::F32 {
            return Err(self.mismatch("f32"));
        }
        let b = self.r.take(4)?;
        visitor.visit_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.shape {
            Shape::F32 => {
                let b = self.r.take(4)?;
                visitor.visit_f64(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            Shape::F64 => {
                let b = self.r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                visitor.visit_f64(f64::from_le_bytes(a))
            }
            _ => Err(self.mismatch("f64")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if *self.shape != Shape::Char {
            return Err(self.mismatch("char"));
        }
        let s = self.r.str()?;
        let mut it = s.chars();
        match (it.next(), it.next()) {
            (Some(c), None) => visitor.visit_char(c),
            _ => Err(self.r.err("a char is not one character")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if *self.shape != Shape::Str {
            return Err(self.mismatch("String"));
        }
        visitor.visit_borrowed_str(self.r.str()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if *self.shape != Shape::Bytes {
            return Err(self.mismatch("bytes"));
        }
        let n = self.r.len()?;
        visitor.visit_borrowed_bytes(self.r.take(n)?)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.shape {
            Shape::Option(inner) => match self.r.byte()? {
                0 => visitor.visit_none(),
                1 => self.inner(inner, |d| visitor.visit_some(d)),
                b => Err(self.r.err(format!("option tag {b}"))),
            },
            // `T` → `Option<T>`: every stored value is present.
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.shape {
            Shape::Unit => visitor.visit_unit(),
            Shape::Named(_) if matches!(self.def()?.1, TypeDef::UnitStruct) => visitor.visit_unit(),
            _ => Err(self.mismatch("()")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        match self.shape {
            Shape::Unit => visitor.visit_unit(),
            Shape::Named(_) if matches!(self.def()?.1, TypeDef::UnitStruct) => visitor.visit_unit(),
            _ => Err(self.mismatch(&format!("unit struct `{name}`"))),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if let Shape::Named(_) = self.shape
            && let TypeDef::NewtypeStruct(inner) = self.def()?.1
        {
            return self.inner(inner, |d| visitor.visit_newtype_struct(d));
        }
        Err(self.mismatch(&format!("newtype struct `{name}`")))
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.shape {
            Shape::Seq(item) => {
                let n = self.count(item)?;
                self.seq(Items::Same(item, n), visitor)
            }
            _ => Err(self.mismatch("a sequence")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        match self.shape {
            Shape::Tuple(items) if items.len() == len => self.seq(Items::List(items), visitor),
            _ => Err(self.mismatch(&format!("a tuple or array of {len}"))),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        if let Shape::Named(_) = self.shape
            && let TypeDef::TupleStruct(items) = self.def()?.1
            && items.len() == len
        {
            return self.seq(Items::List(items), visitor);
        }
        Err(self.mismatch(&format!("tuple struct `{name}` of {len}")))
    }

    fn deserialize_map<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        let Shape::Map { key, value } = self.shape else {
            return Err(self.mismatch("a map"));
        };
        let left = self.count(&Shape::Tuple(Vec::new()))?;
        let ShapeDe { r, schema, .. } = self;
        let res = visitor.visit_map(MapAccess {
            r: &mut *r,
            schema,
            key,
            value,
            left,
        });
        res.map_err(|e| r.tag(e))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        if let Shape::Named(_) = self.shape
            && let TypeDef::Struct(fields) = self.def()?.1
        {
            return self.fields(fields, visitor);
        }
        Err(self.mismatch(&format!("struct `{name}`")))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let (enum_name, variants) = match self.shape {
            Shape::Named(_) => match self.def()? {
                (n, TypeDef::Enum(vs)) => (n, vs),
                _ => return Err(self.mismatch(&format!("enum `{name}`"))),
            },
            _ => return Err(self.mismatch(&format!("enum `{name}`"))),
        };
        let ShapeDe { r, schema, .. } = self;
        let res = visitor.visit_enum(EnumAccess {
            r: &mut *r,
            schema,
            enum_name,
            variants,
        });
        res.map_err(|e| r.tag(e))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.r.skip(self.schema, self.shape)?;
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        // Postcard is not: types such as `IpAddr` choose their compact form.
        false
    }
}

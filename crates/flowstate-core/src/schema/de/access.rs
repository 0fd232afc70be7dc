//! Serde access types that hand a stored sequence, map, struct (as a map keyed by
//! field name) or enum (by variant name) to the target type's visitor.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::reader::{Reader, Seg};
use super::shape::ShapeDe;
use super::{DecodeError, Result};
use crate::schema::{Field, Schema, Shape, VariantBody};

pub(super) enum Items<'s> {
    Same(&'s Shape, usize),
    List(&'s [Shape]),
}

pub(super) struct SeqAccess<'r, 'de, 's> {
    pub(super) r: &'r mut Reader<'de, 's>,
    pub(super) schema: &'s Schema,
    pub(super) items: Items<'s>,
    pub(super) pos: usize,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, 'de, '_> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let (shape, seg) = match &self.items {
            Items::Same(s, n) if self.pos < *n => (*s, Seg::Elem),
            Items::List(l) if self.pos < l.len() => (&l[self.pos], Seg::Pos(self.pos)),
            _ => return Ok(None),
        };
        self.pos += 1;
        self.r.enter(seg)?;
        let v = seed
            .deserialize(ShapeDe {
                r: &mut *self.r,
                schema: self.schema,
                shape,
            })
            .map_err(|e| self.r.tag(e));
        self.r.path.pop();
        v.map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(match &self.items {
            Items::Same(_, n) => n - self.pos,
            Items::List(l) => l.len() - self.pos,
        })
    }
}

pub(super) struct MapAccess<'r, 'de, 's> {
    pub(super) r: &'r mut Reader<'de, 's>,
    pub(super) schema: &'s Schema,
    pub(super) key: &'s Shape,
    pub(super) value: &'s Shape,
    pub(super) left: usize,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, 'de, '_> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.r.enter(Seg::Key)?;
        let k = seed
            .deserialize(ShapeDe {
                r: &mut *self.r,
                schema: self.schema,
                shape: self.key,
            })
            .map_err(|e| self.r.tag(e));
        self.r.path.pop();
        k.map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        self.r.enter(Seg::Value)?;
        let v = seed
            .deserialize(ShapeDe {
                r: &mut *self.r,
                schema: self.schema,
                shape: self.value,
            })
            .map_err(|e| self.r.tag(e));
        self.r.path.pop();
        v
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// A struct offered as a map from field name to value, in stored order.
pub(super) struct StructAccess<'r, 'de, 's> {
    pub(super) r: &'r mut Reader<'de, 's>,
    pub(super) schema: &'s Schema,
    pub(super) fields: &'s [Field],
    pub(super) next: usize,
}

impl<'de> de::MapAccess<'de> for StructAccess<'_, 'de, '_> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let Some(f) = self.fields.get(self.next) else {
            return Ok(None);
        };
        let key: de::value::StrDeserializer<'_, DecodeError> = f.name.as_str().into_deserializer();
        self.r.path.push(Seg::Field(&f.name));
        let k = seed.deserialize(key).map_err(|e| self.r.tag(e));
        self.r.path.pop();
        k.map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        let Some(f) = self.fields.get(self.next) else {
            return Err(self.r.err("value asked for past the last field"));
        };
        self.next += 1;
        self.r.enter(Seg::Field(&f.name))?;
        let v = seed
            .deserialize(ShapeDe {
                r: &mut *self.r,
                schema: self.schema,
                shape: &f.shape,
            })
            .map_err(|e| self.r.tag(e));
        self.r.path.pop();
        v
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len() - self.next)
    }
}

pub(super) struct EnumAccess<'r, 'de, 's> {
    pub(super) r: &'r mut Reader<'de, 's>,
    pub(super) schema: &'s Schema,
    pub(super) enum_name: &'s str,
    pub(super) variants: &'s [crate::schema::Variant],
}

impl<'r, 'de, 's> de::EnumAccess<'de> for EnumAccess<'r, 'de, 's> {
    type Error = DecodeError;
    type Variant = VariantAccess<'r, 'de, 's>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self::Variant)> {
        let index = self.r.varint(5, 32)? as u32;
        let Some(v) = self.variants.iter().find(|v| v.index == index) else {
            return Err(self.r.err(format!(
                "variant index {index} is not a variant of `{}`",
                self.enum_name
            )));
        };
        self.r.enter(Seg::Variant(&v.name))?;
        let name: de::value::StrDeserializer<'_, DecodeError> = v.name.as_str().into_deserializer();
        let chosen = match seed.deserialize(name) {
            Ok(c) => c,
            Err(e) => {
                let e = self.r.tag(e);
                self.r.path.pop();
                return Err(e);
            }
        };
        Ok((
            chosen,
            VariantAccess {
                r: self.r,
                schema: self.schema,
                name: &v.name,
                body: &v.body,
            },
        ))
    }
}

pub(super) struct VariantAccess<'r, 'de, 's> {
    pub(super) r: &'r mut Reader<'de, 's>,
    pub(super) schema: &'s Schema,
    pub(super) name: &'s str,
    pub(super) body: &'s VariantBody,
}

impl<'de> VariantAccess<'_, 'de, '_> {
    fn done<T>(self, res: Result<T>) -> Result<T> {
        let res = res.map_err(|e| self.r.tag(e));
        self.r.path.pop();
        res
    }

    fn wrong(&self, want: &str) -> DecodeError {
        let had = match self.body {
            VariantBody::Unit => "no fields",
            VariantBody::Newtype(_) => "one unnamed field",
            VariantBody::Tuple(_) => "unnamed fields",
            VariantBody::Struct(_) => "named fields",
        };
        self.r.err(format!(
            "variant `{}` had {had} and now has {want}",
            self.name
        ))
    }
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'_, 'de, '_> {
    type Error = DecodeError;

    fn unit_variant(self) -> Result<()> {
        let res = match self.body {
            VariantBody::Unit => Ok(()),
            _ => Err(self.wrong("no fields")),
        };
        self.done(res)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        let res = match self.body {
            VariantBody::Newtype(s) => seed.deserialize(ShapeDe {
                r: &mut *self.r,
                schema: self.schema,
                shape: s,
            }),
            _ => Err(self.wrong("one unnamed field")),
        };
        self.done(res)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        let res = match self.body {
            VariantBody::Tuple(items) if items.len() == len => visitor.visit_seq(SeqAccess {
                r: &mut *self.r,
                schema: self.schema,
                items: Items::List(items),
                pos: 0,
            }),
            _ => Err(self.wrong(&format!("{len} unnamed fields"))),
        };
        self.done(res)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let res = match self.body {
            VariantBody::Struct(fields) => visitor.visit_map(StructAccess {
                r: &mut *self.r,
                schema: self.schema,
                fields,
                next: 0,
            }),
            _ => Err(self.wrong("named fields")),
        };
        self.done(res)
    }
}

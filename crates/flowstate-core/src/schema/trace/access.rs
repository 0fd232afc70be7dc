//! The serde access types the tracer hands a type's `Deserialize`: elements of a
//! sequence, tuple or map, and one variant of an enum.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::shape::{named, unknown};
use super::tracer::{TResult, TraceDe, TraceError, Tracer, err};
use crate::schema::{Shape, VariantBody};

/// Gives `shapes.len()` traced elements.
pub(super) struct Elements<'t> {
    pub(super) t: &'t mut Tracer,
    pub(super) shapes: &'t mut [Shape],
    pub(super) next: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_> {
    type Error = TraceError;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> TResult<Option<S::Value>> {
        let Some(out) = self.shapes.get_mut(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let t = &mut *self.t;
        TraceDe::deeper(t, |t| seed.deserialize(TraceDe { t, out })).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.shapes.len() - self.next)
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> TResult<Option<K::Value>> {
        de::SeqAccess::next_element_seed(self, seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> TResult<V::Value> {
        match de::SeqAccess::next_element_seed(self, seed)? {
            Some(v) => Ok(v),
            None => err("map value without a key"),
        }
    }
}

pub(super) struct EnumTrace<'t> {
    pub(super) t: &'t mut Tracer,
    pub(super) name: &'static str,
    pub(super) index: usize,
}

impl<'de, 't> de::EnumAccess<'de> for EnumTrace<'t> {
    type Error = TraceError;
    type Variant = EnumTrace<'t>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> TResult<(V::Value, Self::Variant)> {
        let names = self.t.variant_names(self.name);
        let Some(variant) = names.get(self.index) else {
            return err("variant out of range");
        };
        let key: de::value::StrDeserializer<'_, TraceError> = variant.into_deserializer();
        Ok((seed.deserialize(key)?, self))
    }
}

impl EnumTrace<'_> {
    fn body(self, body: VariantBody) -> TResult<()> {
        self.t
            .record_variant(self.name, self.index, body)
            .map_err(TraceError)
    }
}

impl<'de> de::VariantAccess<'de> for EnumTrace<'_> {
    type Error = TraceError;

    fn unit_variant(self) -> TResult<()> {
        self.body(VariantBody::Unit)
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> TResult<S::Value> {
        let mut shape = unknown();
        let v = TraceDe::deeper(self.t, |t| seed.deserialize(TraceDe { t, out: &mut shape }))?;
        self.body(VariantBody::Newtype(shape))?;
        Ok(v)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> TResult<V::Value> {
        let mut shapes = vec![unknown(); len];
        let v = visitor.visit_seq(Elements {
            t: &mut *self.t,
            shapes: &mut shapes,
            next: 0,
        })?;
        self.body(VariantBody::Tuple(shapes))?;
        Ok(v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> TResult<V::Value> {
        let mut shapes = vec![unknown(); fields.len()];
        let v = visitor.visit_seq(Elements {
            t: &mut *self.t,
            shapes: &mut shapes,
            next: 0,
        })?;
        self.body(VariantBody::Struct(named(fields, shapes)))?;
        Ok(v)
    }
}

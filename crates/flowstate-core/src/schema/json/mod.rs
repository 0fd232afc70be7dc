//! Stored bytes as JSON and back, through a stored [`Schema`] alone: what offline tools
//! show and accept without the Rust type that wrote the state.
//!
//! The JSON is what `serde_json` makes of the Rust value, so a dump reads like the
//! user's own types: structs are objects by field name, enums externally tagged
//! (`"Unit"`, `{"Newtype": v}`, `{"Tuple": [..]}`, `{"Struct": {..}}`), tuples and
//! tuple structs arrays, newtype structs their inner value, `()` and unit structs
//! `null`, options `null` or the value. Maps are objects when their keys are strings,
//! chars, integers or bools (keys written as strings, as `serde_json` does) and arrays
//! of `[key, value]` pairs otherwise. Integers outside `i64`/`u64` and non-finite floats
//! are strings. Two values `serde_json` itself cannot tell apart stay ambiguous here
//! too: `Some(())` and `None` both show as `null` (and read back as `None`).
//!
//! [`encode`] is the inverse: it accepts exactly what [`render`] produces and writes
//! the postcard bytes of the schema, refusing anything else with the field path.
//!
//! `render.rs` reads bytes into JSON, `encode.rs` writes JSON as bytes.

mod encode;
mod render;

use serde_json::{Map, Value};

use super::de::DecodeError;
use super::{Schema, Shape, TypeDef};

pub use encode::encode;
pub use render::render;

type Result<T> = std::result::Result<T, DecodeError>;

/// Map entries as JSON: an object when `as_object` (keys as strings, as `serde_json`
/// writes scalar keys), else an array of `[key, value]` pairs.
pub fn map_json(pairs: Vec<(Value, Value)>, as_object: bool) -> Value {
    if as_object {
        let mut m = Map::new();
        for (k, v) in pairs {
            m.insert(key_string(k), v);
        }
        Value::Object(m)
    } else {
        Value::Array(
            pairs
                .into_iter()
                .map(|(k, v)| Value::Array(vec![k, v]))
                .collect(),
        )
    }
}

/// Whether map keys of `shape` are written as JSON object keys (strings).
pub(super) fn scalar_key(schema: &Schema, shape: &Shape) -> bool {
    match shape {
        Shape::Str | Shape::Char | Shape::Bool => true,
        Shape::I8 | Shape::I16 | Shape::I32 | Shape::I64 | Shape::I128 => true,
        Shape::U8 | Shape::U16 | Shape::U32 | Shape::U64 | Shape::U128 => true,
        Shape::Named(n) => {
            matches!(schema.def(n), Some(TypeDef::NewtypeStruct(s)) if scalar_key(schema, s))
        }
        _ => false,
    }
}

/// `Some(signed)` when map keys of `shape` are integers.
pub(super) fn integer_key(schema: &Schema, shape: &Shape) -> Option<bool> {
    match shape {
        Shape::I8 | Shape::I16 | Shape::I32 | Shape::I64 | Shape::I128 => Some(true),
        Shape::U8 | Shape::U16 | Shape::U32 | Shape::U64 | Shape::U128 => Some(false),
        Shape::Named(n) => match schema.def(n) {
            Some(TypeDef::NewtypeStruct(s)) => integer_key(schema, s),
            _ => None,
        },
        _ => None,
    }
}

fn key_string(k: Value) -> String {
    match k {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::render::{big_signed, big_unsigned};
    use super::*;
    use crate::schema::trace::trace;
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    enum Kind {
        A,
        B(u16),
        C(i8, String),
        D { x: i32, y: Vec<u8> },
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Wrapper(u32);

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Record {
        b: bool,
        i: (i8, i16, i32, i64),
        u: (u8, u16, u32, u64),
        big: (i128, u128),
        f: f64,
        c: char,
        s: String,
        o: Option<Box<Record>>,
        kinds: Vec<Kind>,
        by_name: BTreeMap<String, Wrapper>,
        by_id: BTreeMap<u64, i32>,
        by_pair: BTreeMap<(u8, u8), bool>,
        unit: (),
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::A),
            any::<u16>().prop_map(Kind::B),
            (any::<i8>(), ".{0,4}").prop_map(|(a, b)| Kind::C(a, b)),
            (any::<i32>(), proptest::collection::vec(any::<u8>(), 0..4))
                .prop_map(|(x, y)| Kind::D { x, y }),
        ]
    }

    fn record(inner: Option<Record>) -> impl Strategy<Value = Record> {
        (
            any::<(bool, (i8, i16, i32, i64), (u8, u16, u32, u64), (i128, u128))>(),
            (-1e9f64..1e9, any::<char>(), ".{0,6}"),
            proptest::collection::vec(kind(), 0..4),
            proptest::collection::btree_map(".{0,3}", any::<u32>().prop_map(Wrapper), 0..3),
            proptest::collection::btree_map(any::<u64>(), any::<i32>(), 0..3),
            proptest::collection::btree_map(any::<(u8, u8)>(), any::<bool>(), 0..3),
        )
            .prop_map(
                move |((b, i, u, big), (f, c, s), kinds, by_name, by_id, by_pair)| Record {
                    b,
                    i,
                    u,
                    big,
                    f,
                    c,
                    s,
                    o: inner.clone().map(Box::new),
                    kinds,
                    by_name,
                    by_id,
                    by_pair,
                    unit: (),
                },
            )
    }

    fn nested() -> impl Strategy<Value = Record> {
        record(None).prop_flat_map(|r| prop_oneof![Just(r.clone()), record(Some(r))])
    }

    proptest! {
        /// Rendering through the traced schema is what serde_json makes of the value
        /// (except for the documented pair form of compound map keys and big
        /// integers), and encoding the rendering gives back the very bytes.
        #[test]
        fn render_matches_serde_json_and_encode_inverts_it(r in nested()) {
            let schema = trace::<Record>().unwrap();
            let bytes = postcard::to_stdvec(&r).unwrap();
            let json = render(&schema, &bytes).unwrap();
            let mut expect = serde_json::to_value(Record { by_pair: BTreeMap::new(), big: (0, 0), o: None, ..r.clone() }).unwrap();
            let mut got = json.clone();
            for v in [&mut expect, &mut got] {
                let m = v.as_object_mut().unwrap();
                m.remove("by_pair");
                m.remove("big");
                m.remove("o");
            }
            prop_assert_eq!(got, expect);
            let pairs: Vec<Value> = r.by_pair.iter().map(|((a, b), v)| serde_json::json!([[a, b], v])).collect();
            prop_assert_eq!(&json["by_pair"], &Value::Array(pairs));
            prop_assert_eq!(&json["big"], &Value::Array(vec![big_signed(r.big.0), big_unsigned(r.big.1)]));
            prop_assert_eq!(encode(&schema, &json).unwrap(), bytes);
        }

        /// Arbitrary bytes never panic the renderer.
        #[test]
        fn arbitrary_bytes_are_refused_or_rendered(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let schema = trace::<Record>().unwrap();
            let _ = render(&schema, &bytes);
        }
    }

    #[test]
    fn schemas_repeating_a_name_are_refused() {
        // A value is found by name (here and in evolution): a repeated name would be
        // ambiguous, and serde never makes one.
        for json in [
            r#"{"v":1,"root":{"named":"S"},"types":{"S":{"struct":[{"name":"a","shape":"u8"},{"name":"a","shape":"str"}]}}}"#,
            r#"{"v":1,"root":{"named":"E"},"types":{"E":{"enum":[{"index":0,"name":"A","body":"unit"},{"index":1,"name":"A","body":{"newtype":"u8"}}]}}}"#,
            r#"{"v":1,"root":{"named":"E"},"types":{"E":{"enum":[{"index":0,"name":"A","body":{"struct":[{"name":"x","shape":"u8"},{"name":"x","shape":"u8"}]}}]}}}"#,
        ] {
            assert!(Schema::from_json(json.as_bytes()).is_err(), "{json}");
        }
    }

    #[test]
    fn encode_names_the_field_path() {
        let schema = trace::<Record>().unwrap();
        let r = Record {
            b: true,
            i: (1, 2, 3, 4),
            u: (1, 2, 3, 4),
            big: (5, 6),
            f: 1.5,
            c: 'x',
            s: "s".into(),
            o: None,
            kinds: vec![Kind::D { x: 1, y: vec![2] }],
            by_name: BTreeMap::new(),
            by_id: BTreeMap::new(),
            by_pair: BTreeMap::new(),
            unit: (),
        };
        let mut json = render(&schema, &postcard::to_stdvec(&r).unwrap()).unwrap();
        json["kinds"][0]["D"]["x"] = Value::from(1u64 << 40);
        let e = encode(&schema, &json).unwrap_err();
        assert_eq!(e.path(), "kinds[]::D.x", "{e}");
        assert!(e.message.contains("out of range for i32"), "{e}");
        json["kinds"][0] = Value::String("Z".into());
        let e = encode(&schema, &json).unwrap_err();
        assert!(e.message.contains("`Z` is not a variant"), "{e}");
    }
}

//! The value types of the evolution matrix: version 1 and version 2 of each change,
//! and the conversions a migration must produce.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::seven;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct A1 {
    pub a: u32,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct AddField2 {
    pub a: u32,
    #[serde(default = "seven")]
    pub b: u64,
    #[serde(default)]
    pub c: String,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Remove1 {
    pub a: u32,
    pub gone: String,
    pub also_gone: Vec<u8>,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Order1 {
    pub a: u32,
    pub b: String,
    pub c: bool,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Order2 {
    pub c: bool,
    pub b: String,
    pub a: u32,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Rename1 {
    pub count: u32,
    pub label: String,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Rename2 {
    #[serde(alias = "count")]
    pub total: u32,
    pub label: String,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub enum Variant1 {
    #[default]
    Idle,
    Busy(u32),
    Done {
        at: i64,
    },
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub enum Variant2 {
    #[default]
    Idle,
    Paused(String),
    Busy(u32),
    Done {
        at: i64,
    },
    Failed,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Widen1 {
    pub u: u32,
    pub i: i32,
    pub f: f32,
    pub small: u8,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Widen2 {
    pub u: u64,
    pub i: i64,
    pub f: f64,
    pub small: u128,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Inner1 {
    pub x: u32,
    pub s: String,
    pub kind: Variant1,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Inner2 {
    #[serde(alias = "s")]
    pub name: String,
    pub x: Option<u64>,
    pub kind: Variant2,
    #[serde(default)]
    pub extra: Vec<u8>,
}
/// Every change at once, nested inside a struct, a `Vec`, a map value and an
/// `Option`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Nested1 {
    pub inner: Inner1,
    pub items: Vec<Inner1>,
    pub by_name: BTreeMap<String, Inner1>,
    pub maybe: Option<Inner1>,
    pub dropped: (u8, String),
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Nested2 {
    pub by_name: BTreeMap<String, Inner2>,
    pub inner: Inner2,
    pub maybe: Option<Inner2>,
    pub items: Vec<Inner2>,
    #[serde(default)]
    pub added: BTreeMap<u32, String>,
}

pub fn inner1(i: u64) -> Inner1 {
    Inner1 {
        x: i as u32 * 3,
        s: format!("s{i}"),
        kind: match i % 3 {
            0 => Variant1::Idle,
            1 => Variant1::Busy(i as u32),
            _ => Variant1::Done { at: -(i as i64) },
        },
    }
}

pub fn inner2(o: &Inner1) -> Inner2 {
    Inner2 {
        name: o.s.clone(),
        x: Some(u64::from(o.x)),
        kind: variant2(&o.kind),
        extra: Vec::new(),
    }
}

pub fn variant2(v: &Variant1) -> Variant2 {
    match v {
        Variant1::Idle => Variant2::Idle,
        Variant1::Busy(n) => Variant2::Busy(*n),
        Variant1::Done { at } => Variant2::Done { at: *at },
    }
}

pub fn nested1(i: u64) -> Nested1 {
    Nested1 {
        inner: inner1(i),
        items: (0..i % 4).map(|j| inner1(i + j)).collect(),
        by_name: (0..i % 3)
            .map(|j| (format!("k{j}"), inner1(i * j)))
            .collect(),
        maybe: i.is_multiple_of(2).then(|| inner1(i + 9)),
        dropped: (i as u8, "x".into()),
    }
}

pub fn nested2(o: &Nested1) -> Nested2 {
    Nested2 {
        by_name: o
            .by_name
            .iter()
            .map(|(k, v)| (k.clone(), inner2(v)))
            .collect(),
        inner: inner2(&o.inner),
        maybe: o.maybe.as_ref().map(inner2),
        items: o.items.iter().map(inner2).collect(),
        added: BTreeMap::new(),
    }
}

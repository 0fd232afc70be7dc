//! Pins the key group of fixed keys. If hashing or key serialization ever changes,
//! this fails: such a change would silently misplace state on restore.
//!
//! Regenerate (only for a deliberate, migrated format change) with
//! `FLOWSTATE_BLESS=1 cargo test -p flowstate-core --test key_group_golden`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use flowstate_core::keygroup::{key_group_for_serialized_key, key_hash};
use flowstate_core::serializer::{SerdeSerializer, TypeSerializer};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The fixture, found at run time (cargo sets `CARGO_MANIFEST_DIR` for the tests it
/// runs): the compiled-in path is that of whichever checkout built a cached binary.
fn golden() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("tests/golden/key_groups.tsv")
}

fn row<T: Serialize + DeserializeOwned + 'static>(kind: &str, shown: String, key: &T) -> String {
    let mut bytes = Vec::new();
    SerdeSerializer::<T>::new()
        .serialize_into(key, &mut bytes)
        .unwrap();
    format!(
        "{kind}\t{shown}\t{:08x}\t{}\t{}",
        key_hash(&bytes),
        key_group_for_serialized_key(&bytes, 128),
        key_group_for_serialized_key(&bytes, 32768)
    )
}

fn rows() -> Vec<String> {
    let mut out =
        vec!["# kind\tkey\thash\tkey group (maxP 128)\tkey group (maxP 32768)".to_string()];
    for s in [
        "",
        "a",
        "b",
        "alice",
        "bob",
        "carol",
        "user-1",
        "user-2",
        "user-42",
        "card:4111111111111111",
        "session/2026-11-21",
        "ünïcødé",
        "日本語",
        "emoji 🚀",
        "with\ttab",
        "x".repeat(100).as_str(),
        "The quick brown fox",
        "flowstate",
        "key group",
        "0",
    ] {
        out.push(row("String", format!("{s:?}"), &s.to_string()));
    }
    for n in [
        0u64,
        1,
        2,
        3,
        127,
        128,
        255,
        256,
        65535,
        1 << 32,
        123_456_789,
        u64::MAX,
    ] {
        out.push(row("u64", n.to_string(), &n));
    }
    for n in [0i32, -1, 1, i32::MIN, i32::MAX, 42] {
        out.push(row("i32", n.to_string(), &n));
    }
    for n in [-5i64, 5, i64::MIN, i64::MAX] {
        out.push(row("i64", n.to_string(), &n));
    }
    for (a, b) in [
        ("alice", 1u32),
        ("alice", 2),
        ("bob", 1),
        ("", 0),
        ("z", u32::MAX),
    ] {
        out.push(row(
            "(String,u32)",
            format!("({a:?},{b})"),
            &(a.to_string(), b),
        ));
    }
    for (a, b) in [(0u64, 0u64), (1, 2), (2, 1), (u64::MAX, 7), (1000, 1000)] {
        out.push(row("(u64,u64)", format!("({a},{b})"), &(a, b)));
    }
    out
}

#[test]
fn key_groups_are_pinned() {
    let actual = rows().join("\n") + "\n";
    assert!(rows().len() > 50, "at least 50 keys are pinned");
    if std::env::var_os("FLOWSTATE_BLESS").is_some() {
        std::fs::write(golden(), &actual).unwrap();
    }
    let expected =
        std::fs::read_to_string(golden()).expect("golden file (bless with FLOWSTATE_BLESS=1)");
    for (a, e) in actual.lines().zip(expected.lines()) {
        assert_eq!(
            a, e,
            "key group assignment changed: state would be misplaced on restore"
        );
    }
    assert_eq!(actual.lines().count(), expected.lines().count());
}

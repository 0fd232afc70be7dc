//! Pins the bytes of `FixedIntegerSerializer` (format `flowstate.fixed-integer`
//! version 1, `docs/formats.md`): each row of `golden/fixed_integers_v1.tsv` must be
//! written as its bytes by this build, and its bytes must read back as its value. A
//! change to either direction would misread state, or misplace map entries whose user
//! keys are these bytes.
//!
//! The fixture is never rewritten in place: a new format version gets a fixture of its
//! own beside this one, which later builds must still read. Write a new one with
//! `FLOWSTATE_BLESS=1` (only when the file does not exist yet).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::fmt::Write as _;

use flowstate_core::serializer::{
    FIXED_INTEGER_IDENTITY, FIXED_INTEGER_VERSION, FixedInteger, FixedIntegerSerializer,
    TypeSerializer,
};

fn golden() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("tests/golden/fixed_integers_v1.tsv")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `bytes` read by the serializer of `T`, shown as the fixture shows values.
fn read<T: FixedInteger + std::fmt::Display>(bytes: &[u8]) -> String {
    FixedIntegerSerializer::<T>::new()
        .deserialize(bytes)
        .unwrap()
        .to_string()
}

/// One row per value: type, value, bytes; and a check that the bytes read back.
struct Rows(Vec<String>);

impl Rows {
    fn add<T: FixedInteger + std::fmt::Display + PartialEq + std::fmt::Debug>(&mut self, v: T) {
        let s = FixedIntegerSerializer::<T>::new();
        let mut bytes = Vec::new();
        s.serialize_into(&v, &mut bytes).unwrap();
        assert_eq!(s.deserialize(&bytes).unwrap(), v);
        self.0
            .push(format!("{}\t{v}\t{}", T::KIND.name(), hex(&bytes)));
    }
}

fn rows() -> Vec<String> {
    let mut r = Rows(vec!["# type\tvalue\tbytes (hex)".to_string()]);
    for v in [0u8, 1, 127, 128, u8::MAX] {
        r.add(v);
    }
    for v in [0u16, 1, 256, u16::MAX] {
        r.add(v);
    }
    for v in [0u32, 7, 0x0102_0304, u32::MAX] {
        r.add(v);
    }
    for v in [
        0u64,
        1,
        0x0102_0304_0506_0708,
        0x9e37_79b9_7f4a_7c15,
        u64::MAX,
    ] {
        r.add(v);
    }
    for v in [i8::MIN, -1, 0, 1, i8::MAX] {
        r.add(v);
    }
    for v in [i16::MIN, -300, 0, 300, i16::MAX] {
        r.add(v);
    }
    for v in [i32::MIN, -1, 0, 1, i32::MAX] {
        r.add(v);
    }
    for v in [i64::MIN, -1_000_000_007, -1, 0, 1, i64::MAX] {
        r.add(v);
    }
    // The snapshot stored with the state: identity, version, schema bytes.
    let snapshot = FixedIntegerSerializer::<i64>::new().snapshot();
    r.0.push(format!(
        "snapshot\t{}/{}\t{}",
        snapshot.identity,
        snapshot.version,
        hex(&snapshot.schema)
    ));
    r.0
}

#[test]
fn fixed_integer_bytes_are_pinned() {
    let path = golden();
    if std::env::var_os("FLOWSTATE_BLESS").is_some() && !path.exists() {
        std::fs::write(&path, rows().join("\n") + "\n").unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).expect("golden file (write with FLOWSTATE_BLESS=1)");
    let actual = rows();
    assert!(actual.len() > 40);
    assert_eq!(
        expected.lines().collect::<Vec<_>>(),
        actual,
        "fixed-width integer bytes changed"
    );
    // And the committed bytes read back as their values, by the type they name.
    for line in expected.lines().skip(1) {
        let [ty, value, bytes]: [&str; 3] =
            line.split('\t').collect::<Vec<_>>().try_into().unwrap();
        let bytes = unhex(bytes);
        let shown = match ty {
            "u8" => read::<u8>(&bytes),
            "u16" => read::<u16>(&bytes),
            "u32" => read::<u32>(&bytes),
            "u64" => read::<u64>(&bytes),
            "i8" => read::<i8>(&bytes),
            "i16" => read::<i16>(&bytes),
            "i32" => read::<i32>(&bytes),
            "i64" => read::<i64>(&bytes),
            "snapshot" => {
                assert_eq!(
                    value,
                    format!("{FIXED_INTEGER_IDENTITY}/{FIXED_INTEGER_VERSION}")
                );
                assert_eq!(bytes, b"i64");
                continue;
            }
            other => panic!("unknown type {other}"),
        };
        assert_eq!(shown, value, "{line}");
    }
}

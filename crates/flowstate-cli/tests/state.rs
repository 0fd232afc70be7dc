//! `flowstate state ...` on a real run of the `counts` job: list, describe, dump,
//! transform (max parallelism, dropped uid) and bootstrap from a dump, each output
//! read back and restored by the job; bad input fails with a message and writes
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

fn flowstate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = flowstate(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `key -> value` of the `count-sum` state in a dump.
fn count_sums(dump: &str) -> BTreeMap<String, String> {
    dump.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["state"], "count-sum");
            (v["key"].to_string(), v["value"].to_string())
        })
        .collect()
}

#[test]
fn state_commands_on_a_real_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let status = common::job(d, 2, "rocksdb", 200, 6000, 1000)
        .status()
        .unwrap();
    assert!(status.success());
    let ck = d.join("ck");

    let ls = ok(&["state", "ls", s(&ck)]);
    for want in [
        "counts",
        "value count-sum",
        "event timers _timer_state/event",
        "events",
        "source-splits",
        "out",
    ] {
        assert!(ls.contains(want), "{want} in\n{ls}");
    }
    let described: serde_json::Value =
        serde_json::from_str(&ok(&["state", "describe", s(&ck), "--json"])).unwrap();
    let counts = described["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["uid"] == "counts")
        .unwrap();
    assert_eq!(counts["keyed_format"], "native");
    let cs = counts["keyed_states"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "count-sum")
        .unwrap();
    assert_eq!(cs["entries"], 1200);
    assert!(cs["value_schema"]["root"].is_object(), "{cs}");

    let dump = ok(&[
        "state",
        "dump",
        s(&ck),
        "--uid",
        "counts",
        "--state",
        "count-sum",
    ]);
    let before = count_sums(&dump);
    assert_eq!(before.len(), 1200);
    let one = ok(&[
        "state",
        "dump",
        s(&ck),
        "--uid",
        "counts",
        "--state",
        "count-sum",
        "--key",
        "42",
    ]);
    assert_eq!(
        count_sums(&one),
        before
            .iter()
            .filter(|(k, _)| *k == "42")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    );
    let csv = ok(&[
        "state",
        "dump",
        s(&ck),
        "--uid",
        "events",
        "--format",
        "csv",
    ]);
    assert_eq!(csv.lines().count(), 3, "{csv}");

    // Max parallelism 128 -> 256; the source's position and the sink's pending
    // transaction (files of the first run's output directory) dropped.
    let out = d.join("t");
    let sp = PathBuf::from(
        ok(&[
            "state",
            "transform",
            s(&ck),
            "--out",
            s(&out),
            "--max-parallelism",
            "256",
            "--drop-uid",
            "events",
            "--drop-uid",
            "out",
        ])
        .trim(),
    );
    assert!(sp.ends_with("savepoints/sp-1"), "{}", sp.display());
    let after = count_sums(&ok(&[
        "state",
        "dump",
        s(&sp),
        "--uid",
        "counts",
        "--state",
        "count-sum",
    ]));
    assert_eq!(after, before);
    let ls = ok(&["state", "ls", s(&sp)]);
    assert!(!ls.contains("events"), "{ls}");
    // The job restores it with its max parallelism, and refuses it without.
    let run = |max_p: &str, ckdir: &str| {
        let mut c = common::job(&d.join(ckdir), 3, "heap", 200, 600, 1000);
        c.args(["--from", s(&sp), "--max-parallelism", max_p])
            .output()
            .unwrap()
    };
    let restored = run("256", "r1");
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let refused = run("128", "r2");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("max parallelism"),
        "{err}"
    );

    // Bootstrap from the dump (a declaration first): the same state back.
    let input = d.join("boot.jsonl");
    let schema = cs["value_schema"].to_string();
    let key_schema = counts["key_schema"].to_string();
    std::fs::write(
        &input,
        format!(
            "{{\"declare\": {{\"operator\": \"counts\", \"state\": \"count-sum\", \"kind\": \"value\", \"key\": {key_schema}, \"value\": {schema}}}}}\n{dump}"
        ),
    )
    .unwrap();
    let boot = PathBuf::from(
        ok(&[
            "state",
            "bootstrap",
            s(&input),
            "--out",
            s(&d.join("b")),
            "--parallelism",
            "2",
        ])
        .trim(),
    );
    let again = count_sums(&ok(&[
        "state",
        "dump",
        s(&boot),
        "--uid",
        "counts",
        "--state",
        "count-sum",
    ]));
    assert_eq!(again, before);

    // Bad requests: a message, a failure, nothing written.
    for (args, why) in [
        (vec!["state", "dump", "/nonexistent/ck"], "nonexistent"),
        (
            vec![
                "state",
                "transform",
                s(&ck),
                "--out",
                s(&d.join("x")),
                "--drop-uid",
                "nope",
            ],
            "no operator `nope`",
        ),
        (
            vec![
                "state",
                "transform",
                s(&ck),
                "--out",
                s(&d.join("x")),
                "--rename-uid",
                "counts",
            ],
            "FROM=TO",
        ),
        (
            vec!["state", "dump", s(&ck), "--key-groups", "9-x"],
            "key group range",
        ),
    ] {
        let out = flowstate(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(why),
            "{args:?}: {err}"
        );
    }
    assert!(!d.join("x").join("savepoints").exists());
}

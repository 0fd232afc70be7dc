//! Connectors: a file split across 1-4 workers yields every line exactly once; CSV and
//! JSON lines parse into typed records, a bad line is a typed error naming its offset;
//! the file sink writes what it gets; Nexmark yields the same events at any
//! parallelism.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::io::Write;

use flowstate_runtime::{FileFormat, JobConfig, RuntimeError, WatermarkStrategy, execute};
use serde::Deserialize;

fn write_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

#[test]
fn every_line_exactly_once_at_any_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    // Lines of 0..40 bytes (some empty), CRLF on some, no newline at the end.
    let lines: Vec<String> = (0..2000)
        .map(|i| "x".repeat((i * 7919) % 41) + &i.to_string())
        .collect();
    let mut text = String::new();
    for (i, l) in lines.iter().enumerate() {
        text.push_str(l);
        if i + 1 < lines.len() {
            text.push_str(if i % 5 == 0 { "\r\n" } else { "\n" });
        }
    }
    let path = write_file(dir.path(), "in.txt", &text);
    let mut expect = lines.clone();
    expect.sort();
    for workers in 1..=4 {
        let p = path.clone();
        let out = execute(JobConfig::default().workers(workers), move |job| {
            job.source_file::<String>(&p, FileFormat::Lines, |_| 0, WatermarkStrategy::None)
                .collect()
        })
        .unwrap();
        assert!(
            out.iter().all(|o| !o.is_empty()),
            "{workers}: every worker reads"
        );
        let mut got: Vec<String> = out.concat();
        got.sort();
        assert_eq!(got, expect, "{workers} workers");
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
struct Row {
    name: String,
    n: u32,
}

#[test]
fn csv_and_json_lines_parse_into_records() {
    let dir = tempfile::tempdir().unwrap();
    #[cfg(feature = "csv")]
    let csv = write_file(dir.path(), "in.csv", "name,n\na,1\n\"b,c\",2\nd,3\n");
    let json = write_file(
        dir.path(),
        "in.jsonl",
        "{\"name\":\"a\",\"n\":1}\n\n{\"name\":\"b,c\",\"n\":2}\n{\"name\":\"d\",\"n\":3}\n",
    );
    let expect = vec![
        Row {
            name: "a".into(),
            n: 1,
        },
        Row {
            name: "b,c".into(),
            n: 2,
        },
        Row {
            name: "d".into(),
            n: 3,
        },
    ];
    // One format heap-only builds without CSV.
    let formats = [
        #[cfg(feature = "csv")]
        (csv, FileFormat::Csv { has_header: true }),
        (json, FileFormat::JsonLines),
    ];
    for (path, format) in formats {
        let out = execute(JobConfig::default().workers(2), move |job| {
            job.source_file::<Row>(&path, format, |r| i64::from(r.n), WatermarkStrategy::None)
                .collect()
        })
        .unwrap();
        let mut got = out.concat();
        got.sort_by_key(|r| r.n);
        assert_eq!(got, expect, "{format:?}");
    }
}

#[test]
fn bad_lines_and_missing_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let json = write_file(
        dir.path(),
        "bad.jsonl",
        "{\"name\":\"a\",\"n\":1}\n{\"name\":\n",
    );
    let missing = dir.path().join("missing.jsonl");
    for (path, what) in [(json, "at byte 19"), (missing, "cannot open")] {
        let err = execute(JobConfig::default(), move |job| {
            job.source_file::<Row>(&path, FileFormat::JsonLines, |_| 0, WatermarkStrategy::None)
                .collect()
        })
        .expect_err("must fail");
        match err {
            RuntimeError::Connector { what: op, source } => {
                assert!(op.contains("file-source"), "{op}");
                let m = source.to_string();
                assert!(m.contains(what), "{m}");
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[test]
fn file_sink_writes_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let od = out_dir.clone();
    execute(JobConfig::default().workers(3), move |job| {
        job.source_vec((0..5000u32).collect(), |_| 0, WatermarkStrategy::None)
            .write_text_files(&od, |n| format!("line {n}"));
    })
    .unwrap();
    let mut got: Vec<String> = Vec::new();
    for i in 0..3 {
        let text = std::fs::read_to_string(out_dir.join(format!("part-{i}-0"))).unwrap();
        got.extend(text.lines().map(String::from));
    }
    got.sort();
    let mut expect: Vec<String> = (0..5000).map(|n| format!("line {n}")).collect();
    expect.sort();
    assert_eq!(got, expect);
}

#[cfg(feature = "nexmark")]
#[test]
fn nexmark_events_are_the_same_at_any_parallelism() {
    let run = |workers: usize| {
        let out = execute(JobConfig::default().workers(workers), |job| {
            job.source_nexmark(2000, 1_000_000, 1000)
                .collect_with_time()
        })
        .unwrap();
        let mut all: Vec<String> = out
            .concat()
            .into_iter()
            .map(|(ts, e)| {
                assert_eq!(ts as u64, e.timestamp());
                assert!(e.timestamp() >= 1_000_000);
                format!("{e:?}")
            })
            .collect();
        all.sort();
        all
    };
    let one = run(1);
    assert_eq!(one.len(), 2000);
    assert_eq!(run(3), one);
    let bids = one.iter().filter(|e| e.starts_with("Bid")).count();
    assert!(bids > 1500, "the Nexmark mix is mostly bids: {bids}");
}

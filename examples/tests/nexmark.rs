//! Exactly-once Nexmark: the `nexmark` job (run by the harness, checkpoints every
//! 100 ms, the file sink) is SIGKILLed at random moments and restarted each time at a
//! random worker count, on both backends; the committed rows must be exactly the
//! reference model's answer on the same events: every row once. q4's updating result
//! must hold each category's updates once each (counts 1, 2, ... n) and end at the
//! model's value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use flowstate_nexmark::{Query, Row, expected};

mod common;
use common::{harness_run, next, wait_or_kill};

/// 20 s of event time: two tumbling windows, ten sliding ones.
const EVENTS: u64 = 200_000;
const KILLS: usize = 4;

fn job(dir: &Path, query: Query, workers: usize, backend: &str) -> Command {
    let mut c = harness_run(env!("CARGO_BIN_EXE_nexmark"), dir, workers, backend, 100);
    c.args(["--query", &query.to_string()])
        .args(["--events", &EVENTS.to_string()])
        .args(["--throttle-every", "50"]);
    c
}

/// The committed lines of the file sink, sorted.
fn committed(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(out).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("part-") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            lines.extend(text.lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

/// `field=value` of a q4 line, as a number.
fn field(line: &str, name: &str) -> u64 {
    line.split(' ')
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .parse()
        .unwrap()
}

/// q4's updates reduced to the last per category, after checking that each
/// category's counts ran 1, 2, ... n, each once.
fn last_updates(lines: Vec<String>) -> Vec<String> {
    let mut per: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
    for l in lines {
        per.entry(field(&l, "category"))
            .or_default()
            .push((field(&l, "count"), l));
    }
    per.into_values()
        .map(|mut updates| {
            updates.sort();
            let counts: Vec<u64> = updates.iter().map(|(c, _)| *c).collect();
            let want: Vec<u64> = (1..=counts.len() as u64).collect();
            assert_eq!(counts, want, "q4 updates of one category, each once");
            updates.pop().unwrap().1
        })
        .collect()
}

fn exactly_once_after_kills(query: Query, backend: &str, mut seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (mut killed, mut runs, mut workers_seen) = (0, 0, Vec::new());
    loop {
        let workers = 1 + (next(&mut seed) % 3) as usize;
        workers_seen.push(workers);
        let mut cmd = job(dir.path(), query, workers, backend);
        runs += 1;
        assert!(
            runs < 60,
            "{query} {backend}: the job keeps finishing before the kill"
        );
        if killed >= KILLS {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "final run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            break;
        }
        let delay = Duration::from_millis(250 + next(&mut seed) % 700);
        if wait_or_kill(cmd.spawn().unwrap(), delay) {
            // Finished before the kill: start over so every kill lands in the run
            // that is checked.
            killed = 0;
            for d in ["ck", "ck.rocksdb-local", "out"] {
                let _ = std::fs::remove_dir_all(dir.path().join(d));
            }
        } else {
            killed += 1;
        }
    }
    eprintln!("{query} {backend}: {runs} runs, workers {workers_seen:?}");
    let mut got = committed(&dir.path().join("out"));
    let mut want: Vec<String> = expected(query, EVENTS).iter().map(Row::to_string).collect();
    want.sort();
    if query == Query::Q4 {
        got = last_updates(got);
    }
    assert!(!want.is_empty());
    if got != want {
        let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
        let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).take(5).collect();
        panic!(
            "{query} {backend}: {} rows, expected {}; missing e.g. {missing:?}; extra e.g. \
             {extra:?}",
            got.len(),
            want.len()
        );
    }
}

#[test]
fn nexmark_queries_are_exact_after_sigkills_heap() {
    for (i, q) in [
        Query::Q2,
        Query::Q4,
        Query::Q5,
        Query::Q7,
        Query::Q8,
        Query::Q11,
    ]
    .into_iter()
    .enumerate()
    {
        exactly_once_after_kills(q, "heap", 0x9e37_79b9_7f4a_7c15 + i as u64);
    }
}

#[test]
fn nexmark_queries_are_exact_after_sigkills_rocksdb() {
    for (i, q) in [Query::Q4, Query::Q5, Query::Q7, Query::Q8, Query::Q11]
        .into_iter()
        .enumerate()
    {
        exactly_once_after_kills(q, "rocksdb", 0x2545_f491_4f6c_dd1d + i as u64);
    }
}

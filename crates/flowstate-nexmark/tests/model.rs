//! Every query, run as a job on 2 workers on both backends, answers exactly what the
//! reference model computes from the same events.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use flowstate_nexmark::{Params, Query, Row, build, expected};
use flowstate_runtime::{BackendChoice, JobConfig, RocksDbOptions, execute};

/// 300,000 events: 30 s of event time (three tumbling windows, fifteen sliding ones).
const EVENTS: u64 = 300_000;

/// Sorted text lines; for q4's updates (an updating result) the last row per
/// category, after checking that each category's counts ran 1, 2, ... without a gap
/// or a repeat.
fn normalize(query: Query, rows: Vec<Row>, updates: bool) -> Vec<String> {
    let rows = if query == Query::Q4 && updates {
        let mut per: std::collections::BTreeMap<u64, Vec<Row>> = Default::default();
        for r in rows {
            let Row::Q4 { category, .. } = &r else {
                panic!("q4 gave {r:?}")
            };
            per.entry(*category).or_default().push(r);
        }
        per.into_values()
            .map(|mut rs| {
                rs.sort_by_key(|r| match r {
                    Row::Q4 { count, .. } => *count,
                    _ => 0,
                });
                for (i, r) in rs.iter().enumerate() {
                    assert!(
                        matches!(r, Row::Q4 { count, .. } if *count == i as u64 + 1),
                        "{rs:?}"
                    );
                }
                rs.pop().unwrap()
            })
            .collect()
    } else {
        rows
    };
    let mut lines: Vec<String> = rows.iter().map(Row::to_string).collect();
    lines.sort();
    lines
}

fn check(query: Query, backend: BackendChoice) {
    let out = execute(
        JobConfig::default().workers(2).backend(backend),
        move |job| build(job, query, &Params::new(EVENTS)).collect(),
    )
    .unwrap();
    let got = normalize(query, out.concat(), true);
    let want = normalize(query, expected(query, EVENTS), false);
    assert!(!want.is_empty(), "{query}: the model answers nothing");
    if got != want {
        let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
        let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).take(5).collect();
        panic!(
            "{query}: {} rows, expected {}; missing e.g. {missing:?}; extra e.g. {extra:?}",
            got.len(),
            want.len()
        );
    }
}

#[test]
fn every_query_equals_the_model_on_heap() {
    for q in Query::ALL {
        check(q, BackendChoice::Heap);
    }
}

#[test]
fn stateful_queries_equal_the_model_on_rocksdb() {
    for q in Query::ALL.into_iter().filter(|q| q.is_stateful()) {
        let dir = tempfile::tempdir().unwrap();
        check(q, BackendChoice::RocksDb(RocksDbOptions::new(dir.path())));
    }
}

#[test]
fn query_names_parse_and_print() {
    for q in Query::ALL {
        assert_eq!(q.to_string().parse::<Query>().unwrap(), q);
    }
    assert_eq!("Q11".parse::<Query>().unwrap(), Query::Q11);
    assert!("q3".parse::<Query>().is_err());
}

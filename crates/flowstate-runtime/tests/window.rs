//! Windows against hand-computed outputs: tumbling, sliding and session windows with
//! out-of-order records, allowed lateness, late-data side outputs and session merging;
//! each on the heap backend and on RocksDB, which must give the same outputs. A
//! tumbling count over random input at 1, 2 and 4 workers equals a simple model.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

mod common;

use std::collections::BTreeMap;

use flowstate_core::descriptor::AggregateFunction;
use flowstate_runtime::{
    Collected, DataStream, JobConfig, KeyedStream, OutputTag, TimeWindow, WatermarkStrategy,
    WindowAssigner, WindowedStream, execute,
};
use proptest::prelude::*;

type Rec = (String, i64, i64); // key, event time, value

fn recs(items: &[(&str, i64, i64)]) -> Vec<Rec> {
    items
        .iter()
        .map(|(k, t, v)| (k.to_string(), *t, *v))
        .collect()
}

fn w(start: i64, end: i64) -> TimeWindow {
    TimeWindow::new(start, end)
}

/// Runs `job` on every backend of this build (the heap, and RocksDB when built with
/// it); asserts all give the same result, returns it.
fn on_both_backends<O: PartialEq + std::fmt::Debug + Send + 'static>(
    job: impl Fn(JobConfig) -> O,
) -> O {
    let dir = tempfile::tempdir().unwrap();
    let mut results = common::backends(dir.path())
        .into_iter()
        .map(|backend| job(JobConfig::default().backend(backend)));
    let heap = results.next().expect("the heap backend is always built");
    for other in results {
        assert_eq!(heap, other, "heap and RocksDB disagree");
    }
    heap
}

/// Main output and late side output, each with event times.
type Outputs<O> = (Vec<(i64, O)>, Vec<(i64, Rec)>);

/// Runs a windowed job on one worker and returns (main output with event times,
/// late side output with event times), main sorted by (time, value) because timers of
/// one timestamp fire in no fixed key order.
fn run_windowed<
    O: Ord + Clone + Send + 'static + serde::Serialize + serde::de::DeserializeOwned,
>(
    config: JobConfig,
    input: Vec<Rec>,
    bound: i64,
    build: impl for<'s> Fn(KeyedStream<'s, String, Rec>, &OutputTag<Rec>) -> DataStream<'s, O>
    + Send
    + Sync
    + 'static,
) -> Outputs<O> {
    let out = execute(config, move |job| {
        let tag = OutputTag::<Rec>::new("late");
        let windowed = job
            .source_vec(
                input.clone(),
                |r: &Rec| r.1,
                WatermarkStrategy::BoundedOutOfOrderness(bound),
            )
            .key_by(|r: &Rec| r.0.clone());
        let result = build(windowed, &tag);
        let late: Collected<(i64, Rec)> = result.side_output(&tag).collect_with_time();
        (result.collect_with_time(), late)
    })
    .unwrap();
    let (main, late): (Vec<_>, Vec<_>) = out.into_iter().unzip();
    let mut main = main.concat();
    main.sort();
    (main, late.concat())
}

fn sum_values(a: &Rec, b: &Rec) -> Rec {
    (a.0.clone(), a.1.max(b.1), a.2 + b.2)
}

fn s(k: &str) -> String {
    k.to_string()
}

#[test]
fn tumbling_reduce_with_late_side_output() {
    let input = recs(&[
        ("a", 1, 1),
        ("a", 5, 2),
        ("b", 3, 10),
        ("a", 12, 4),  // watermark 11: [0,10) fires for a and b
        ("a", 8, 100), // too late for [0,10): side output
        ("a", 15, 8),  // watermark 14
        ("a", 25, 16), // watermark 24: [10,20) fires; [20,30) at the end
    ]);
    let got = on_both_backends(|config| {
        run_windowed(config, input.clone(), 0, |ws, tag| {
            ws.window(WindowAssigner::tumbling(10))
                .side_output_late_data(tag)
                .reduce(sum_values)
        })
    });
    assert_eq!(
        got.0,
        vec![
            (9, (s("a"), w(0, 10), (s("a"), 5, 3))),
            (9, (s("b"), w(0, 10), (s("b"), 3, 10))),
            (19, (s("a"), w(10, 20), (s("a"), 15, 12))),
            (29, (s("a"), w(20, 30), (s("a"), 25, 16))),
        ]
    );
    assert_eq!(got.1, vec![(8, (s("a"), 8, 100))]);
}

#[test]
fn out_of_order_within_bound_and_allowed_lateness_refires() {
    let input = recs(&[
        ("a", 1, 1),   // watermark -5
        ("a", 12, 2),  // watermark 6
        ("a", 7, 4),   // out of order, in time for [0,10)
        ("a", 16, 8),  // watermark 10: [0,10) fires with 1+4
        ("a", 3, 16),  // late but within lateness 5: [0,10) fires again with 21
        ("a", 30, 32), // watermark 24: [10,20) fires (2+8); [0,10) and [10,20) cleaned up
        ("a", 14, 64), // [10,20) is gone: side output
    ]);
    let got = on_both_backends(|config| {
        run_windowed(config, input.clone(), 5, |ws, tag| {
            ws.window(WindowAssigner::tumbling(10))
                .allowed_lateness(5)
                .side_output_late_data(tag)
                .reduce(sum_values)
        })
    });
    assert_eq!(
        got.0,
        vec![
            (9, (s("a"), w(0, 10), (s("a"), 7, 5))),
            (9, (s("a"), w(0, 10), (s("a"), 7, 21))),
            (19, (s("a"), w(10, 20), (s("a"), 16, 10))),
            (39, (s("a"), w(30, 40), (s("a"), 30, 32))),
        ]
    );
    assert_eq!(got.1, vec![(14, (s("a"), 14, 64))]);
}

/// Counts records.
struct Count;
impl AggregateFunction<Rec, u64, u64> for Count {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _value: Rec, acc: &mut u64) {
        *acc += 1;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
}

#[test]
fn sliding_aggregate_counts_every_overlapping_window() {
    // Windows of 10 every 5: a record is in two. [-5,5) fires when a@12 arrives
    // (watermark 6); the rest at the end.
    let input = recs(&[("a", 1, 0), ("a", 7, 0), ("a", 12, 0)]);
    let got = on_both_backends(|config| {
        run_windowed(config, input.clone(), 0, |ws, _| {
            ws.window(WindowAssigner::sliding(10, 5)).aggregate(Count)
        })
    });
    assert_eq!(
        got.0,
        vec![
            (4, (s("a"), w(-5, 5), 1)),
            (9, (s("a"), w(0, 10), 2)),
            (14, (s("a"), w(5, 15), 2)),
            (19, (s("a"), w(10, 20), 1)),
        ]
    );
    assert!(got.1.is_empty());
}

#[test]
fn session_windows_merge_and_late_records_join_or_leave() {
    let input = recs(&[
        ("a", 0, 1),  // [0,10)
        ("a", 5, 2),  // [5,15) merges: [0,15)
        ("b", 3, 3),  // [3,13)
        ("a", 30, 4), // watermark 29 from here on: b's and a's first sessions fire
        ("a", 20, 5), // [20,30) touches [30,40): merged [20,40)
        ("a", 12, 6), // [12,22) is late alone but merges into a live session: [12,40)
        ("a", 1, 7),  // [1,11) touches nothing live and is late: side output
    ]);
    let got = on_both_backends(|config| {
        run_windowed(config, input.clone(), 0, |ws, tag| {
            ws.window(WindowAssigner::session(10))
                .side_output_late_data(tag)
                .process(|k: &String, w: &TimeWindow, items: Vec<Rec>, out| {
                    let mut values: Vec<i64> = items.iter().map(|r| r.2).collect();
                    values.sort();
                    out.push((k.clone(), *w, values));
                    Ok(())
                })
        })
    });
    assert_eq!(
        got.0,
        vec![
            (12, (s("b"), w(3, 13), vec![3])),
            (14, (s("a"), w(0, 15), vec![1, 2])),
            (39, (s("a"), w(12, 40), vec![4, 5, 6])),
        ]
    );
    assert_eq!(got.1, vec![(1, (s("a"), 1, 7))]);
}

#[test]
fn invalid_window_settings_are_typed_errors() {
    for (assigner, lateness) in [
        (WindowAssigner::tumbling(0), 0),
        (WindowAssigner::sliding(10, 0), 0),
        (WindowAssigner::session(-1), 0),
        (WindowAssigner::tumbling(10), -1),
    ] {
        let err = execute(JobConfig::default(), move |job| {
            job.source_vec(vec![(s("a"), 1, 1)], |r: &Rec| r.1, WatermarkStrategy::None)
                .key_by(|r: &Rec| r.0.clone())
                .window(assigner)
                .allowed_lateness(lateness)
                .reduce(sum_values)
                .collect()
        })
        .expect_err("must fail");
        assert!(
            matches!(err, flowstate_runtime::RuntimeError::Config(_)),
            "{assigner:?}: {err}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]
    /// Random keys and times, in order (no late data): per-key tumbling counts at 1, 2
    /// and 4 workers equal a model.
    #[test]
    fn tumbling_counts_equal_a_model(
        data in prop::collection::vec((0u8..20, 0i64..50), 1..600),
    ) {
        let mut t = 0;
        let input: Vec<Rec> = data
            .iter()
            .map(|(k, dt)| {
                t += dt;
                (format!("k{k}"), t, 1)
            })
            .collect();
        let mut model: BTreeMap<(String, TimeWindow), u64> = BTreeMap::new();
        for r in &input {
            for win in WindowAssigner::tumbling(100).assign(r.1) {
                *model.entry((r.0.clone(), win)).or_default() += 1;
            }
        }
        for workers in [1, 2, 4] {
            let input = input.clone();
            let out = execute(JobConfig::default().workers(workers), move |job| {
                job.source_vec(input.clone(), |r: &Rec| r.1, WatermarkStrategy::None)
                    .key_by(|r: &Rec| r.0.clone())
                    .window(WindowAssigner::tumbling(100))
                    .aggregate(Count)
                    .collect()
            })
            .unwrap();
            let got: BTreeMap<(String, TimeWindow), u64> =
                out.into_iter().flatten().map(|(k, w, n)| ((k, w), n)).collect();
            prop_assert_eq!(&got, &model, "{} workers", workers);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// Random keys, times and arrival order (no late data): every session's records
    /// equal a model's on both backends, however sessions were extended, and bridged
    /// (which moves one session's contents into the other's state window).
    #[test]
    fn session_contents_equal_a_model_in_any_arrival_order(
        data in prop::collection::vec((0u8..4, 0i64..400), 1..200),
    ) {
        const GAP: i64 = 10;
        let input: Vec<Rec> = data
            .iter()
            .enumerate()
            .map(|(i, (k, t))| (format!("k{k}"), *t, i as i64))
            .collect();
        let mut by_key: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        for r in &input {
            by_key.entry(r.0.clone()).or_default().push((r.1, r.2));
        }
        let mut model = Vec::new();
        for (k, mut recs) in by_key {
            recs.sort_unstable();
            let mut sessions: Vec<(TimeWindow, Vec<i64>)> = Vec::new();
            for (t, v) in recs {
                match sessions.last_mut() {
                    Some((win, values)) if t <= win.end => {
                        win.end = win.end.max(t + GAP);
                        values.push(v);
                    }
                    _ => sessions.push((w(t, t + GAP), vec![v])),
                }
            }
            for (win, mut values) in sessions {
                values.sort_unstable();
                model.push((win.max_timestamp(), (k.clone(), win, values)));
            }
        }
        model.sort();
        let got = on_both_backends(|config| {
            run_windowed(config, input.clone(), 1_000, |ws, _| {
                ws.window(WindowAssigner::session(GAP))
                    .process(|k: &String, win: &TimeWindow, items: Vec<Rec>, out| {
                        let mut values: Vec<i64> = items.iter().map(|r| r.2).collect();
                        values.sort_unstable();
                        out.push((k.clone(), *win, values));
                        Ok(())
                    })
            })
        });
        prop_assert!(got.1.is_empty());
        prop_assert_eq!(got.0, model);
    }
}

/// Sliding windows of `(size, slide, lateness)`, late records to `tag`, sliced or not.
fn sliding<'s>(
    ws: KeyedStream<'s, String, Rec>,
    tag: &OutputTag<Rec>,
    (size, slide, lateness): (i64, i64, i64),
    sliced: bool,
) -> WindowedStream<'s, String, Rec> {
    let ws = ws
        .window(WindowAssigner::sliding(size, slide))
        .allowed_lateness(lateness)
        .side_output_late_data(tag);
    if sliced { ws.sliced() } else { ws }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Sliced sliding windows against per-window contents: for random keys, times,
    /// arrival order, watermark bound, allowed lateness and window size, a sum (reduce)
    /// and a count (aggregate) give exactly the same results, refires after late
    /// records and late side output, on both backends.
    #[test]
    fn sliced_windows_give_what_per_window_contents_give(
        data in prop::collection::vec((0u8..3, 0i64..300, 0i64..100), 1..150),
        bound in 0i64..40,
        lateness in 0i64..30,
        slices in 1i64..5,
    ) {
        const SLIDE: i64 = 5;
        let size = SLIDE * slices;
        let input: Vec<Rec> =
            data.iter().map(|(k, t, v)| (format!("k{k}"), *t, *v)).collect();
        let shape = (size, SLIDE, lateness);
        let mut sums = Vec::new();
        let mut counts = Vec::new();
        for sliced in [false, true] {
            sums.push(on_both_backends(|config| {
                run_windowed(config, input.clone(), bound, move |ws, tag| {
                    sliding(ws, tag, shape, sliced).reduce(sum_values)
                })
            }));
            counts.push(on_both_backends(|config| {
                run_windowed(config, input.clone(), bound, move |ws, tag| {
                    sliding(ws, tag, shape, sliced).aggregate(Count)
                })
            }));
        }
        prop_assert_eq!(&sums[0], &sums[1]);
        prop_assert_eq!(&counts[0], &counts[1]);
    }
}

/// Slicing is refused where it cannot give a window's result: session windows,
/// process windows, a size not a multiple of the slide, queryable windows.
#[test]
fn windows_that_cannot_be_sliced_are_typed_errors() {
    type Build = fn(KeyedStream<'_, String, Rec>) -> DataStream<'_, String>;
    let builds: [(&str, Build); 4] = [
        ("session", |ks| {
            ks.window(WindowAssigner::session(10))
                .sliced()
                .reduce(sum_values)
                .map(|r| format!("{r:?}"))
        }),
        ("process", |ks| {
            ks.window(WindowAssigner::sliding(10, 5)).sliced().process(
                |k: &String, _: &TimeWindow, _: Vec<Rec>, out| {
                    out.push(k.clone());
                    Ok(())
                },
            )
        }),
        ("size", |ks| {
            ks.window(WindowAssigner::sliding(10, 4))
                .sliced()
                .reduce(sum_values)
                .map(|r| format!("{r:?}"))
        }),
        ("queryable", |ks| {
            ks.window(WindowAssigner::sliding(10, 5))
                .sliced()
                .queryable("sums")
                .reduce(sum_values)
                .map(|r| format!("{r:?}"))
        }),
    ];
    for (what, build) in builds {
        let err = execute(JobConfig::default(), move |job| {
            build(
                job.source_vec(vec![(s("a"), 1, 1)], |r: &Rec| r.1, WatermarkStrategy::None)
                    .key_by(|r: &Rec| r.0.clone()),
            )
            .collect()
        })
        .expect_err("must fail");
        assert!(
            matches!(err, flowstate_runtime::RuntimeError::Config(_)),
            "{what}: {err}"
        );
    }
}

/// Session windows refuse to be queryable: a session's contents live under the window
/// it started as, so a look-up naming the session would miss them.
#[test]
fn queryable_session_windows_are_a_typed_error() {
    let err = execute(JobConfig::default(), |job| {
        job.source_vec(vec![(s("a"), 1, 1)], |r: &Rec| r.1, WatermarkStrategy::None)
            .key_by(|r: &Rec| r.0.clone())
            .window(WindowAssigner::session(10))
            .queryable("sessions")
            .reduce(sum_values)
            .collect()
    })
    .expect_err("must fail");
    assert!(
        matches!(err, flowstate_runtime::RuntimeError::Config(_)),
        "{err}"
    );
}

/// A window's results carry its last millisecond and go out before the watermark
/// that fired it (as Flink emits them before forwarding the watermark): a second
/// window over them, and a timer at the first window's end, see every one of them,
/// even when the watermark jumps far past the window (here, and at the end of input).
#[test]
fn window_results_are_never_late_downstream() {
    let input = recs(&[
        ("a", 1, 1),
        ("b", 3, 10),
        ("a", 12, 4),
        ("a", 95, 100), // watermark jumps from 11 to 94: [10,20) fires, then [0,20)
        ("b", 97, 1000),
    ]);
    let got = on_both_backends(|config| {
        run_windowed(config, input.clone(), 0, |ws, tag| {
            ws.window(WindowAssigner::tumbling(10))
                .side_output_late_data(tag)
                .reduce(sum_values)
                .map(|(_, _, r): (String, TimeWindow, Rec)| (s("sum"), r.1, r.2))
                .key_by(|_: &Rec| String::from("all"))
                .window(WindowAssigner::tumbling(20))
                .reduce(sum_values)
        })
    });
    assert_eq!(
        got.0,
        vec![
            (19, (s("all"), w(0, 20), (s("sum"), 12, 15))),
            (99, (s("all"), w(80, 100), (s("sum"), 97, 1100))),
        ],
        "second-level windows"
    );
    assert!(got.1.is_empty(), "nothing is late: {:?}", got.1);
}

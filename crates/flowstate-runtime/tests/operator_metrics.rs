//! Operators count their records in the process's `metrics` recorder: the keyed
//! broadcast operator counts what comes in on both inputs (each worker takes every
//! broadcast record) and what it emits, as the keyed operator does. Its own test
//! binary, because the recorder is global to the process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use flowstate_runtime::{
    BroadcastContext, JobConfig, KeyedBroadcastProcessFunction, ReadOnlyContext, RuntimeError,
    WatermarkStrategy, execute,
};
use metrics_exporter_prometheus::PrometheusBuilder;

/// Emits one line per keyed record, and counts nothing itself.
struct Echo;

impl KeyedBroadcastProcessFunction<u32, (u32, i64), (u32, i64), String> for Echo {
    fn process_element(
        &mut self,
        (account, _): (u32, i64),
        ctx: &mut ReadOnlyContext<'_, u32, String>,
    ) -> Result<(), RuntimeError> {
        ctx.collect(format!("{account}"));
        Ok(())
    }
    fn process_broadcast_element(
        &mut self,
        _: (u32, i64),
        _: &mut BroadcastContext<'_, String>,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }
}

/// The value of `name{operator="op"}` in a Prometheus rendering.
fn counter(rendered: &str, name: &str, op: &str) -> Option<u64> {
    let prefix = format!("{name}{{operator=\"{op}\"}} ");
    rendered
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn the_keyed_broadcast_operator_counts_its_records() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    let (workers, keyed, broadcast) = (2usize, 50u32, 3u32);
    let out = execute(JobConfig::default().workers(workers), move |job| {
        let rules = job.source_vec(
            (0..broadcast).map(|r| (r, 0i64)).collect(),
            |r: &(u32, i64)| r.1,
            WatermarkStrategy::None,
        );
        let txs = job.source_vec(
            (0..keyed).map(|a| (a, 0i64)).collect(),
            |t: &(u32, i64)| t.1,
            WatermarkStrategy::None,
        );
        txs.key_by(|t: &(u32, i64)| t.0)
            .connect(rules.broadcast())
            .process(Echo)
            .collect()
    })
    .unwrap();
    assert_eq!(out.iter().map(Vec::len).sum::<usize>(), keyed as usize);

    let rendered = handle.render();
    let op = "KeyedBroadcastProcess";
    assert_eq!(
        counter(&rendered, "flowstate_records_in_total", op),
        Some(u64::from(keyed + broadcast * workers as u32)),
        "records in: every keyed record once, every broadcast record on each worker\n{rendered}"
    );
    assert_eq!(
        counter(&rendered, "flowstate_records_out_total", op),
        Some(u64::from(keyed)),
        "{rendered}"
    );
}

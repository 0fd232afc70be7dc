//! The runtime against simple models: keyed results at 1, 2 and 4 workers on both
//! backends equal a single-threaded model; event-time timers fire once, in timestamp
//! order, after the watermark passes them, and not when deleted; processing-time
//! timers fire by the injected clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

mod common;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use flowstate_core::descriptor::{MapStateDescriptor, ValueStateDescriptor};
use flowstate_core::state::{MapState, ValueState};
use flowstate_runtime::{
    Clock, JobConfig, KeyedProcessFunction, ManualClock, OpenContext, ProcessContext, RuntimeError,
    TimerContext, WatermarkStrategy, execute, opened,
};
use proptest::prelude::*;

/// Per key: the sum and count of values, and the distinct values seen (map state);
/// emitted once per key by an event-time timer at the end of input.
#[derive(Default)]
struct SumPerKey {
    sum: Option<Rc<dyn ValueState<(i64, u64)>>>,
    seen: Option<Rc<dyn MapState<i64, ()>>>,
}

const END: i64 = 1 << 40;

impl KeyedProcessFunction<u16, (u16, i64), (u16, i64, u64, usize)> for SumPerKey {
    fn open(&mut self, ctx: &OpenContext<'_, u16>) -> Result<(), RuntimeError> {
        self.sum = Some(ctx.value_state(&ValueStateDescriptor::new("sum"))?);
        self.seen = Some(ctx.map_state(&MapStateDescriptor::new("seen"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        (_, v): (u16, i64),
        ctx: &mut ProcessContext<'_, u16, (u16, i64, u64, usize)>,
    ) -> Result<(), RuntimeError> {
        let s = opened(&self.sum)?;
        let (sum, n) = s.value()?.unwrap_or((0, 0));
        s.update((sum + v, n + 1))?;
        opened(&self.seen)?.put(v, ())?;
        // Registered for every record, fires once per key.
        ctx.timer_service().register_event_time_timer(END)?;
        Ok(())
    }
    fn on_timer(
        &mut self,
        _ts: i64,
        ctx: &mut TimerContext<'_, u16, (u16, i64, u64, usize)>,
    ) -> Result<(), RuntimeError> {
        let (sum, n) = opened(&self.sum)?.value()?.unwrap_or((0, 0));
        let distinct = opened(&self.seen)?.keys()?.len();
        let key = *ctx.current_key();
        ctx.collect((key, sum, n, distinct));
        Ok(())
    }
}

fn run_sums(input: Vec<(u16, i64)>, config: JobConfig) -> Vec<(u16, i64, u64, usize)> {
    let out = execute(config, move |job| {
        job.source_vec(
            input.clone(),
            |(_, v)| *v,
            WatermarkStrategy::BoundedOutOfOrderness(5),
        )
        .key_by(|(k, _): &(u16, i64)| *k)
        .process(SumPerKey::default())
        .collect()
    })
    .unwrap();
    let mut all: Vec<_> = out.into_iter().flatten().collect();
    all.sort_unstable();
    all
}

fn model(input: &[(u16, i64)]) -> Vec<(u16, i64, u64, usize)> {
    let mut m: BTreeMap<u16, (i64, u64, std::collections::BTreeSet<i64>)> = BTreeMap::new();
    for (k, v) in input {
        let e = m.entry(*k).or_default();
        e.0 += v;
        e.1 += 1;
        e.2.insert(*v);
    }
    m.into_iter()
        .map(|(k, (s, n, d))| (k, s, n, d.len()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn keyed_results_equal_the_model_at_any_parallelism_and_backend(
        input in prop::collection::vec((0u16..300, -1000i64..1000), 0..3000)
    ) {
        let expect = model(&input);
        let dir = tempfile::tempdir().unwrap();
        for backend in common::backends(dir.path()) {
            for workers in [1, 2, 4] {
                let got = run_sums(input.clone(), JobConfig::default().workers(workers).backend(backend.clone()));
                prop_assert_eq!(&got, &expect, "{} workers, {:?}", workers, backend);
            }
        }
    }
}

/// Emits ("timer", ts, watermark at firing) from timers; records ask for timers at
/// their value, or delete the timer at `-value` when negative.
struct TimerProbe;

impl KeyedProcessFunction<u8, (u8, i64), (String, i64, i64)> for TimerProbe {
    fn process_element(
        &mut self,
        (_, v): (u8, i64),
        ctx: &mut ProcessContext<'_, u8, (String, i64, i64)>,
    ) -> Result<(), RuntimeError> {
        if v >= 0 {
            ctx.timer_service().register_event_time_timer(v)?;
        } else {
            ctx.timer_service().delete_event_time_timer(-v)?;
        }
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut TimerContext<'_, u8, (String, i64, i64)>,
    ) -> Result<(), RuntimeError> {
        let wm = ctx.timer_service().current_watermark();
        ctx.collect(("timer".into(), ts, wm));
        Ok(())
    }
}

#[test]
fn event_time_timers_fire_once_in_order_after_the_watermark() {
    // Key 1 asks for timers at 0..3000 twice each (duplicates), in shuffled order;
    // deletes every timer divisible by 7 (the delete arrives after the registration).
    let mut input: Vec<(u8, i64)> = Vec::new();
    for t in 0..3000i64 {
        input.push((1, (t * 7919) % 3000));
    }
    for t in 0..3000i64 {
        input.push((1, (t * 104_729) % 3000));
    }
    let mut with_deletes = input.clone();
    for t in (7..3000i64).step_by(7) {
        with_deletes.push((1, -t));
    }
    // Deletes are only ordered after their registrations when one source reads both.
    for (workers, data, deletes) in [(1, with_deletes, true), (3, input, false)] {
        let out = execute(JobConfig::default().workers(workers), move |job| {
            // Event time = the timer asked for, so the watermark trails the requests.
            job.source_vec(
                data.clone(),
                |(_, v)| v.abs(),
                WatermarkStrategy::BoundedOutOfOrderness(3000),
            )
            .key_by(|(k, _): &(u8, i64)| *k)
            .process(TimerProbe)
            .collect()
        })
        .unwrap();
        let fired: Vec<(String, i64, i64)> = out.into_iter().flatten().collect();
        let times: Vec<i64> = fired.iter().map(|f| f.1).collect();
        let expect: Vec<i64> = (0..3000)
            .filter(|t| !deletes || t % 7 != 0 || *t == 0)
            .collect();
        assert_eq!(
            times, expect,
            "{workers} workers: once each, in order, deleted ones never"
        );
        for (_, ts, wm) in &fired {
            assert!(wm >= ts, "timer {ts} fired at watermark {wm}");
        }
    }
}

/// Records "a" register a processing-time timer 50 ms ahead; "tick" advances the
/// injected clock by 100 ms.
struct ProcTimers(ManualClock);

impl KeyedProcessFunction<u8, String, String> for ProcTimers {
    fn process_element(
        &mut self,
        v: String,
        ctx: &mut ProcessContext<'_, u8, String>,
    ) -> Result<(), RuntimeError> {
        if v == "tick" {
            self.0.advance(100);
        } else {
            let now = ctx.timer_service().current_processing_time();
            ctx.timer_service()
                .register_processing_time_timer(now + 50)?;
        }
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut TimerContext<'_, u8, String>,
    ) -> Result<(), RuntimeError> {
        let now = ctx.timer_service().current_processing_time();
        let key = *ctx.current_key();
        ctx.collect(format!("{key}@{ts} now {now}"));
        Ok(())
    }
}

#[test]
fn processing_time_timers_fire_by_the_injected_clock() {
    let clock = ManualClock::new(1000);
    let c = clock.clone();
    let out = execute(
        JobConfig::default().clock(Arc::new(clock.clone())),
        move |job| {
            let input = vec!["a".to_string(), "tick".into(), "b".into()];
            job.source_vec(input, |_| 0, WatermarkStrategy::None)
                .key_by(|_: &String| 0u8)
                .process(ProcTimers(c.clone()))
                .collect()
        },
    );
    // Key is 0 for all, so "a" and "b" share the key: a@1050 is due after the tick
    // (clock 1100); b@1150 never comes due and is dropped at the end of the input.
    let got: Vec<String> = out.unwrap().into_iter().flatten().collect();
    assert_eq!(got, vec!["0@1050 now 1100".to_string()]);
    assert_eq!(clock.now_ms(), 1100);
}

/// Emits each record's value on the main output and, for odd values, ten times it on
/// the side output "odd" (main and side interleaved within a batch).
struct SplitOdd(flowstate_runtime::OutputTag<i64>);

impl KeyedProcessFunction<u8, (u8, i64), i64> for SplitOdd {
    fn process_element(
        &mut self,
        (_, v): (u8, i64),
        ctx: &mut ProcessContext<'_, u8, i64>,
    ) -> Result<(), RuntimeError> {
        if v % 2 != 0 {
            ctx.output(&self.0, v * 10)?;
        }
        ctx.collect(v);
        Ok(())
    }
}

/// Main and side outputs of a process function each keep the input's order (one
/// worker: a single ordered stream), whatever the other output emitted in between,
/// and carry the record's event time.
#[test]
fn main_and_side_outputs_each_keep_their_order() {
    let input: Vec<(u8, i64)> = (0..5000).map(|i| ((i % 7) as u8, i)).collect();
    let source = input.clone();
    let out = execute(JobConfig::default().workers(1), move |job| {
        let tag = flowstate_runtime::OutputTag::<i64>::new("odd");
        let main = job
            .source_vec(source.clone(), |(_, v)| *v, WatermarkStrategy::None)
            .key_by(|(k, _): &(u8, i64)| *k)
            .process(SplitOdd(tag.clone()));
        let side = main.side_output(&tag).collect_with_time();
        (main.collect_with_time(), side)
    })
    .unwrap();
    let (main, side) = out.into_iter().next().unwrap();
    let expect_main: Vec<(i64, i64)> = input.iter().map(|(_, v)| (*v, *v)).collect();
    let expect_side: Vec<(i64, i64)> = input
        .iter()
        .filter(|(_, v)| v % 2 != 0)
        .map(|(_, v)| (*v, v * 10))
        .collect();
    assert_eq!(main, expect_main);
    assert_eq!(side, expect_side);
}

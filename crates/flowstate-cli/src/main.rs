//! `flowstate`: run the built-in jobs with checkpoints, list a directory's checkpoints,
//! trigger savepoints. It is an ordinary user of the job harness
//! ([`flowstate_app::main`]): a user's own job binary gets the same commands.
//!
//! ```text
//! flowstate run counts --workers 2 --backend rocksdb --checkpoint-dir /tmp/fs/ck \
//!     --checkpoint-interval 500 --out /tmp/fs/out
//! flowstate checkpoints /tmp/fs/ck
//! flowstate savepoint /tmp/fs/ck
//! ```
//!
//! `run` resumes from the newest complete checkpoint of `--checkpoint-dir` when it has
//! one (kill it at any moment and run it again), or from `--from PATH` (a `chk-<id>`
//! or savepoint directory), at any `--workers`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
use flowstate_runtime::{
    KeyedProcessFunction, OpenContext, ProcessContext, RuntimeError, TimerContext,
    WatermarkStrategy, opened,
};

#[derive(Clone, Copy, ValueEnum)]
enum Example {
    /// Per-key running count and sum over a generated, out-of-order event stream,
    /// with a per-key event-time report every 10 s of event time.
    Counts,
}

/// The built-in job's own options (after the harness's: `flowstate run --help`).
#[derive(Args, Clone)]
struct CountsArgs {
    /// The job.
    example: Example,
    /// Where the transactional file sink commits output.
    #[arg(long)]
    out: PathBuf,
    /// Events of the generated stream.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Sleep 1 ms every this many events per worker (0: never), to watch or kill it.
    #[arg(long, default_value_t = 0)]
    throttle_every: u64,
}

/// Count and sum per key; a report per key at the end of each 10 s of event time.
/// Every key's events come from one source split when `--keys` is a multiple of the
/// first run's workers, so its lines are the same in every run, failed or not.
#[derive(Default)]
struct Counts {
    state: Option<Rc<dyn ValueState<(u64, u64)>>>,
}

const REPORT_MS: i64 = 10_000;

impl KeyedProcessFunction<u64, (u64, u64, i64), String> for Counts {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.state =
            Some(ctx.value_state(&ValueStateDescriptor::new("count-sum").queryable("counts"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        (key, amount, ts): (u64, u64, i64),
        ctx: &mut ProcessContext<'_, u64, String>,
    ) -> Result<(), RuntimeError> {
        let s = opened(&self.state)?;
        let (n, sum) = s.value()?.unwrap_or((0, 0));
        s.update((n + 1, sum + amount))?;
        ctx.collect(format!("u{key} n={} sum={}", n + 1, sum + amount));
        let report = (ts / REPORT_MS + 1) * REPORT_MS - 1;
        ctx.timer_service().register_event_time_timer(report)?;
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut TimerContext<'_, u64, String>,
    ) -> Result<(), RuntimeError> {
        // The count at a report depends on how far other keys' sources had got, so a
        // report says only that the key's timer fired (once, whatever the failures).
        let key = *ctx.current_key();
        ctx.collect(format!("report u{key} at={ts}"));
        Ok(())
    }
}

/// Event `i`: (key, amount, event time), out of order by up to 50 ms.
fn event(i: u64, keys: u64) -> (u64, u64, i64) {
    let key = i.wrapping_mul(7919) % keys;
    let ts = i as i64 * 2 + ((i * 31) % 50) as i64;
    (key, i % 100, ts)
}

fn main() -> ExitCode {
    flowstate_app::main("flowstate", |job, args: &CountsArgs| {
        let Example::Counts = args.example;
        let CountsArgs {
            events,
            keys,
            throttle_every,
            ..
        } = *args;
        let items: Vec<(u64, u64, i64)> = (0..events).map(|i| event(i, keys)).collect();
        let mut seen = 0u64;
        job.source_vec(
            items,
            |e| e.2,
            WatermarkStrategy::BoundedOutOfOrderness(100),
        )
        .uid("events")
        .map(move |e| {
            seen += 1;
            if throttle_every > 0 && seen.is_multiple_of(throttle_every) {
                std::thread::sleep(Duration::from_millis(1));
            }
            e
        })
        .key_by(|e| e.0)
        .process(Counts::default())
        .uid("counts")
        .write_text_files(&args.out, |line: &String| line.clone())
        .uid("out");
    })
}

//! `query-job`: a job whose keyed state is queryable over HTTP while it runs, written
//! only against the public API and run through the job harness
//! (`query-job run --checkpoint-dir DIR --query-addr 127.0.0.1:8081`).
//!
//! A user-defined source sends `--rounds` events for each of `--keys` string keys
//! (`k0`, `k1`, ...), round by round; with `--go FILE` it sends the first
//! `--first-rounds` and waits for `FILE` to exist before the rest; then it idles
//! (unless `--end`), so the state stays queryable. Per key the job keeps:
//! - `totals` (value, queryable as `totals`): (events, sum of amounts);
//! - `rounds` (list, queryable as `rounds`): the rounds seen, in order;
//! - `parity` (map, queryable as `parity`): events per `"even"`/`"odd"` round;
//! - `secret` (value, not queryable): the last amount.
//!
//! With `--window-ms W` a second keyed operator sums amounts per key in tumbling
//! event-time windows of `W` ms (round `r` at `100 r` ms), queryable by window as
//! `window_sums`; the last window stays open while the source idles.
//!
//! Event `r` of key `k` has amount `(31 k + 7 r) mod 100` (the tests' model,
//! `examples/tests/query.rs`, recomputes every state from it).

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use clap::Args;
use flowstate_core::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use flowstate_core::state::{ListState, MapState, ValueState};
use flowstate_runtime::{
    BoxError, KeyedProcessFunction, OpenContext, ProcessContext, Read, RuntimeError, SplitReader,
    SplitSource, WatermarkStrategy, WindowAssigner,
};
use serde::{Deserialize, Serialize};

/// The job's own options.
#[derive(Args, Clone, Debug)]
struct Options {
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Events per key.
    #[arg(long, default_value_t = 20)]
    rounds: u64,
    /// With `--go`: rounds sent before waiting for the file.
    #[arg(long, default_value_t = 10)]
    first_rounds: u64,
    /// Send the rounds after `--first-rounds` only once this file exists.
    #[arg(long)]
    go: Option<PathBuf>,
    /// End after the last round (else idle, keeping the state queryable).
    #[arg(long)]
    end: bool,
    /// Also sum each key's amounts in tumbling event-time windows of this many ms
    /// (queryable as `window_sums`; round `r` happens at `100 r` ms); 0: no windows.
    #[arg(long, default_value_t = 0)]
    window_ms: i64,
    /// Sleep 1 ms every this many events per split (0: never).
    #[arg(long, default_value_t = 0)]
    throttle_every: u64,
}

/// Splits of the source (fixed, so any worker count restores them).
const SPLITS: u64 = 4;

/// An event: (key, round, amount).
type Event = (String, u64, u64);

fn amount(key: u64, round: u64) -> u64 {
    (key * 31 + round * 7) % 100
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Split {
    index: u64,
    /// Events of this split sent so far.
    next: u64,
}

struct Rounds(Options);

impl SplitSource<Event> for Rounds {
    type Split = Split;

    fn initial_splits(&mut self, index: usize, workers: usize) -> Result<Vec<Split>, BoxError> {
        Ok((0..SPLITS)
            .filter(|s| *s as usize % workers == index)
            .map(|index| Split { index, next: 0 })
            .collect())
    }

    fn open_split(&mut self, split: Split) -> Result<Box<dyn SplitReader<Event, Split>>, BoxError> {
        let keys: Vec<u64> = (0..self.0.keys)
            .filter(|k| k % SPLITS == split.index)
            .collect();
        Ok(Box::new(RoundsReader {
            split,
            keys,
            options: self.0.clone(),
        }))
    }
}

struct RoundsReader {
    split: Split,
    keys: Vec<u64>,
    options: Options,
}

impl SplitReader<Event, Split> for RoundsReader {
    fn next(&mut self) -> Result<Read<Event>, BoxError> {
        let n = self.keys.len() as u64;
        if n == 0 {
            return Ok(if self.options.end {
                Read::End
            } else {
                Read::Idle
            });
        }
        let (round, i) = (self.split.next / n, self.split.next % n);
        if round >= self.options.rounds {
            return Ok(if self.options.end {
                Read::End
            } else {
                Read::Idle
            });
        }
        if let Some(go) = &self.options.go
            && round >= self.options.first_rounds
            && !go.exists()
        {
            return Ok(Read::Idle);
        }
        let t = self.options.throttle_every;
        if t > 0 && self.split.next.is_multiple_of(t) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.split.next += 1;
        let key = self.keys[i as usize];
        Ok(Read::Record((format!("k{key}"), round, amount(key, round))))
    }

    fn position(&self) -> Split {
        self.split.clone()
    }
}

#[derive(Default)]
struct Keep {
    totals: Option<Rc<dyn ValueState<(u64, u64)>>>,
    rounds: Option<Rc<dyn ListState<u64>>>,
    parity: Option<Rc<dyn MapState<String, u64>>>,
    secret: Option<Rc<dyn ValueState<u64>>>,
}

impl KeyedProcessFunction<String, Event, ()> for Keep {
    fn open(&mut self, ctx: &OpenContext<'_, String>) -> Result<(), RuntimeError> {
        self.totals =
            Some(ctx.value_state(&ValueStateDescriptor::new("totals").queryable("totals"))?);
        self.rounds =
            Some(ctx.list_state(&ListStateDescriptor::new("rounds").queryable("rounds"))?);
        self.parity = Some(ctx.map_state(&MapStateDescriptor::new("parity").queryable("parity"))?);
        self.secret = Some(ctx.value_state(&ValueStateDescriptor::new("secret"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (_, round, amount): Event,
        _: &mut ProcessContext<'_, String, ()>,
    ) -> Result<(), RuntimeError> {
        let (Some(totals), Some(rounds), Some(parity), Some(secret)) =
            (&self.totals, &self.rounds, &self.parity, &self.secret)
        else {
            return Err(RuntimeError::NotOpened);
        };
        let (n, sum) = totals.value()?.unwrap_or((0, 0));
        totals.update((n + 1, sum + amount))?;
        rounds.add(round)?;
        let p = if round % 2 == 0 { "even" } else { "odd" }.to_string();
        let c = parity.get(&p)?.unwrap_or(0);
        parity.put(p, c + 1)?;
        secret.update(amount)?;
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    flowstate_app::main("query-job", |job, o: &Options| {
        let events = job
            .source(
                "rounds",
                Rounds(o.clone()),
                |e: &Event| e.1 as i64 * 100,
                WatermarkStrategy::BoundedOutOfOrderness(0),
            )
            .uid("rounds");
        events
            .clone()
            .key_by(|e: &Event| e.0.clone())
            .process(Keep::default())
            .uid("keep");
        if o.window_ms > 0 {
            events
                .map(|(key, _, amount): Event| (key, amount))
                .key_by(|e: &(String, u64)| e.0.clone())
                .window(WindowAssigner::tumbling(o.window_ms))
                .queryable("window_sums")
                .reduce(|a, b| (a.0.clone(), a.1 + b.1))
                .uid("windows");
        }
    })
}

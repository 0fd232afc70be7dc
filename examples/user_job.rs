//! `user-job`: a job written only against Flowstate's public API, the way a user
//! writes their own: a user-defined replayable source (sensor readings, one split per
//! sensor), a keyed running total per sensor, and the output written exactly once
//! into both a directory of text files and a SQLite table. The job harness
//! (`flowstate_app::main`) gives it `run`, `savepoint` and `checkpoints`.
//!
//! ```text
//! user-job run --checkpoint-dir /tmp/uj/ck --out /tmp/uj/out --db /tmp/uj/out.db
//! user-job savepoint /tmp/uj/ck
//! user-job checkpoints /tmp/uj/ck
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use clap::Args;
use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
use flowstate_runtime::{
    BoxError, KeyedProcessFunction, OpenContext, ProcessContext, Read, RuntimeError, SplitReader,
    SplitSource, WatermarkStrategy, opened,
};
use flowstate_sqlite::SqliteSink;
use rusqlite::types::Value;
use serde::{Deserialize, Serialize};

/// The job's own options (after the harness's: `user-job run --help`).
#[derive(Args, Clone)]
struct Options {
    /// Directory the file sink commits into.
    #[arg(long)]
    out: PathBuf,
    /// SQLite database the table sink commits into (table `totals`).
    #[arg(long)]
    db: PathBuf,
    /// Sensors (one source split each).
    #[arg(long, default_value_t = 24)]
    sensors: u64,
    /// Readings per sensor.
    #[arg(long, default_value_t = 2000)]
    readings: u64,
    /// Sleep 1 ms every this many readings per split (0: never), to watch or kill it.
    #[arg(long, default_value_t = 0)]
    throttle_every: u64,
}

/// A reading: (sensor, sequence number, value).
type Reading = (u64, u64, u64);

/// The value of reading `seq` of `sensor` (deterministic, so runs compare).
fn value(sensor: u64, seq: u64) -> u64 {
    (sensor * 31 + seq * 7) % 100
}

/// One split per sensor; its position is the next sequence number to read.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SensorSplit {
    sensor: u64,
    next: u64,
}

/// The user-defined source: `sensors` sensors of `readings` readings each.
struct Sensors {
    sensors: u64,
    readings: u64,
    throttle_every: u64,
}

impl SplitSource<Reading> for Sensors {
    type Split = SensorSplit;

    fn initial_splits(
        &mut self,
        index: usize,
        workers: usize,
    ) -> Result<Vec<SensorSplit>, BoxError> {
        Ok((0..self.sensors)
            .filter(|s| *s as usize % workers == index)
            .map(|sensor| SensorSplit { sensor, next: 0 })
            .collect())
    }

    fn open_split(
        &mut self,
        split: SensorSplit,
    ) -> Result<Box<dyn SplitReader<Reading, SensorSplit>>, BoxError> {
        Ok(Box::new(SensorReader {
            split,
            readings: self.readings,
            throttle_every: self.throttle_every,
        }))
    }
    // Positions are stored with the default encoding (any serde type).
}

struct SensorReader {
    split: SensorSplit,
    readings: u64,
    throttle_every: u64,
}

impl SplitReader<Reading, SensorSplit> for SensorReader {
    fn next(&mut self) -> Result<Read<Reading>, BoxError> {
        let SensorSplit { sensor, next } = self.split;
        if next >= self.readings {
            return Ok(Read::End);
        }
        if self.throttle_every > 0 && next % self.throttle_every == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.split.next += 1;
        Ok(Read::Record((sensor, next, value(sensor, next))))
    }

    fn position(&self) -> SensorSplit {
        self.split.clone()
    }
}

/// Running (count, sum) per sensor; emits (sensor, count, sum) per reading.
#[derive(Default)]
struct Totals(Option<Rc<dyn ValueState<(u64, u64)>>>);

impl KeyedProcessFunction<u64, Reading, (u64, u64, u64)> for Totals {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("totals"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (sensor, _, v): Reading,
        ctx: &mut ProcessContext<'_, u64, (u64, u64, u64)>,
    ) -> Result<(), RuntimeError> {
        let s = opened(&self.0)?;
        let (n, sum) = s.value()?.unwrap_or((0, 0));
        s.update((n + 1, sum + v))?;
        ctx.collect((sensor, n + 1, sum + v));
        Ok(())
    }
}

fn main() -> ExitCode {
    flowstate_app::main("user-job", |job, o: &Options| {
        let source = Sensors {
            sensors: o.sensors,
            readings: o.readings,
            throttle_every: o.throttle_every,
        };
        let totals = job
            .source(
                "sensors",
                source,
                |r: &Reading| r.1 as i64 * 10,
                WatermarkStrategy::BoundedOutOfOrderness(0),
            )
            .uid("sensors")
            .key_by(|r: &Reading| r.0)
            .process(Totals::default())
            .uid("totals");
        // Both sinks read the same stream.
        totals
            .clone()
            .write_text_files(&o.out, |(s, n, sum): &(u64, u64, u64)| {
                format!("s{s} n={n} sum={sum}")
            })
            .uid("totals-files");
        let db = SqliteSink::new(
            &o.db,
            "totals",
            "CREATE TABLE IF NOT EXISTS totals \
             (sensor INTEGER NOT NULL, n INTEGER NOT NULL, sum INTEGER NOT NULL)",
            "INSERT INTO totals (sensor, n, sum) VALUES (?1, ?2, ?3)",
            |(s, n, sum): &(u64, u64, u64)| {
                vec![
                    Value::Integer(*s as i64),
                    Value::Integer(*n as i64),
                    Value::Integer(*sum as i64),
                ]
            },
        );
        totals.sink_to("sqlite", db).uid("totals-db");
    })
}

//! `skew-job`: a job whose keyed operator is the bottleneck, for flow control's test
//! (`tests/flow_control.rs`): every worker's source generates events that carry a
//! payload, nearly all of them for one hot key, and a deliberately slow keyed
//! function (a fixed amount of hashing per event, so slow without depending on
//! timing) counts them. Without flow control the sources run far ahead and the hot
//! worker's queue grows with the whole input. At the end it prints the process's
//! peak resident memory (`peak_rss_kb=N`, Linux's `VmHWM`) on standard error.
//!
//! ```text
//! skew-job run --workers 4 --checkpoint-dir /tmp/skew/ck --out /tmp/skew/out
//! ```

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Args;
use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
use flowstate_runtime::{
    BoxError, KeyedProcessFunction, OpenContext, ProcessContext, Read, RuntimeError, SplitReader,
    SplitSource, WatermarkStrategy, opened,
};
use serde::{Deserialize, Serialize};

/// The job's own options (after the harness's: `skew-job run --help`).
#[derive(Args, Clone)]
struct Options {
    /// Directory the file sink commits into.
    #[arg(long)]
    out: PathBuf,
    /// Events per worker.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 512)]
    payload: usize,
    /// Hash rounds per event in the keyed function (its slowness).
    #[arg(long, default_value_t = 2_000)]
    work: u32,
}

/// An event: (key, sequence number, payload).
type Event = (u64, u64, String);

/// One split per worker; its position is the next sequence number (every split
/// counts from 0, so the workers' event times move together).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct GenSplit {
    worker: u64,
    next: u64,
}

/// Generates events on the fly (a vec source would hold the whole input in memory
/// and hide what flow control saves).
struct Generator {
    events: u64,
    payload: usize,
}

impl SplitSource<Event> for Generator {
    type Split = GenSplit;

    fn initial_splits(&mut self, index: usize, _: usize) -> Result<Vec<GenSplit>, BoxError> {
        Ok(vec![GenSplit {
            worker: index as u64,
            next: 0,
        }])
    }

    fn open_split(
        &mut self,
        split: GenSplit,
    ) -> Result<Box<dyn SplitReader<Event, GenSplit>>, BoxError> {
        Ok(Box::new(GenReader {
            split,
            events: self.events,
            payload: self.payload,
        }))
    }
}

struct GenReader {
    split: GenSplit,
    events: u64,
    payload: usize,
}

impl SplitReader<Event, GenSplit> for GenReader {
    fn next(&mut self) -> Result<Read<Event>, BoxError> {
        let seq = self.split.next;
        if seq >= self.events {
            return Ok(Read::End);
        }
        self.split.next += 1;
        // Nearly every event is for the hot key 0; one in 64 for one of 64 others.
        let key = if seq.is_multiple_of(64) {
            1 + (seq / 64) % 64
        } else {
            0
        };
        let fill = char::from(b'a' + (seq % 26) as u8);
        let payload = std::iter::repeat_n(fill, self.payload).collect();
        Ok(Read::Record((key, seq, payload)))
    }

    fn position(&self) -> GenSplit {
        self.split.clone()
    }
}

/// Counts events per key after `work` rounds of hashing each (the slow part); emits
/// one line per 10,000 events of a key.
struct SlowCount {
    work: u32,
    count: Option<Rc<dyn ValueState<u64>>>,
}

impl KeyedProcessFunction<u64, Event, String> for SlowCount {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.count = Some(ctx.value_state(&ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (key, seq, payload): Event,
        ctx: &mut ProcessContext<'_, u64, String>,
    ) -> Result<(), RuntimeError> {
        let mut h = DefaultHasher::new();
        for round in 0..self.work {
            (round, seq, payload.len()).hash(&mut h);
        }
        let count = opened(&self.count)?;
        let n = count.value()?.unwrap_or(0) + 1;
        count.update(n)?;
        if n.is_multiple_of(10_000) {
            ctx.collect(format!("k{key} n={n} h={}", h.finish() % 10));
        }
        Ok(())
    }
}

/// The process's peak resident memory in KiB (Linux `/proc/self/status`).
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> ExitCode {
    let code = flowstate_app::main("skew-job", |job, opts: &Options| {
        let source = Generator {
            events: opts.events,
            payload: opts.payload,
        };
        job.source(
            "generator",
            source,
            // Event time: the sequence number in ms (the same on every worker), so
            // keyed operators order by watermark epochs and hold records back at
            // checkpoints.
            |e: &Event| e.1 as i64,
            WatermarkStrategy::BoundedOutOfOrderness(10),
        )
        .uid("events")
        .key_by(|e: &Event| e.0)
        .process(SlowCount {
            work: opts.work,
            count: None,
        })
        .uid("count")
        .write_text_files(&opts.out, |line: &String| line.clone())
        .uid("out");
    });
    if let Some(kb) = peak_rss_kb() {
        eprintln!("peak_rss_kb={kb}");
    }
    code
}

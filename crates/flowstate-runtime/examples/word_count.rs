//! Word count over a text file with keyed `ValueState`: the file is split across
//! workers, words are keyed by key group, each worker counts its words in the
//! configured backend and emits every word's final count from an event-time timer at
//! the end of input. Prints the 10 most frequent words.
//!
//!     cargo run --release -p flowstate-runtime --example word_count -- [FILE] [--workers N] [--rocksdb]
//!
//! Without FILE it writes a sample text to a temporary directory. With
//! `--bench RECORDS KEYS` it measures keyed counting instead: RECORDS keys drawn over
//! KEYS distinct values, one ValueState update per record, and prints records/s.

use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::{StateKey, ValueState};
use flowstate_rocksdb::RocksDbOptions;
use flowstate_runtime::{
    BackendChoice, FileFormat, JobConfig, KeyedProcessFunction, OpenContext, ProcessContext,
    RuntimeError, TimerContext, WatermarkStrategy, execute, opened,
};

/// Counts records per key; with `emit`, emits (key, count) once at the end of input.
struct Count {
    count: Option<Rc<dyn ValueState<u64>>>,
    emit: bool,
}

impl<K: StateKey + Clone> KeyedProcessFunction<K, K, (K, u64)> for Count {
    fn open(&mut self, ctx: &OpenContext<'_, K>) -> Result<(), RuntimeError> {
        self.count = Some(ctx.value_state(&ValueStateDescriptor::new("count"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        _word: K,
        ctx: &mut ProcessContext<'_, K, (K, u64)>,
    ) -> Result<(), RuntimeError> {
        let count = opened(&self.count)?;
        let n = count.value()?.unwrap_or(0) + 1;
        count.update(n)?;
        if self.emit && n == 1 {
            // One timer per word (deduplicated anyway), fired by the final watermark.
            ctx.timer_service()
                .register_event_time_timer(i64::MAX - 1)?;
        }
        Ok(())
    }
    fn on_timer(
        &mut self,
        _ts: i64,
        ctx: &mut TimerContext<'_, K, (K, u64)>,
    ) -> Result<(), RuntimeError> {
        let count = opened(&self.count)?;
        let word = ctx.current_key().clone();
        ctx.collect((word, count.value()?.unwrap_or(0)));
        Ok(())
    }
}

const SAMPLE: &str = "To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune,
Or to take arms against a sea of troubles
And by opposing end them. To die - to sleep,
No more; and by a sleep to say we end
The heart-ache and the thousand natural shocks
That flesh is heir to: 'tis a consummation
Devoutly to be wish'd. To die, to sleep;
To sleep, perchance to dream - ay, there's the rub";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut file = None;
    let mut workers = 1;
    let mut rocksdb = false;
    let mut bench: Option<(u64, u64)> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--workers" => workers = it.next().context("--workers N")?.parse()?,
            "--rocksdb" => rocksdb = true,
            "--bench" => {
                let r = it.next().context("--bench RECORDS KEYS")?.parse()?;
                let k = it.next().context("--bench RECORDS KEYS")?.parse()?;
                bench = Some((r, k));
            }
            other if other.starts_with("--") => bail!("unknown option {other}"),
            path => file = Some(std::path::PathBuf::from(path)),
        }
    }
    let dir = tempfile::tempdir()?;
    let backend = if rocksdb {
        BackendChoice::RocksDb(RocksDbOptions::new(dir.path().join("rocksdb")))
    } else {
        BackendChoice::Heap
    };
    let config = JobConfig::default()
        .workers(workers)
        .backend(backend.clone());

    if let Some((records, keys)) = bench {
        // Deterministic keys: a multiplicative walk over 0..keys.
        let input: Vec<u64> = (0..records).map(|i| (i * 7_919) % keys).collect();
        let started = Instant::now();
        execute(config, move |job| {
            job.source_vec(input.clone(), |_| 0, WatermarkStrategy::None)
                .key_by(|k: &u64| *k)
                .process(Count {
                    count: None,
                    emit: false,
                })
                .sink(|_| {});
        })?;
        let secs = started.elapsed().as_secs_f64();
        let kind = if rocksdb { "rocksdb" } else { "heap" };
        println!(
            "keyed counting: {records} records over {keys} keys, {workers} worker(s), {kind}: {:.2} s, {:.0} records/s",
            secs,
            records as f64 / secs
        );
        return Ok(());
    }

    let path = match file {
        Some(p) => p,
        None => {
            let p = dir.path().join("sample.txt");
            std::fs::write(&p, SAMPLE)?;
            p
        }
    };
    let out = execute(config, move |job| {
        job.source_file::<String>(&path, FileFormat::Lines, |_| 0, WatermarkStrategy::None)
            .flat_map(|line: String| {
                line.split(|c: char| !c.is_alphanumeric() && c != '\'')
                    .filter(|w| !w.is_empty())
                    .map(|w| w.to_lowercase())
                    .collect::<Vec<_>>()
            })
            .key_by(|w: &String| w.clone())
            .process(Count {
                count: None,
                emit: true,
            })
            .collect()
    })?;
    let mut counts: Vec<(String, u64)> = out.concat();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: u64 = counts.iter().map(|c| c.1).sum();
    println!("{total} words, {} distinct; most frequent:", counts.len());
    for (w, n) in counts.iter().take(10) {
        println!("{n:>8}  {w}");
    }
    Ok(())
}

//! `flowstate-bench query`: what queryable state costs a running job, and what it
//! answers. One process, run back to back in the same invocation:
//!
//! - **throughput**: a keyed job (a counter per key, queryable) over `events` events
//!   on `keys` keys, `workers` workers, checkpoints every second, timed to its end; once
//!   with no queries, once with `rate` live point look-ups per second of random keys
//!   through the HTTP server, once with `rate` committed ones, `runs` times each in
//!   turn; the medians are reported and each loaded run's look-up latencies (p50,
//!   p99 over all its look-ups);
//! - **batch**: on a job that holds its state and idles, batches of `batch` keys,
//!   live and committed, in keys per second.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
use flowstate_query::{QueryHub, QueryServer, ServerConfig};
use flowstate_query_client::{BatchRequest, ClientError, Consistency, QueryClient};
use flowstate_rocksdb::SnapshotMode;
use flowstate_runtime::{
    BoxError, JobConfig, KeyedProcessFunction, OpenContext, ProcessContext, Read, RuntimeError,
    SplitReader, SplitSource, WatermarkStrategy, execute, opened,
};
use serde::{Deserialize, Serialize};

use crate::job_config;

/// Look-ups that got no value, by status and error code (`503 unavailable` while the
/// job starts or after it ended; `no answer` for transport errors).
type Failures = std::collections::BTreeMap<String, u64>;

/// What to run.
pub(crate) struct QueryBench {
    pub(crate) rocksdb: bool,
    pub(crate) events: u64,
    pub(crate) keys: u64,
    pub(crate) rate: u64,
    pub(crate) runs: usize,
    pub(crate) batch: usize,
    /// Workers of the job. With as many workers as cores, the HTTP server and the
    /// load generator take their CPU from the job; with one core fewer, they have a
    /// core of their own, as a client on another machine would.
    pub(crate) workers: usize,
}

const SPLITS: u64 = 4;

fn key_of(i: u64, keys: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) % keys
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Split {
    index: u64,
    next: u64,
}

/// `events` events over the splits; then the end, or idling while `hold` is set.
#[derive(Clone)]
struct Events {
    events: u64,
    keys: u64,
    hold: Option<Arc<AtomicBool>>,
}

impl SplitSource<u64> for Events {
    type Split = Split;
    fn initial_splits(&mut self, index: usize, workers: usize) -> Result<Vec<Split>, BoxError> {
        Ok((0..SPLITS)
            .filter(|s| *s as usize % workers == index)
            .map(|index| Split { index, next: 0 })
            .collect())
    }
    fn open_split(&mut self, split: Split) -> Result<Box<dyn SplitReader<u64, Split>>, BoxError> {
        Ok(Box::new(EventReader {
            split,
            source: self.clone(),
        }))
    }
}

struct EventReader {
    split: Split,
    source: Events,
}

impl SplitReader<u64, Split> for EventReader {
    fn next(&mut self) -> Result<Read<u64>, BoxError> {
        let i = self.split.next * SPLITS + self.split.index;
        if i >= self.source.events {
            return Ok(match &self.source.hold {
                Some(h) if h.load(Ordering::Acquire) => Read::Idle,
                _ => Read::End,
            });
        }
        self.split.next += 1;
        Ok(Read::Record(key_of(i, self.source.keys)))
    }
    fn position(&self) -> Split {
        self.split.clone()
    }
}

#[derive(Default)]
struct Count(Option<Rc<dyn ValueState<u64>>>);

impl KeyedProcessFunction<u64, u64, ()> for Count {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("count").queryable("counts"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        _: u64,
        _: &mut ProcessContext<'_, u64, ()>,
    ) -> Result<(), RuntimeError> {
        let s = opened(&self.0)?;
        s.update(s.value()?.unwrap_or(0) + 1)?;
        Ok(())
    }
}

/// A job of this bench, with its directories.
struct Run {
    dir: tempfile::TempDir,
    config: JobConfig,
}

impl QueryBench {
    fn job(&self, hub: Option<&QueryHub>) -> Result<Run> {
        let dir = tempfile::tempdir()?;
        let rocksdb = self.rocksdb.then(SnapshotMode::default);
        let mut config = job_config(dir.path(), rocksdb, self.workers, Duration::from_secs(1))?;
        if let Some(h) = hub {
            config = config.queries(h.clone());
        }
        Ok(Run { dir, config })
    }

    fn source(&self, hold: Option<Arc<AtomicBool>>) -> Events {
        Events {
            events: self.events,
            keys: self.keys,
            hold,
        }
    }

    /// One timed run to the job's end, with `load` look-ups per second meanwhile.
    fn timed(&self, load: Option<Consistency>) -> Result<(f64, Vec<f64>, Failures)> {
        let hub = load.map(|_| QueryHub::new());
        let run = self.job(hub.as_ref())?;
        let server = hub
            .as_ref()
            .map(|h| QueryServer::start(h.clone(), ServerConfig::new("127.0.0.1:0")))
            .transpose()?;
        let stop = Arc::new(AtomicBool::new(false));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Failures::new()));
        let loader = match (load, &server) {
            (Some(c), Some(s)) => Some(self.load(
                s.local_addr().to_string(),
                c,
                stop.clone(),
                latencies.clone(),
                failed.clone(),
            )?),
            _ => None,
        };
        let source = self.source(None);
        let started = Instant::now();
        execute(run.config, move |job| {
            job.source("events", source.clone(), |_| 0, WatermarkStrategy::None)
                .uid("events")
                .key_by(|k: &u64| *k)
                .process(Count::default())
                .uid("count");
        })?;
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Release);
        if let Some(l) = loader {
            let _ = l.join();
        }
        drop(run.dir);
        let lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
        let failed = std::mem::take(&mut *failed.lock().unwrap_or_else(|e| e.into_inner()));
        Ok((secs, lat, failed))
    }

    /// A thread asking `rate` point look-ups per second until `stop`, recording
    /// each answered one's latency in ms (and counting the others).
    fn load(
        &self,
        addr: String,
        consistency: Consistency,
        stop: Arc<AtomicBool>,
        latencies: Arc<Mutex<Vec<f64>>>,
        failed: Arc<Mutex<Failures>>,
    ) -> Result<std::thread::JoinHandle<()>> {
        let (rate, keys) = (self.rate.max(1), self.keys);
        let client = QueryClient::new(&addr)?;
        Ok(std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) {
                    tick.tick().await;
                    i += 1;
                    let key = serde_json::json!(key_of(i.wrapping_mul(7919), keys));
                    let (client, latencies, failed) =
                        (client.clone(), latencies.clone(), failed.clone());
                    tokio::spawn(async move {
                        let t = Instant::now();
                        match client.lookup("counts", &key, consistency, None).await {
                            Ok(_) => latencies
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(t.elapsed().as_secs_f64() * 1e3),
                            Err(e) => {
                                let kind = match e {
                                    ClientError::Server { status, body } => {
                                        format!("{status} {}", body.error)
                                    }
                                    _ => "no answer".to_string(),
                                };
                                *failed
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .entry(kind)
                                    .or_default() += 1;
                            }
                        }
                    });
                }
            });
        }))
    }

    /// Batches of `batch` keys on an idle job holding every key: keys/s, live and
    /// committed.
    fn batches(&self) -> Result<(f64, f64)> {
        let hub = QueryHub::new();
        let run = self.job(Some(&hub))?;
        let server = QueryServer::start(hub.clone(), ServerConfig::new("127.0.0.1:0"))?;
        let hold = Arc::new(AtomicBool::new(true));
        let source = self.source(Some(hold.clone()));
        let config = run.config;
        let job = std::thread::spawn(move || {
            execute(config, move |job| {
                job.source("events", source.clone(), |_| 0, WatermarkStrategy::None)
                    .uid("events")
                    .key_by(|k: &u64| *k)
                    .process(Count::default())
                    .uid("count");
            })
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = QueryClient::new(&server.local_addr().to_string())?;
        let n = self.batch.min(self.keys as usize);
        let all: Vec<serde_json::Value> = (0..self.keys).map(|k| serde_json::json!(k)).collect();
        let total = |c: Consistency| -> Result<u64> {
            let mut sum = 0;
            for chunk in all.chunks(n) {
                let r = rt.block_on(client.batch_json(
                    "counts",
                    &BatchRequest {
                        keys: chunk.to_vec(),
                        consistency: c,
                        ..BatchRequest::default()
                    },
                ))?;
                sum += r
                    .values
                    .iter()
                    .filter_map(|e| e.value.as_ref()?.as_u64())
                    .sum::<u64>();
            }
            Ok(sum)
        };
        // Until every event is in the live state and in a checkpoint.
        let deadline = Instant::now() + Duration::from_secs(600);
        for c in [Consistency::Live, Consistency::Committed] {
            while total(c).unwrap_or(0) != self.events {
                if Instant::now() > deadline {
                    bail!("the batch job never got to {} events", self.events);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let mut rates = Vec::new();
        for c in [Consistency::Live, Consistency::Committed] {
            let started = Instant::now();
            let mut asked = 0u64;
            while started.elapsed() < Duration::from_secs(3) {
                let k = (asked as usize) % all.len();
                let chunk: Vec<serde_json::Value> =
                    all.iter().cycle().skip(k).take(n).cloned().collect();
                let r = rt.block_on(client.batch_json(
                    "counts",
                    &BatchRequest {
                        keys: chunk,
                        consistency: c,
                        ..BatchRequest::default()
                    },
                ))?;
                asked += r.values.len() as u64;
            }
            rates.push(asked as f64 / started.elapsed().as_secs_f64());
        }
        hold.store(false, Ordering::Release);
        job.join()
            .map_err(|_| anyhow::anyhow!("the batch job panicked"))?
            .context("the batch job")?;
        drop(server);
        Ok((rates[0], rates[1]))
    }

    /// Runs everything and prints the table.
    pub(crate) fn run(&self) -> Result<()> {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let pct = |v: &mut Vec<f64>, p: f64| {
            v.sort_by(f64::total_cmp);
            let i = ((v.len() as f64 - 1.0) * p).round() as usize;
            v.get(i).copied().unwrap_or(f64::NAN)
        };
        let modes = [None, Some(Consistency::Live), Some(Consistency::Committed)];
        let mut secs: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut lat: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut failed = vec![Failures::new(); modes.len()];
        for _ in 0..self.runs {
            for (m, mode) in modes.iter().enumerate() {
                let (s, l, f) = self.timed(*mode)?;
                secs[m].push(s);
                lat[m].extend(l);
                for (kind, n) in f {
                    *failed[m].entry(kind).or_default() += n;
                }
            }
        }
        let backend = if self.rocksdb { "rocksdb" } else { "heap" };
        println!(
            "query bench: backend {backend}, {} events on {} keys, {} workers, checkpoints every \
             1 s, {} q/s, {} runs (medians)",
            self.events, self.keys, self.workers, self.rate, self.runs
        );
        let base = self.events as f64 / median(secs[0].clone());
        for (m, mode) in modes.iter().enumerate() {
            let eps = self.events as f64 / median(secs[m].clone());
            let name = match mode {
                None => "no queries".to_string(),
                Some(c) => format!("{} q/s {}", self.rate, c.as_str()),
            };
            let l = &mut lat[m];
            let latency = if l.is_empty() {
                match mode {
                    None => String::new(),
                    Some(_) => format!("  (none answered; not answered: {:?})", failed[m]),
                }
            } else {
                format!(
                    "  p50 {:.2} ms  p99 {:.2} ms  ({} answered; not answered: {:?})",
                    pct(l, 0.5),
                    pct(l, 0.99),
                    l.len(),
                    failed[m]
                )
            };
            println!(
                "{name:<22} {eps:>12.0} events/s  {:>6.1}% of no queries{latency}",
                eps / base * 100.0
            );
        }
        let (live, committed) = self.batches()?;
        println!(
            "batches of {} keys: live {live:.0} keys/s, committed {committed:.0} keys/s",
            self.batch
        );
        Ok(())
    }
}

//! `flowstate-bench nexmark`: events per second of the Nexmark queries
//! (`flowstate-nexmark`) on both backends, exactly-once with a checkpoint every 10 s
//! (Nexmark's setting), the result rows discarded (Flink's runs use a blackhole
//! sink). Each figure is the median of `runs` runs of `events` events; per core is
//! events/s divided by the worker count, and also events per CPU-second the process
//! used (user + system, from `/proc/self/stat`; it counts the snapshot and RocksDB
//! threads too). Beside them, Flink's published per-core figure (Flink 1.13, the
//! nexmark repository's README) and the ratio.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use flowstate_nexmark::{Params, Query, build};
use flowstate_rocksdb::SnapshotMode;
use flowstate_runtime::execute;

use crate::{job_config, median_of};

/// What to run.
pub(crate) struct NexmarkBench {
    pub(crate) queries: Vec<Query>,
    pub(crate) rocksdb: Vec<bool>,
    pub(crate) events: u64,
    pub(crate) workers: usize,
    pub(crate) runs: usize,
    pub(crate) json: bool,
}

/// One run's wall and CPU seconds.
struct Timed {
    secs: f64,
    cpu: f64,
}

/// User plus system CPU seconds this process has used, if `/proc` tells.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after ')'.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // Linux reports in clock ticks of 1/100 s (USER_HZ) on every platform we run.
    Some(ticks / 100.0)
}

impl NexmarkBench {
    fn run_once(&self, query: Query, rocksdb: bool) -> Result<Timed> {
        let dir = tempfile::tempdir()?;
        let rocksdb = rocksdb.then(SnapshotMode::default);
        let config = job_config(dir.path(), rocksdb, self.workers, Duration::from_secs(10))?;
        let params = Params::new(self.events);
        let cpu0 = cpu_seconds();
        let started = Instant::now();
        execute(config, move |job| {
            build(job, query, &params).sink(|_| {});
        })?;
        let secs = started.elapsed().as_secs_f64();
        let cpu = match (cpu0, cpu_seconds()) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        Ok(Timed { secs, cpu })
    }

    pub(crate) fn run(&self) -> Result<()> {
        if self.events == 0 || self.workers == 0 || self.runs == 0 {
            bail!("--events, --workers and --runs must be positive");
        }
        if !self.json {
            println!(
                "nexmark: {} events, {} worker(s), checkpoint every 10 s, median of {} run(s)",
                self.events, self.workers, self.runs
            );
            println!(
                "{:<6} {:<8} {:>12} {:>14} {:>12} {:>14} {:>12} {:>8}",
                "query",
                "backend",
                "seconds",
                "events/s",
                "per core",
                "per CPU-s",
                "Flink/core",
                "x"
            );
        }
        for &query in &self.queries {
            for &rocksdb in &self.rocksdb {
                let mut secs = Vec::new();
                let mut cpus = Vec::new();
                for _ in 0..self.runs {
                    let t = self.run_once(query, rocksdb)?;
                    secs.push(t.secs);
                    cpus.push(t.cpu);
                }
                let (secs, cpu) = (median_of(&secs), median_of(&cpus));
                let rate = self.events as f64 / secs;
                let per_core = rate / self.workers as f64;
                let per_cpu = self.events as f64 / cpu;
                let flink = query.flink_per_core();
                let ratio = flink.map(|f| per_core / f as f64);
                let backend = if rocksdb { "rocksdb" } else { "heap" };
                if self.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "query": query.to_string(), "backend": backend,
                            "events": self.events, "workers": self.workers,
                            "seconds": secs, "events_per_sec": rate,
                            "events_per_sec_per_core": per_core,
                            "events_per_cpu_sec": per_cpu,
                            "flink_per_core": flink, "ratio_vs_flink": ratio,
                        })
                    );
                } else {
                    println!(
                        "{:<6} {:<8} {:>12.2} {:>14.0} {:>12.0} {:>14.0} {:>12} {:>8}",
                        query.to_string(),
                        backend,
                        secs,
                        rate,
                        per_core,
                        per_cpu,
                        flink.map_or("-".to_string(), |f| f.to_string()),
                        ratio.map_or("-".to_string(), |r| format!("{r:.1}x"))
                    );
                }
            }
        }
        Ok(())
    }
}

//! How a job runs: [`JobConfig`] (workers, key groups, backend, clock, checkpoints)
//! and, for a job of several processes, [`Cluster`].

use std::sync::Arc;

use crate::checkpoint::{CheckpointConfig, ProcessRole};
use crate::query::QueryHub;
use crate::{BackendChoice, Clock, FlowControl, RuntimeError, SystemClock};

/// Where this process stands in a job that runs as several processes (timely's
/// cluster mode over TCP): every process runs the same program with the same
/// `addresses` and its own `process` index. Process 0 leads checkpointing.
///
/// ```no_run
/// # use flowstate_runtime::{Cluster, JobConfig};
/// let addresses = vec!["127.0.0.1:7100".to_string(), "127.0.0.1:7101".to_string()];
/// // In the second process (2 processes × 2 threads = parallelism 4):
/// let config = JobConfig::default().workers(2).cluster(Cluster::new(1, addresses));
/// assert_eq!(config.parallelism(), 4);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cluster {
    /// This process's index in `addresses`.
    pub process: usize,
    /// `host:port` of every process, the same list in every process.
    pub addresses: Vec<String>,
}

/// How a job runs: [`JobConfig::default`] and the builder methods.
#[derive(Clone)]
#[non_exhaustive]
pub struct JobConfig {
    /// Worker threads of this process (the job's parallelism unless it runs as
    /// several processes: then [`JobConfig::parallelism`]).
    pub workers: usize,
    /// Key groups; fixed for the life of the job's state.
    pub max_parallelism: u32,
    /// The keyed state backend.
    pub backend: BackendChoice,
    /// The processing-time clock (timers, TTL); tests inject a [`ManualClock`](crate::ManualClock).
    pub clock: Arc<dyn Clock>,
    /// Checkpoints, when on (off by default).
    pub checkpointing: Option<CheckpointConfig>,
    /// The job's processes, when it runs as several (one by default).
    pub cluster: Option<Cluster>,
    /// How far sources may run ahead of the operators behind them (on by default;
    /// see [`FlowControl`]).
    pub flow_control: FlowControl,
    /// Where the job's queryable states are served from (off by default; see
    /// [`crate::query`]).
    pub queries: Option<QueryHub>,
}

impl Cluster {
    /// Process `process` of the processes at `addresses` (`host:port` each, the same
    /// list in every process).
    pub fn new(process: usize, addresses: Vec<String>) -> Self {
        Cluster { process, addresses }
    }
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            workers: 1,
            max_parallelism: 128,
            backend: BackendChoice::Heap,
            clock: Arc::new(SystemClock),
            checkpointing: None,
            cluster: None,
            flow_control: FlowControl::default(),
            queries: None,
        }
    }
}

impl JobConfig {
    /// Sets the number of workers.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
    /// Sets the keyed state backend.
    pub fn backend(mut self, backend: BackendChoice) -> Self {
        self.backend = backend;
        self
    }
    /// Sets the max parallelism (number of key groups).
    pub fn max_parallelism(mut self, max_parallelism: u32) -> Self {
        self.max_parallelism = max_parallelism;
        self
    }
    /// Sets the processing-time clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Turns checkpointing on.
    pub fn checkpointing(mut self, checkpoints: CheckpointConfig) -> Self {
        self.checkpointing = Some(checkpoints);
        self
    }

    /// Sets flow control (see [`FlowControl`]).
    pub fn flow_control(mut self, flow_control: FlowControl) -> Self {
        self.flow_control = flow_control;
        self
    }

    /// Exposes the job's queryable states through `hub` (see [`crate::query`]).
    pub fn queries(mut self, hub: QueryHub) -> Self {
        self.queries = Some(hub);
        self
    }

    /// Runs this process as one of several (see [`Cluster`]).
    pub fn cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Workers of the whole job: this process's threads times the processes.
    pub fn parallelism(&self) -> usize {
        self.workers * self.cluster.as_ref().map_or(1, |c| c.addresses.len())
    }

    pub(crate) fn role(&self) -> ProcessRole {
        self.cluster
            .as_ref()
            .map_or(ProcessRole::SINGLE, |c| ProcessRole {
                process: c.process,
                processes: c.addresses.len(),
            })
    }

    pub(crate) fn validate(&self) -> Result<(), RuntimeError> {
        if let Some(c) = &self.checkpointing {
            c.validate()?;
        }
        if let Some(c) = &self.cluster
            && c.process >= c.addresses.len()
        {
            return Err(RuntimeError::Config(format!(
                "process {} of a cluster of {} addresses",
                c.process,
                c.addresses.len()
            )));
        }
        let parallelism = self.parallelism();
        let p = u32::try_from(parallelism)
            .map_err(|_| RuntimeError::Config(format!("{parallelism} workers")))?;
        flowstate_core::keygroup::check_max_parallelism(self.max_parallelism)?;
        if self.workers == 0 || p > self.max_parallelism {
            return Err(RuntimeError::Config(format!(
                "workers must be in 1..={} (the max parallelism), got {parallelism}",
                self.max_parallelism
            )));
        }
        Ok(())
    }
}

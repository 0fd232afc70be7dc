//! The process-wide hub of queryable state: the catalog of what the job exposes,
//! where each key's owner is, the mailboxes of this process's keyed operator
//! instances, the last completed checkpoint, and whether the job is running at all.
//!
//! It is shared (`Send + Sync`) between the job's workers and whatever serves
//! queries; it outlives the job's attempts, and every attempt starts from an empty
//! catalog: nothing of a failed attempt answers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use flowstate_core::keygroup::operator_index_for_key_group;
use flowstate_core::ttl::StateTtlConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use timely::scheduling::SyncActivator;
use tokio::sync::oneshot;

use super::{LiveAnswer, LiveLookup, QueryError, QueryableState};
use crate::SnapshotKind;
use crate::task::WorkerCheckpoints;

/// Where a look-up's reply goes.
pub(crate) type Reply = oneshot::Sender<Result<LiveAnswer, QueryError>>;

/// A look-up waiting in a worker's mailbox.
pub(crate) struct Pending {
    pub(crate) lookup: LiveLookup,
    pub(crate) reply: Reply,
}

/// The queue of look-ups of one keyed operator instance, and how to wake its worker.
#[derive(Default)]
pub(crate) struct Mailbox {
    queue: Mutex<VecDeque<Pending>>,
    activator: Mutex<Option<SyncActivator>>,
}

impl Mailbox {
    /// The worker wakes the operator through `activator` when a look-up arrives.
    pub(crate) fn set_activator(&self, activator: SyncActivator) {
        *lock(&self.activator) = Some(activator);
    }

    /// Up to `n` waiting look-ups, oldest first, and whether more wait.
    pub(crate) fn take(&self, n: usize) -> (Vec<Pending>, bool) {
        let mut q = lock(&self.queue);
        let k = n.min(q.len());
        let taken: Vec<Pending> = q.drain(..k).collect();
        (taken, !q.is_empty())
    }

    fn push(&self, p: Pending, limit: usize) -> Result<(), QueryError> {
        {
            let mut q = lock(&self.queue);
            if q.len() >= limit {
                return Err(QueryError::Unavailable(format!(
                    "{limit} look-ups already wait for this worker"
                )));
            }
            q.push_back(p);
        }
        if let Some(a) = lock(&self.activator).as_ref() {
            // A worker that has gone away drops the queue, and with it the reply.
            let _ = a.activate();
        }
        Ok(())
    }
}

/// Locks `m`, also when a panicking holder poisoned it (the data is a queue or a
/// catalog; a half-done update cannot break an invariant of theirs).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Computes a key's group from its JSON form (typed: the key type's serializer).
pub(crate) type KeyGroupFn = Arc<dyn Fn(&Value) -> Result<u32, QueryError> + Send + Sync>;

/// A registered queryable state.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) info: Arc<QueryableState>,
    pub(crate) key_group: KeyGroupFn,
    pub(crate) ttl: Option<StateTtlConfig>,
}

/// The checkpoint a `committed` read reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// Its id.
    pub id: u64,
    /// Its directory (holding `_metadata`).
    pub path: PathBuf,
}

/// What the hub says about the job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubStatus {
    /// Every local worker has started (restored) and the attempt has not ended.
    pub running: bool,
    /// Attempts of the job so far in this process (1 on the first run).
    pub attempt: u64,
    /// This process's index.
    pub process: usize,
    /// Processes of the job.
    pub processes: usize,
    /// Why it is not running (`None` when it is).
    pub reason: Option<String>,
}

/// Where a key lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The key as the state's key type reads it (a plain string turned into a
    /// string key when the type wants one).
    pub key: Value,
    /// Its key group.
    pub key_group: u32,
    /// The operator instance (worker, counted over all processes) owning it.
    pub worker: u32,
    /// The process that worker runs in.
    pub process: usize,
}

#[derive(Default)]
struct Attempt {
    attempt: u64,
    running: bool,
    reason: Option<String>,
    process: usize,
    processes: usize,
    workers: usize,
    started: usize,
    states: BTreeMap<String, Registered>,
    mailboxes: HashMap<(String, u32), Arc<Mailbox>>,
    committed: Option<Committed>,
}

struct Inner {
    slice: usize,
    queue_limit: usize,
    attempt: Mutex<Attempt>,
}

/// The process-wide hub of queryable state (see the module docs): give a clone to
/// [`crate::JobConfig::queries`] and another to the server.
#[derive(Clone)]
pub struct QueryHub {
    inner: Arc<Inner>,
}

impl Default for QueryHub {
    fn default() -> Self {
        QueryHub::new()
    }
}

impl std::fmt::Debug for QueryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryHub")
            .field("slice", &self.inner.slice)
            .field("status", &self.status())
            .finish()
    }
}

impl QueryHub {
    /// Look-ups a worker answers at most per activation by default.
    pub const DEFAULT_SLICE: usize = 64;
    /// Look-ups that may wait per worker before new ones are refused (503).
    pub const DEFAULT_QUEUE_LIMIT: usize = 4096;

    /// A hub with the default slice.
    pub fn new() -> Self {
        Self::with_slice(Self::DEFAULT_SLICE)
    }

    /// A hub whose workers answer at most `slice` look-ups (each of up to a batch of
    /// keys) per activation, between record batches.
    pub fn with_slice(slice: usize) -> Self {
        QueryHub {
            inner: Arc::new(Inner {
                slice: slice.max(1),
                queue_limit: Self::DEFAULT_QUEUE_LIMIT,
                attempt: Mutex::new(Attempt {
                    reason: Some("the job has not started".into()),
                    ..Attempt::default()
                }),
            }),
        }
    }

    /// Look-ups a worker answers per activation.
    pub fn slice(&self) -> usize {
        self.inner.slice
    }

    fn attempt(&self) -> MutexGuard<'_, Attempt> {
        lock(&self.inner.attempt)
    }

    /// Whether the job runs, and which attempt.
    pub fn status(&self) -> HubStatus {
        let a = self.attempt();
        HubStatus {
            running: a.running,
            attempt: a.attempt,
            process: a.process,
            processes: a.processes.max(1),
            reason: a.reason.clone(),
        }
    }

    fn running(&self) -> Result<MutexGuard<'_, Attempt>, QueryError> {
        let a = self.attempt();
        if a.running {
            Ok(a)
        } else {
            Err(QueryError::Unavailable(
                a.reason
                    .clone()
                    .unwrap_or_else(|| "the job is not running".into()),
            ))
        }
    }

    /// The queryable states, by name.
    pub fn states(&self) -> Result<Vec<QueryableState>, QueryError> {
        Ok(self
            .running()?
            .states
            .values()
            .map(|r| QueryableState::clone(&r.info))
            .collect())
    }

    /// One queryable state.
    pub fn state(&self, name: &str) -> Result<Arc<QueryableState>, QueryError> {
        let a = self.running()?;
        a.states
            .get(name)
            .map(|r| r.info.clone())
            .ok_or_else(|| QueryError::UnknownState(name.into()))
    }

    /// The TTL of state `name`, if it has one in effect (`committed` reads apply it
    /// as the state's own reads do).
    pub fn ttl(&self, name: &str) -> Result<Option<StateTtlConfig>, QueryError> {
        let a = self.running()?;
        a.states
            .get(name)
            .map(|r| r.ttl.clone())
            .ok_or_else(|| QueryError::UnknownState(name.into()))
    }

    /// Where `key` of state `name` lives. A key that does not decode as the key type
    /// is retried as the string of its text (`/keys/42` for a string key `"42"`).
    pub fn route(&self, name: &str, key: &Value) -> Result<Route, QueryError> {
        let (key_group_of, max_p, parallelism, workers) = {
            let a = self.running()?;
            let reg = a
                .states
                .get(name)
                .ok_or_else(|| QueryError::UnknownState(name.into()))?;
            (
                reg.key_group.clone(),
                reg.info.max_parallelism,
                reg.info.parallelism,
                a.workers.max(1),
            )
        };
        let (key, key_group) = match key_group_of(key) {
            Ok(kg) => (key.clone(), kg),
            Err(first) => {
                let text = match key {
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => "null".into(),
                    _ => return Err(first),
                };
                let s = Value::String(text);
                match key_group_of(&s) {
                    Ok(kg) => (s, kg),
                    Err(_) => return Err(first),
                }
            }
        };
        let worker = operator_index_for_key_group(max_p, parallelism, key_group)
            .map_err(|e| QueryError::State(e.to_string()))?;
        Ok(Route {
            key,
            key_group,
            worker,
            process: worker as usize / workers,
        })
    }

    /// Hands `lookup` (keys all owned by `worker`, a worker of this process) to that
    /// worker; the answer arrives on the returned channel (a dropped channel: the
    /// attempt ended, ask again).
    pub fn live(
        &self,
        worker: u32,
        lookup: LiveLookup,
    ) -> Result<oneshot::Receiver<Result<LiveAnswer, QueryError>>, QueryError> {
        let mailbox = {
            let a = self.running()?;
            if !a.states.contains_key(&lookup.state) {
                return Err(QueryError::UnknownState(lookup.state));
            }
            a.mailboxes
                .get(&(lookup.state.clone(), worker))
                .cloned()
                .ok_or_else(|| {
                    QueryError::Unavailable(format!(
                        "worker {worker} of `{}` is not in this process",
                        lookup.state
                    ))
                })?
        };
        let (tx, rx) = oneshot::channel();
        mailbox.push(Pending { lookup, reply: tx }, self.inner.queue_limit)?;
        Ok(rx)
    }

    /// The last completed checkpoint (or the one the job restored), for `committed`
    /// reads.
    pub fn committed(&self) -> Result<Option<Committed>, QueryError> {
        Ok(self.running()?.committed.clone())
    }

    /// A new attempt of the job begins: process `process` of `processes`, with
    /// `workers` workers each; nothing answers until every local worker started.
    pub(crate) fn begin(&self, process: usize, processes: usize, workers: usize) {
        let mut a = self.attempt();
        let attempt = a.attempt + 1;
        *a = Attempt {
            attempt,
            running: false,
            reason: Some("the job is starting (restoring its state)".into()),
            process,
            processes,
            workers,
            ..Attempt::default()
        };
    }

    /// The attempt has ended (`why`): look-ups get 503 until the next one runs; the
    /// mailboxes go, and with them the replies of look-ups still waiting.
    pub(crate) fn end(&self, why: &str) {
        let mut a = self.attempt();
        a.running = false;
        a.reason = Some(why.to_string());
        a.states.clear();
        a.mailboxes.clear();
    }

    /// The attempt number now running (or starting).
    pub(crate) fn current_attempt(&self) -> u64 {
        self.attempt().attempt
    }

    /// A keyed operator instance (global `worker` index) registers its queryable
    /// states and its mailbox. A name another operator registered is an error.
    pub(crate) fn register(
        &self,
        worker: u32,
        states: Vec<Registered>,
        mailbox: &Arc<Mailbox>,
    ) -> Result<(), String> {
        let mut a = self.attempt();
        for r in states {
            let name = r.info.name.clone();
            if let Some(existing) = a.states.get(&name)
                && (existing.info.operator != r.info.operator
                    || existing.info.state != r.info.state)
            {
                return Err(format!(
                    "queryable name `{name}` is used by two states (`{}` of {:?} and `{}` of {:?})",
                    existing.info.state, existing.info.operator, r.info.state, r.info.operator
                ));
            }
            a.mailboxes.insert((name.clone(), worker), mailbox.clone());
            a.states.insert(name, r);
        }
        Ok(())
    }

    /// A local worker has started (its operators restored); the attempt runs once
    /// all have.
    pub(crate) fn worker_started(&self) {
        let mut a = self.attempt();
        a.started += 1;
        if a.started >= a.workers {
            a.running = true;
            a.reason = None;
        }
    }

    /// Checkpoint `id` in `path` completed (or was restored).
    pub(crate) fn set_committed(&self, id: u64, path: PathBuf) {
        let mut a = self.attempt();
        if a.committed.as_ref().is_none_or(|c| c.id < id) {
            a.committed = Some(Committed { id, path });
        }
    }
}

/// Tells `hub` of every checkpoint or savepoint that completes on this worker's
/// process (where its files are), and of the one the job restored when it is the
/// job's own, for `committed` reads. Once per worker.
pub(crate) fn follow_completions(hub: &QueryHub, ctx: &WorkerCheckpoints) {
    let Some(dir) = ctx
        .coordinator
        .config()
        .local_dir()
        .map(|d| d.to_path_buf())
    else {
        return;
    };
    // A follower process does not know which kind a completed id was: its
    // `_metadata` says where it is.
    let committed = move |hub: &QueryHub, id: u64| {
        let found = [SnapshotKind::Checkpoint, SnapshotKind::Savepoint]
            .into_iter()
            .map(|k| dir.join(k.location(id)))
            .find(|p| p.join("_metadata").is_file());
        if let Some(path) = found {
            hub.set_committed(id, path);
        }
    };
    if let Some(r) = ctx.restored.as_ref().filter(|r| r.own) {
        committed(hub, r.metadata.id);
    }
    let hub = hub.clone();
    ctx.on_complete(move |id| {
        committed(&hub, id);
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, operator: &str) -> Registered {
        Registered {
            info: Arc::new(QueryableState {
                name: name.into(),
                state: name.into(),
                operator: Some(operator.into()),
                kind: "value".into(),
                key_type: "u32".into(),
                key_schema: None,
                value_type: "u64".into(),
                value_schema: None,
                user_key_type: None,
                user_key_schema: None,
                namespace_type: None,
                ttl_ms: None,
                max_parallelism: 8,
                parallelism: 4,
            }),
            // Key `n` (a number) is in key group `n`; anything else is a bad key.
            key_group: Arc::new(|v: &Value| {
                v.as_u64()
                    .map(|n| n as u32 % 8)
                    .ok_or_else(|| QueryError::BadKey(format!("{v}")))
            }),
            ttl: None,
        }
    }

    fn unavailable<T: std::fmt::Debug>(r: Result<T, QueryError>) -> bool {
        matches!(r, Err(QueryError::Unavailable(_)))
    }

    #[test]
    fn nothing_answers_until_every_local_worker_started() {
        let hub = QueryHub::new();
        assert!(!hub.status().running);
        assert!(unavailable(hub.states()));
        hub.begin(1, 2, 2);
        let mailbox = Arc::new(Mailbox::default());
        assert_eq!(
            hub.register(2, vec![state("counts", "op")], &mailbox),
            Ok(())
        );
        hub.worker_started();
        assert!(unavailable(hub.route("counts", &Value::from(1))));
        hub.worker_started();
        assert!(hub.status().running);
        assert_eq!(hub.status().attempt, 1);
        assert_eq!(hub.states().map(|s| s.len()), Ok(1));
    }

    #[test]
    fn routes_follow_key_groups_to_workers_and_processes() {
        let hub = QueryHub::new();
        hub.begin(0, 2, 2);
        let mailbox = Arc::new(Mailbox::default());
        assert_eq!(
            hub.register(0, vec![state("counts", "op")], &mailbox),
            Ok(())
        );
        hub.worker_started();
        hub.worker_started();
        // 8 key groups over 4 workers: groups 2k and 2k+1 on worker k; 2 workers a
        // process.
        for (key, worker, process) in [(0, 0, 0), (3, 1, 0), (4, 2, 1), (7, 3, 1)] {
            let r = hub.route("counts", &Value::from(key));
            assert_eq!(
                r.map(|r| (r.key_group, r.worker, r.process)),
                Ok((key as u32, worker, process))
            );
        }
        assert!(matches!(
            hub.route("nope", &Value::from(1)),
            Err(QueryError::UnknownState(_))
        ));
        assert!(matches!(
            hub.route("counts", &Value::from("x")),
            Err(QueryError::BadKey(_))
        ));
    }

    #[test]
    fn a_queryable_name_belongs_to_one_state() {
        let hub = QueryHub::new();
        hub.begin(0, 1, 2);
        let (a, b) = (Arc::new(Mailbox::default()), Arc::new(Mailbox::default()));
        assert_eq!(hub.register(0, vec![state("counts", "op")], &a), Ok(()));
        // The same operator's other instance: fine.
        assert_eq!(hub.register(1, vec![state("counts", "op")], &b), Ok(()));
        assert!(hub.register(1, vec![state("counts", "other")], &b).is_err());
    }

    #[test]
    fn look_ups_wait_in_the_owners_mailbox_and_die_with_the_attempt() {
        let hub = QueryHub::new();
        hub.begin(0, 1, 1);
        let mailbox = Arc::new(Mailbox::default());
        assert_eq!(
            hub.register(0, vec![state("counts", "op")], &mailbox),
            Ok(())
        );
        hub.worker_started();
        let lookup = |keys: Vec<Value>| LiveLookup {
            state: "counts".into(),
            keys,
            user_key: None,
            namespace: None,
        };
        let first = hub.live(0, lookup(vec![Value::from(1)]));
        let second = hub.live(0, lookup(vec![Value::from(2)]));
        assert!(
            unavailable(hub.live(3, lookup(vec![]))),
            "no such worker here"
        );
        let (taken, more) = mailbox.take(1);
        assert_eq!((taken.len(), more), (1, true));
        for p in taken {
            assert_eq!(p.lookup.keys, vec![Value::from(1)]);
            let _ = p.reply.send(Ok(LiveAnswer {
                values: vec![Some(Value::from(10))],
                checkpoint: 4,
                watermark: i64::MIN,
                attempt: 1,
            }));
        }
        let answered = first.ok().and_then(|mut rx| rx.try_recv().ok());
        assert_eq!(
            answered.and_then(|a| a.ok()).map(|a| a.values),
            Some(vec![Some(Value::from(10))])
        );
        // The attempt ends: nothing answers, and what waited gets no reply.
        hub.end("the job failed");
        drop(mailbox);
        assert!(unavailable(hub.states()));
        assert_eq!(hub.status().reason.as_deref(), Some("the job failed"));
        let mut second = second.ok();
        assert!(second.as_mut().is_some_and(|rx| rx.try_recv().is_err()));
        // The next attempt starts empty.
        hub.begin(0, 1, 1);
        hub.worker_started();
        assert_eq!(hub.states().map(|s| s.len()), Ok(0));
        assert_eq!(hub.status().attempt, 2);
    }

    #[test]
    fn the_committed_checkpoint_only_moves_forward() {
        let hub = QueryHub::new();
        hub.begin(0, 1, 1);
        hub.worker_started();
        hub.set_committed(5, PathBuf::from("/ck/chk-5"));
        hub.set_committed(3, PathBuf::from("/ck/chk-3"));
        assert_eq!(hub.committed().ok().flatten().map(|c| c.id), Some(5));
        hub.set_committed(6, PathBuf::from("/ck/savepoints/sp-6"));
        assert_eq!(
            hub.committed().ok().flatten().map(|c| c.path),
            Some(PathBuf::from("/ck/savepoints/sp-6"))
        );
    }
}

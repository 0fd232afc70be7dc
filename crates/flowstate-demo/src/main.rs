//! The main demo: per-user spend over a deterministic stream of payment events, with
//! keyed state, periodic asynchronous checkpoints and recovery.
//!
//! Each of `--workers` operator instances owns a key-group range and its own keyed
//! backend; events are routed to the instance owning the user's key group. Every
//! `--checkpoint-every` events the job takes a checkpoint: the synchronous part on the
//! processing thread, the files written by a background thread while processing goes
//! on, then `chk-<id>/_metadata` published atomically. On start it resumes from the
//! newest complete checkpoint in `--dir` (at any `--workers`: state is rescaled by key
//! group) and replays the stream from the stored position. `--crash-after N` exits
//! abruptly after N events so you can watch recovery. At the end the state is checked
//! against a computation that never failed.
//!
//! `--backend rocksdb` (the default) checkpoints incrementally: each checkpoint uploads
//! only the RocksDB files the previous one did not, and a shared-file registry deletes
//! files once no retained checkpoint needs them. `--backend heap` writes full canonical
//! snapshots. Until the streaming runtime lands this drives the instances from one
//! thread.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use flowstate_core::backend::{KeyedBackendConfig, KeyedBackendFactory, KeyedStateBackend};
use flowstate_core::descriptor::{ListStateDescriptor, ValueStateDescriptor};
use flowstate_core::keygroup::{
    KeyGroupRange, key_group_range_for_operator, operator_index_for_key_group,
};
use flowstate_core::operator::{OperatorStateHandle, OperatorStateStore};
use flowstate_core::registry::SharedStateRegistry;
use flowstate_core::serializer::SerdeSerializer;
use flowstate_core::snapshot::{AsyncKeyedSnapshot, KeyedStateHandle};
use flowstate_core::state::{ListState, VoidNamespace};
use flowstate_core::storage::CheckpointStorage;
use flowstate_heap::HeapBackendFactory;
use flowstate_rocksdb::{RestoreMode, RocksDbOptions, SnapshotMode};
use flowstate_storage::ObjectCheckpointStorage;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(about = "Flowstate demo: a checkpointed keyed job you can kill and resume")]
struct Args {
    /// Checkpoint directory (resumed from when it holds a checkpoint).
    #[arg(long, default_value = "/tmp/flowstate-demo")]
    dir: String,
    /// Operator parallelism (may differ from the checkpoint's: state is rescaled).
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Total events of the stream.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Distinct users (keys).
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Events between checkpoints.
    #[arg(long, default_value_t = 250_000)]
    checkpoint_every: u64,
    /// Exit abruptly after this many events of this run (simulated crash).
    #[arg(long)]
    crash_after: Option<u64>,
    /// Start over: delete the checkpoints in --dir first.
    #[arg(long)]
    fresh: bool,
    /// State backend: `rocksdb` (embedded, incremental checkpoints) or `heap`.
    #[arg(long, default_value = "rocksdb")]
    backend: String,
}

const MAX_P: u32 = 128;
const RETAINED: usize = 2;

#[derive(Serialize, Deserialize)]
struct Metadata {
    id: u64,
    events: u64,
    parallelism: u32,
    max_parallelism: u32,
    keyed: Vec<KeyedStateHandle>,
    operator: Vec<OperatorStateHandle>,
}

/// Event `i` of the stream: (user, amount in cents). Deterministic, so a replay is exact.
fn event(i: u64, users: u64) -> (u64, u64) {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % users, (z >> 32) % 10_000 + 1)
}

struct Instance<B> {
    backend: B,
    operator: OperatorStateStore,
}

fn total() -> ValueStateDescriptor<u64> {
    ValueStateDescriptor::new("total-spend").with_default(0)
}
fn recent() -> ListStateDescriptor<u64> {
    ListStateDescriptor::new("recent-payments")
}
fn position() -> ListStateDescriptor<u64> {
    ListStateDescriptor::new("source-position")
}

fn config(range: KeyGroupRange) -> KeyedBackendConfig<u64> {
    KeyedBackendConfig {
        max_parallelism: MAX_P,
        key_group_range: range,
        key_serializer: SerdeSerializer::<u64>::arc(),
    }
}

fn latest_checkpoint(storage: &dyn CheckpointStorage) -> Result<Option<Metadata>> {
    let mut ids: Vec<u64> = storage
        .list("")?
        .iter()
        .filter_map(|p| {
            p.strip_prefix("chk-")?
                .strip_suffix("/_metadata")?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    for id in ids.into_iter().rev() {
        let bytes = storage.get(&format!("chk-{id}/_metadata"))?;
        match serde_json::from_slice::<Metadata>(&bytes) {
            Ok(m) => return Ok(Some(m)),
            Err(e) => eprintln!("skipping checkpoint {id}: unreadable metadata ({e})"),
        }
    }
    Ok(None)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.workers == 0 || args.workers > MAX_P || args.users == 0 || args.checkpoint_every == 0 {
        bail!("--workers must be in 1..={MAX_P}; --users and --checkpoint-every must be positive");
    }
    if args.fresh {
        let _ = std::fs::remove_dir_all(&args.dir);
    }
    match args.backend.as_str() {
        "heap" => run(&args, &HeapBackendFactory),
        "rocksdb" => {
            let local = std::path::Path::new(&args.dir).join("local");
            let _ = std::fs::remove_dir_all(&local);
            let opts = RocksDbOptions::new(local)
                .with_snapshot_mode(SnapshotMode::Incremental)
                .with_restore_mode(RestoreMode::Claim);
            run(&args, &opts)
        }
        other => bail!("unknown --backend `{other}` (use rocksdb or heap)"),
    }
}

fn run<F: KeyedBackendFactory>(args: &Args, backends: &F) -> Result<()> {
    // Checkpoints live under `<dir>/checkpoints`; RocksDB's working files under `<dir>/local`.
    let storage =
        ObjectCheckpointStorage::local(std::path::Path::new(&args.dir).join("checkpoints"))
            .with_context(|| format!("opening {}", args.dir))?;
    let p = args.workers;

    // Restore from the newest complete checkpoint, or start empty.
    let restored = latest_checkpoint(&storage)?;
    let (mut instances, mut next_event, mut next_id) = (Vec::new(), 0u64, 1u64);
    let started = Instant::now();
    for i in 0..p {
        let range = key_group_range_for_operator(MAX_P, p, i)?;
        let instance = match &restored {
            Some(m) => Instance {
                backend: backends.restore(config(range), &storage, &m.keyed)?,
                operator: OperatorStateStore::restore(&storage, &m.operator, i, p)?,
            },
            None => Instance {
                backend: backends.create(config(range))?,
                operator: OperatorStateStore::new(i),
            },
        };
        instances.push(instance);
    }
    // Claim mode: this job owns the restored checkpoint's shared files from now on.
    let mut registry = SharedStateRegistry::new();
    if let Some(m) = &restored {
        registry.register(m.id, &m.keyed);
    }
    if let Some(m) = &restored {
        // The source position is union state: every instance sees it; take the maximum.
        next_event = instances[0]
            .operator
            .union_list_state(&position())?
            .get()?
            .into_iter()
            .max()
            .unwrap_or(0);
        next_id = m.id + 1;
        println!(
            "resumed from checkpoint {} (event {}, {} → {} workers) in {:.1} ms",
            m.id,
            m.events,
            m.parallelism,
            p,
            started.elapsed().as_secs_f64() * 1e3
        );
    } else {
        println!(
            "starting a fresh job: {} events, {} users, {p} workers",
            args.events, args.users
        );
    }

    let handles: Vec<_> = instances
        .iter()
        .map(|inst| -> Result<_> {
            Ok((
                inst.backend.value_state::<VoidNamespace, u64>(&total())?,
                inst.backend.list_state::<VoidNamespace, u64>(&recent())?,
                inst.operator.union_list_state(&position())?,
            ))
        })
        .collect::<Result<_>>()?;

    let mut pending: Option<std::thread::JoinHandle<Result<Metadata>>> = None;
    let run_started = Instant::now();
    let mut processed_this_run = 0u64;
    while next_event < args.events {
        let (user, amount) = event(next_event, args.users);
        let kg = instances[0].backend.key_group_of(&user)?;
        let i = operator_index_for_key_group(MAX_P, p, kg)? as usize;
        let (spend, last, _) = &handles[i];
        instances[i].backend.set_current_key(user)?;
        spend.update(spend.value()?.unwrap_or(0) + amount)?;
        let mut l = last.get()?;
        l.push(amount);
        if l.len() > 3 {
            l.remove(0);
        }
        last.update(l)?;
        next_event += 1;
        processed_this_run += 1;

        if next_event % args.checkpoint_every == 0 || next_event == args.events {
            // Synchronous part: record the source position, capture every instance.
            if let Some(prev) = pending.take() {
                complete(prev, &instances, &mut registry, &storage)?;
            }
            let id = next_id;
            next_id += 1;
            let sync = Instant::now();
            let mut keyed = Vec::new();
            let mut ops = Vec::new();
            for (inst, (_, _, pos)) in instances.iter().zip(&handles) {
                pos.update(vec![next_event])?;
                keyed.push(inst.backend.snapshot(id)?);
                ops.push(inst.operator.snapshot()?);
            }
            let sync_ms = sync.elapsed().as_secs_f64() * 1e3;
            let (dir, events) = (args.dir.clone(), next_event);
            // Asynchronous part: write files, then publish the metadata atomically.
            pending = Some(std::thread::spawn(move || -> Result<Metadata> {
                let storage =
                    ObjectCheckpointStorage::local(std::path::Path::new(&dir).join("checkpoints"))?;
                let t = Instant::now();
                let mut meta = Metadata {
                    id,
                    events,
                    parallelism: p,
                    max_parallelism: MAX_P,
                    keyed: Vec::new(),
                    operator: Vec::new(),
                };
                for (i, (k, o)) in keyed.into_iter().zip(ops).enumerate() {
                    meta.keyed
                        .push(k.write(&storage, &format!("chk-{id}/keyed-{i}.kgs"))?);
                    meta.operator
                        .push(o.write(&storage, &format!("chk-{id}/operator-{i}.ops"))?);
                }
                storage.put(
                    &format!("chk-{id}/_metadata"),
                    serde_json::to_vec_pretty(&meta)?.into(),
                )?;
                let full: u64 = meta.keyed.iter().map(|h| h.full_size()).sum();
                let uploaded: u64 = meta.keyed.iter().map(|h| h.uploaded_bytes).sum();
                println!(
                    "checkpoint {id} written in {} ms: state {full} bytes, uploaded {uploaded} bytes",
                    t.elapsed().as_millis()
                );
                Ok(meta)
            }));
            println!(
                "checkpoint {id} at event {next_event}: synchronous part {sync_ms:.3} ms, writing in the background"
            );
        }
        if args.crash_after == Some(processed_this_run) {
            println!(
                "simulated crash after {processed_this_run} events (event {next_event}); run again to resume"
            );
            std::process::exit(3);
        }
    }
    if let Some(prev) = pending.take() {
        complete(prev, &instances, &mut registry, &storage)?;
    }
    let secs = run_started.elapsed().as_secs_f64();
    println!(
        "processed {processed_this_run} events in {secs:.2} s ({:.0} events/s)",
        processed_this_run as f64 / secs.max(1e-9)
    );
    verify(&instances, args)
}

/// A checkpoint's files and metadata are written: tell every backend (incremental
/// bookkeeping), register its shared files and drop what retention no longer needs.
fn complete<B: KeyedStateBackend<u64>>(
    h: std::thread::JoinHandle<Result<Metadata>>,
    instances: &[Instance<B>],
    registry: &mut SharedStateRegistry,
    storage: &dyn CheckpointStorage,
) -> Result<()> {
    let meta = h
        .join()
        .map_err(|_| anyhow::anyhow!("checkpoint thread panicked"))??;
    for inst in instances {
        inst.backend.notify_checkpoint_complete(meta.id)?;
    }
    registry.register(meta.id, &meta.keyed);
    registry.retain_latest(RETAINED, storage)?;
    for path in storage.list("")? {
        let id = path
            .strip_prefix("chk-")
            .and_then(|r| r.split('/').next())
            .and_then(|s| s.parse::<u64>().ok());
        if id.is_some_and(|id| id + RETAINED as u64 <= meta.id) {
            storage.delete(&path)?;
        }
    }
    println!("checkpoint {} complete", meta.id);
    Ok(())
}

/// Recomputes the job without failures and compares every user's state.
fn verify<B: KeyedStateBackend<u64>>(instances: &[Instance<B>], args: &Args) -> Result<()> {
    let mut expected: BTreeMap<u64, (u64, Vec<u64>)> = BTreeMap::new();
    for i in 0..args.events {
        let (user, amount) = event(i, args.users);
        let e = expected.entry(user).or_default();
        e.0 += amount;
        e.1.push(amount);
        if e.1.len() > 3 {
            e.1.remove(0);
        }
    }
    let mut checked = 0;
    for inst in instances {
        let spend = inst.backend.value_state::<VoidNamespace, u64>(&total())?;
        let last = inst.backend.list_state::<VoidNamespace, u64>(&recent())?;
        for user in inst.backend.keys("total-spend", &VoidNamespace)? {
            inst.backend.set_current_key(user)?;
            let (t, l) = expected.get(&user).cloned().unwrap_or_default();
            if spend.value()? != Some(t) || last.get()? != l {
                bail!("user {user}: state differs from a run without failures");
            }
            checked += 1;
        }
    }
    if checked != expected.len() {
        bail!("{checked} users in state, {} expected", expected.len());
    }
    let mut top: Vec<_> = expected.iter().map(|(u, (t, _))| (*t, *u)).collect();
    top.sort_unstable_by(|a, b| b.cmp(a));
    for (t, u) in top.iter().take(3) {
        println!("  user {u:>6}: {:.2} spent", *t as f64 / 100.0);
    }
    println!("verified: all {checked} users' state equals a run that never failed");
    Ok(())
}

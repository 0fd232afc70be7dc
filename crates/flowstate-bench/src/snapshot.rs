//! `flowstate-bench snapshot`: a checkpoint's costs on one `ValueState<u64>` of N keys.
//!
//! Fills the keys, then measures a checkpoint's synchronous part and asynchronous
//! write, writes made while a snapshot is in flight, a second checkpoint after 1% of
//! the keys changed (incremental on `rocksdb-incremental`), a canonical savepoint,
//! restores (from the checkpoint, from the savepoint, and rescaled to two instances)
//! and reading every key back. Figures are medians over the iterations, with min and
//! max; inputs are deterministic.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use flowstate_core::backend::{KeyedBackendFactory, KeyedStateBackend};
use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::keygroup::{KeyGroupRange, key_group_range_for_operator};
use flowstate_core::snapshot::{AsyncKeyedSnapshot, KeyedStateHandle};
use flowstate_core::state::VoidNamespace;
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::ObjectCheckpointStorage;

use crate::{config, median_of};

const STATE: &str = "value";

/// One figure's samples and unit.
struct Figure {
    op: &'static str,
    samples: Vec<f64>,
    unit: &'static str,
}

impl Figure {
    fn stats(&self) -> (f64, f64, f64) {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        (
            median_of(&s),
            *s.first().unwrap_or(&0.0),
            *s.last().unwrap_or(&0.0),
        )
    }
}

/// The suite's figures, each with its samples.
pub(crate) struct Figures(Vec<Figure>);

impl Figures {
    fn add(&mut self, op: &'static str, unit: &'static str, v: f64) {
        match self.0.iter_mut().find(|f| f.op == op) {
            Some(f) => f.samples.push(v),
            None => self.0.push(Figure {
                op,
                samples: vec![v],
                unit,
            }),
        }
    }
    fn ms(&mut self, op: &'static str, d: Duration) {
        self.add(op, "ms", d.as_secs_f64() * 1e3);
    }
    fn bytes(&mut self, op: &'static str, b: u64) {
        self.add(op, "bytes", b as f64);
    }
}

/// Deterministic value of key `k` in generation `g` (a splitmix-style scramble).
fn value_of(k: u64, g: u64) -> u64 {
    let mut z = k.wrapping_add(g.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^ (z >> 27)
}

/// The generation key `k` holds after the 1% update (`fill(.., 1, 100)`): 1 for one key
/// in 100, 0 for the rest.
fn generation_after_update(k: u64) -> u64 {
    u64::from(k.is_multiple_of(100))
}

/// Writes every `step`-th key's value of `generation`; returns the time taken.
fn fill<B: KeyedStateBackend<u64>>(
    b: &B,
    keys: u64,
    generation: u64,
    step: u64,
) -> Result<Duration> {
    let s = b.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new(STATE))?;
    let t = Instant::now();
    let mut k = 0;
    while k < keys {
        b.set_current_key(k)?;
        s.update(value_of(k, generation))?;
        k += step;
    }
    Ok(t.elapsed())
}

/// Rewrites every key with the value it holds after the 1% update.
fn rewrite<B: KeyedStateBackend<u64>>(b: &B, keys: u64) -> Result<Duration> {
    let s = b.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new(STATE))?;
    let t = Instant::now();
    for k in 0..keys {
        b.set_current_key(k)?;
        s.update(value_of(k, generation_after_update(k)))?;
    }
    Ok(t.elapsed())
}

/// Reads every key back; one key in 100 was rewritten in generation 1.
fn read_back<B: KeyedStateBackend<u64>>(b: &B, keys: u64) -> Result<Duration> {
    let s = b.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new(STATE))?;
    let t = Instant::now();
    for k in 0..keys {
        b.set_current_key(k)?;
        let expected = value_of(k, generation_after_update(k));
        if s.value()? != Some(expected) {
            bail!("key {k}: wrong value after restore");
        }
    }
    Ok(t.elapsed())
}

/// Restores the two instances of parallelism 2; checks every key is restored once.
fn restore_rescaled<F: KeyedBackendFactory>(
    f: &F,
    storage: &dyn CheckpointStorage,
    h: &[KeyedStateHandle],
    max_p: u32,
    keys: u64,
) -> Result<Duration> {
    let t = Instant::now();
    let mut backends = Vec::new();
    for i in 0..2 {
        let range = key_group_range_for_operator(max_p, 2, i)?;
        let r = f.restore(config(max_p, range), storage, h)?;
        r.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new(STATE))?;
        backends.push(r);
    }
    let elapsed = t.elapsed();
    let total: usize = backends
        .iter()
        .map(|b| b.keys(STATE, &VoidNamespace).map(|k| k.len()))
        .sum::<Result<usize, _>>()?;
    if total as u64 != keys {
        bail!("rescaled restore holds {total} keys, expected {keys}");
    }
    Ok(elapsed)
}

/// Runs the suite `iterations` times on backends from `f`.
pub(crate) fn snapshot_bench<F: KeyedBackendFactory>(
    f: &F,
    keys: u64,
    iterations: usize,
    max_p: u32,
) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let storage = ObjectCheckpointStorage::local(dir.path())?;
    let all = KeyGroupRange::all(max_p)?;
    let mut figs = Figures(Vec::new());
    for it in 0..iterations {
        eprintln!(
            "[snapshot] iteration {}/{iterations}: filling {keys} keys",
            it + 1
        );
        let b = f.create(config(max_p, all))?;
        figs.ms("fill_all_keys", fill(&b, keys, 0, 1)?);

        let t = Instant::now();
        let snap = b.snapshot(1)?;
        figs.ms("checkpoint1_sync_part", t.elapsed());
        let t = Instant::now();
        let h1 = snap.write(&storage, &format!("it{it}/chk-1"))?;
        figs.ms("checkpoint1_async_part", t.elapsed());
        figs.bytes("checkpoint1_uploaded_bytes", h1.uploaded_bytes);
        b.notify_checkpoint_complete(1)?;

        // Second checkpoint after 1% of keys changed.
        fill(&b, keys, 1, 100)?;
        let t = Instant::now();
        let snap = b.snapshot(3)?;
        figs.ms("checkpoint2_1pct_sync_part", t.elapsed());
        let t = Instant::now();
        let h2 = snap.write(&storage, &format!("it{it}/chk-2"))?;
        figs.ms("checkpoint2_1pct_async_part", t.elapsed());
        figs.bytes("checkpoint2_1pct_uploaded_bytes", h2.uploaded_bytes);
        figs.bytes("checkpoint2_full_size_bytes", h2.full_size());
        b.notify_checkpoint_complete(3)?;

        let t = Instant::now();
        let sp = b.savepoint()?;
        figs.ms("savepoint_sync_part", t.elapsed());
        let t = Instant::now();
        let hs = sp.write(&storage, &format!("it{it}/savepoint"))?;
        figs.ms("savepoint_async_part", t.elapsed());
        figs.bytes("savepoint_bytes", hs.size);
        // Writes with no snapshot in flight, then while one is held (on the heap
        // backend every key group is copied once). Rewrites the same values.
        figs.ms("update_all_keys_no_snapshot", rewrite(&b, keys)?);
        let held = b.snapshot(2)?;
        figs.ms("update_all_keys_snapshot_held", rewrite(&b, keys)?);
        drop(held);
        b.notify_checkpoint_aborted(2)?;

        drop(b);

        for (op, h) in [
            ("restore_from_checkpoint1", &h1),
            ("restore_from_checkpoint2", &h2),
            ("restore_from_savepoint", &hs),
        ] {
            let t = Instant::now();
            let r = f.restore(config(max_p, all), &storage, std::slice::from_ref(h))?;
            r.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new(STATE))?;
            figs.ms(op, t.elapsed());
            if op == "restore_from_checkpoint2" {
                figs.ms("read_back_all_keys", read_back(&r, keys)?);
            }
        }
        figs.ms(
            "restore_checkpoint_rescaled_to_p2",
            restore_rescaled(f, &storage, std::slice::from_ref(&h2), max_p, keys)?,
        );
        figs.ms(
            "restore_savepoint_rescaled_to_p2",
            restore_rescaled(f, &storage, std::slice::from_ref(&hs), max_p, keys)?,
        );
    }
    Ok(figs)
}

/// Prints the figures as a table, or as JSON lines when `json`.
pub(crate) fn print(figs: &Figures, backend: &str, keys: u64, iterations: usize, json: bool) {
    if json {
        for f in &figs.0 {
            let (median, min, max) = f.stats();
            let unit_key = if f.unit == "bytes" { "bytes" } else { "millis" };
            println!(
                "{}",
                serde_json::json!({
                    "suite": "snapshot", "backend": backend, "state": "ValueState<u64>", "keys": keys,
                    "op": f.op, unit_key: median, "iterations": iterations, "min": min, "max": max,
                })
            );
        }
        return;
    }
    println!(
        "snapshot benchmark: backend {backend}, {keys} keys, ValueState<u64>, {iterations} iterations"
    );
    println!(
        "{:<36} {:>14} {:>14} {:>14}",
        "figure", "median", "min", "max"
    );
    for f in &figs.0 {
        let (median, min, max) = f.stats();
        let fmt = |v: f64| {
            if f.unit == "bytes" {
                format!("{v:.0} B")
            } else {
                format!("{v:.3} ms")
            }
        };
        println!(
            "{:<36} {:>14} {:>14} {:>14}",
            f.op,
            fmt(median),
            fmt(min),
            fmt(max)
        );
    }
}

//! Migration throughput: a value state of N records of a version-1 type is
//! checkpointed, then restored with its version-2 type (a field renamed through an
//! alias, numbers widened, a variant and a defaulted field added), which migrates every
//! value; beside it, the same restore with the unchanged type (read as is). Reported
//! as values/s of the registration that loads (heap) or rewrites (RocksDB) the state,
//! on one core.

use std::time::Instant;

use anyhow::{Result, bail};
use flowstate_core::backend::{KeyedBackendFactory, KeyedStateBackend};
use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::snapshot::AsyncKeyedSnapshot;
use flowstate_core::state::VoidNamespace;
use flowstate_storage::ObjectCheckpointStorage;
use serde::{Deserialize, Serialize};

use crate::config;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum StatusV1 {
    Open,
    Done { at: u32 },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct EventV1 {
    id: u64,
    user: String,
    amount: f32,
    tags: Vec<u32>,
    status: StatusV1,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum StatusV2 {
    Open,
    Cancelled,
    Done { at: u64 },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct EventV2 {
    id: u64,
    #[serde(alias = "user")]
    user_name: String,
    amount: f64,
    tags: Vec<u64>,
    status: StatusV2,
    #[serde(default)]
    region: Option<String>,
}

fn v1(k: u64) -> EventV1 {
    EventV1 {
        id: k,
        user: format!("user-{}", k % 10_000),
        amount: (k % 1000) as f32 * 0.5,
        tags: vec![k as u32 % 7, 3],
        status: if k.is_multiple_of(2) {
            StatusV1::Open
        } else {
            StatusV1::Done { at: k as u32 }
        },
    }
}

/// Median values/s of (migrating restore, as-is restore).
pub(crate) fn migrate_bench<F: KeyedBackendFactory>(
    f: &F,
    values: u64,
    iterations: usize,
) -> Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let storage = ObjectCheckpointStorage::local(dir.path())?;
    let all = KeyGroupRange::all(128)?;
    let name = "events";
    let b = f.create(config(128, all))?;
    let s = b.value_state::<VoidNamespace, EventV1>(&ValueStateDescriptor::new(name))?;
    for k in 0..values {
        b.set_current_key(k)?;
        s.update(v1(k))?;
    }
    let h = b.savepoint()?.write(&storage, "savepoint")?;
    drop(b);
    let (mut migrate, mut as_is) = (Vec::new(), Vec::new());
    for it in 0..iterations {
        eprintln!("[migrate] iteration {}/{iterations}", it + 1);
        let r = f.restore(config(128, all), &storage, std::slice::from_ref(&h))?;
        let t = Instant::now();
        let s2 = r.value_state::<VoidNamespace, EventV2>(&ValueStateDescriptor::new(name))?;
        migrate.push(values as f64 / t.elapsed().as_secs_f64());
        // Spot-check what was migrated.
        for k in [0, values / 2, values - 1] {
            r.set_current_key(k)?;
            let got = s2.value()?;
            if got.as_ref().map(|e| (e.id, e.amount)) != Some((k, f64::from(v1(k).amount))) {
                bail!("key {k}: migrated to {got:?}");
            }
        }
        drop(r);
        let r = f.restore(config(128, all), &storage, std::slice::from_ref(&h))?;
        let t = Instant::now();
        r.value_state::<VoidNamespace, EventV1>(&ValueStateDescriptor::new(name))?;
        as_is.push(values as f64 / t.elapsed().as_secs_f64());
    }
    Ok((crate::median_of(&migrate), crate::median_of(&as_is)))
}

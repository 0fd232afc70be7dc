//! A broadcast operator's snapshot and restore: the worker's broadcast state plus the
//! broadcast records it held back and its keyed side's watermark, and the choice of
//! which instance's copy a restored (or rescaled) instance starts from.

use flowstate_core::descriptor::MapStateDescriptor;
use flowstate_core::operator::OperatorStateStore;
use flowstate_core::serializer::{SerdeSerializer, TypeSerializer};
use flowstate_core::state::{MapState, StateKey, VoidNamespace};

use crate::RuntimeError;
use crate::checkpoint::OperatorSnapshotMeta;
use crate::keyed::{KeyedRunner, Stash};
use crate::stream::Data;
use crate::task::WorkerCheckpoints;

use super::{BroadcastLogic, BroadcastStash, HeldBack};

/// Operator (broadcast) state of a snapshot: the broadcast records it held back,
/// `(epoch, origin, generation, seq) -> (event time, value bytes)`.
const BROADCAST_INFLIGHT: &str = "_broadcast_inflight";
/// Operator (broadcast) state of a snapshot: the watermark its keyed side had reached.
const BROADCAST_WATERMARK: &str = "_broadcast_watermark";

/// The key of `_broadcast_inflight`: (epoch, sending worker, generation, sequence number).
type InflightKey = (u64, u32, u64, u64);

fn inflight_desc() -> MapStateDescriptor<InflightKey, (i64, Vec<u8>)> {
    MapStateDescriptor::new(BROADCAST_INFLIGHT)
}

fn watermark_desc() -> MapStateDescriptor<u8, i64> {
    MapStateDescriptor::new(BROADCAST_WATERMARK)
}

/// Takes the snapshots of every checkpoint up to `through` not taken yet: the keyed
/// side as a keyed operator does, and the worker's broadcast state with the broadcast
/// records held back (of each checkpoint's intervals) and the keyed side's watermark,
/// so a restore can pick a copy consistent with every key's state.
pub(super) fn checkpoint_through<K, T, B, F>(
    r: &mut KeyedRunner<K, VoidNamespace, BroadcastLogic<F, B>>,
    through: u64,
    keyed_stash: &Stash<K, T>,
    bcast_stash: &BroadcastStash<B>,
) -> Result<(), RuntimeError>
where
    K: Data + StateKey,
    T: Data,
    B: Data,
{
    let Some(from) = r.snapshotted().map(|s| s + 1) else {
        return Ok(());
    };
    let ser = SerdeSerializer::<B>::new();
    for id in from..=through {
        let store = std::mem::replace(&mut r.logic.store, OperatorStateStore::new(0));
        let result = (|| -> Result<(), RuntimeError> {
            let held = store.broadcast_state(&inflight_desc())?;
            held.clear()?;
            let mut held_bytes = 0u64;
            for ((epoch, interval), records) in bcast_stash {
                if *interval > id {
                    continue;
                }
                for (ts, (origin, generation, seq, value)) in records {
                    let mut bytes = Vec::new();
                    ser.serialize_into(value, &mut bytes).map_err(|e| {
                        flowstate_core::StateError::serialization(BROADCAST_INFLIGHT, e)
                    })?;
                    held_bytes += bytes.len() as u64;
                    held.put((*epoch, *origin, *generation, *seq), (*ts, bytes))?;
                }
            }
            store
                .broadcast_state(&watermark_desc())?
                .put(0, r.watermark())?;
            r.checkpoint_through(id, keyed_stash, Some(&store), held_bytes)?;
            held.clear()?;
            Ok(())
        })();
        r.logic.store = store;
        result?;
    }
    Ok(())
}

/// The broadcast state a restored instance starts from, and the broadcast records its
/// snapshot held back, as `(epoch, record)`. At the same parallelism each instance
/// takes its own copy; rescaled, every instance takes the copy whose keyed side had
/// reached the lowest watermark (records held back by the others are then replayed
/// onto it, and no key's held-back records see a broadcast state newer than theirs).
pub(super) fn restore_broadcast<B: Data>(
    ctx: &WorkerCheckpoints,
    meta: Option<&OperatorSnapshotMeta>,
    index: u32,
    peers: u32,
) -> Result<(OperatorStateStore, HeldBack<B>), RuntimeError> {
    let (Some(meta), Some(restored)) = (meta, ctx.restored.as_ref()) else {
        return Ok((OperatorStateStore::new(index), Vec::new()));
    };
    if meta.operator.is_empty() {
        return Ok((OperatorStateStore::new(index), Vec::new()));
    }
    let storage = restored.storage.as_ref();
    let open = |h: &flowstate_core::operator::OperatorStateHandle| {
        OperatorStateStore::restore(storage, std::slice::from_ref(h), index, peers)
            .map_err(|e| restored.error(e))
    };
    let chosen = if meta.operator.len() == peers as usize {
        meta.operator.iter().find(|h| h.subtask_index == index)
    } else {
        let mut best: Option<(i64, &flowstate_core::operator::OperatorStateHandle)> = None;
        for h in &meta.operator {
            let wm = open(h)?
                .broadcast_state(&watermark_desc())?
                .get(&0)?
                .unwrap_or(i64::MIN);
            if best.is_none_or(|(b, _)| wm < b) {
                best = Some((wm, h));
            }
        }
        best.map(|(_, h)| h)
    };
    let Some(handle) = chosen else {
        return Err(restored.damaged(format!("no broadcast state snapshot of instance {index}")));
    };
    let store = open(handle)?;
    let ser = SerdeSerializer::<B>::new();
    let held = store.broadcast_state(&inflight_desc())?;
    let mut records = Vec::new();
    for ((epoch, origin, generation, seq), (ts, bytes)) in held.entries()? {
        let value = ser
            .deserialize(&bytes)
            .map_err(|e| flowstate_core::StateError::serialization(BROADCAST_INFLIGHT, e))?;
        records.push((epoch, (ts, (origin, generation, seq, value))));
    }
    held.clear()?;
    Ok((store, records))
}

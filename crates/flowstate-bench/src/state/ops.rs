//! The ops themselves: each of Flink's state ops, `n` invocations at a time, on a
//! backend through the state API.

use anyhow::Result;
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::state::VoidNamespace;

use super::select::Select;
use super::setup::{Shape, list_desc, map_desc, value_desc};
use super::{Data, MAP_KEYS};

/// Runs op `name` `n` times from invocation `start`; returns the ops counted and a
/// fold of what was read (the baselines fold the same values the same way).
pub(super) fn run_op<B: KeyedStateBackend<u64>>(
    b: &B,
    d: &Data,
    name: &str,
    start: usize,
    n: usize,
    shape: Shape<'_>,
    prefetch: bool,
) -> Result<(u64, u64)> {
    let mut ops = 0u64;
    let mut sink = 0u64;
    let mut keys = Select::new(d, name, prefetch);
    match &name[..3] {
        "val" | "set" => {
            let s = b.value_state::<VoidNamespace, u64>(&value_desc(shape))?;
            for i in start..start + n {
                match name {
                    "valueUpdate" => {
                        keys.select(b, i)?;
                        s.update(d.value(i))?;
                    }
                    "valueAdd" => {
                        keys.select(b, i)?;
                        s.update(d.value(i))?;
                    }
                    "setCurrentKey" => keys.select(b, i)?,
                    _ => {
                        keys.select(b, i)?;
                        sink ^= s.value()?.unwrap_or(0);
                    }
                }
                ops += 1;
            }
        }
        "lis" => {
            let s = b.list_state::<VoidNamespace, u64>(&list_desc(shape))?;
            for i in start..start + n {
                match name {
                    "listUpdate" => {
                        keys.select(b, i)?;
                        s.update(d.list.clone())?;
                    }
                    "listAdd" => {
                        keys.select(b, i)?;
                        s.add(d.value(i))?;
                    }
                    "listAppend" => {
                        keys.select(b, i)?;
                        s.add(d.value(i))?;
                    }
                    "listGet" => {
                        keys.select(b, i)?;
                        s.view(&mut |l| sink ^= l.len() as u64)?;
                    }
                    "listGetAndIterate" => {
                        keys.select(b, i)?;
                        s.view(&mut |l| {
                            for v in l {
                                sink ^= v;
                            }
                        })?;
                    }
                    _ => {
                        keys.select(b, i)?;
                        s.add_all(d.list.clone())?;
                    }
                }
                ops += 1;
            }
        }
        _ => {
            let s = b.map_state::<VoidNamespace, u64, f64>(&map_desc(shape))?;
            for i in start..start + n {
                let mk = d.map_keys[i % MAP_KEYS];
                let mv = d.map_values[i % MAP_KEYS];
                match name {
                    "mapUpdate" => {
                        keys.select(b, i)?;
                        s.put(mk, mv + 1.0)?;
                    }
                    "mapAdd" => {
                        keys.select(b, i)?;
                        s.put(mk, mv)?;
                    }
                    "mapGet" => {
                        keys.select(b, i)?;
                        sink ^= s.get(&mk)?.map_or(0, f64::to_bits);
                    }
                    "mapContains" => {
                        keys.select(b, i)?;
                        sink ^= u64::from(s.contains(&mk)?);
                    }
                    "mapIsEmpty" => {
                        keys.select(b, i)?;
                        sink ^= u64::from(s.is_empty()?);
                    }
                    "mapKeys" => {
                        keys.select(b, i)?;
                        let keys = s.keys()?;
                        ops += keys.len() as u64;
                        sink ^= keys.into_iter().fold(0, |a, k| a ^ fold_entry(name, k, 0));
                        continue;
                    }
                    "mapValues" => {
                        keys.select(b, i)?;
                        let values = s.values()?;
                        ops += values.len() as u64;
                        sink ^= values
                            .into_iter()
                            .fold(0, |a, v| a ^ fold_entry(name, 0, v.to_bits()));
                        continue;
                    }
                    "mapEntries" | "mapIterator" => {
                        keys.select(b, i)?;
                        let entries = s.entries()?;
                        ops += entries.len() as u64;
                        sink ^= entries
                            .into_iter()
                            .fold(0, |a, (k, v)| a ^ fold_entry(name, k, v.to_bits()));
                        continue;
                    }
                    "mapRemove" => {
                        keys.select(b, i)?;
                        s.remove(&mk)?;
                    }
                    _ => {
                        keys.select(b, i)?;
                        s.put_all(
                            d.map_keys
                                .iter()
                                .copied()
                                .zip(d.map_values.iter().copied())
                                .collect(),
                        )?;
                    }
                }
                ops += 1;
            }
        }
    }
    Ok((ops, sink))
}

/// What the map iteration ops fold per entry (user key, value bits), the same in the
/// op and its baselines.
pub(super) fn fold_entry(op: &str, key: u64, value_bits: u64) -> u64 {
    match op {
        "mapKeys" => key.rotate_left(1),
        "mapValues" => value_bits,
        _ => key ^ value_bits,
    }
}

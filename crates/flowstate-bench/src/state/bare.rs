//! The heap backend's baseline: every op done on bare `hashbrown` maps, the shapes a
//! hand-written job would use (a value per key, a `Vec` per key, a map per key), with
//! the same keys, values and access order as the op, and no key groups, serializers,
//! namespaces or state API in between.

use hashbrown::HashMap;

use super::{Data, MAP_KEYS};

/// The three shapes, set up as the op's backend is.
pub(super) struct BareMaps {
    values: HashMap<u64, u64>,
    lists: HashMap<u64, Vec<u64>>,
    maps: HashMap<u64, HashMap<u64, f64>>,
}

impl BareMaps {
    /// Maps holding what `setup` puts into the backend for `kind`.
    pub(super) fn new(d: &Data, kind: super::Kind) -> Self {
        let mut m = BareMaps {
            values: HashMap::new(),
            lists: HashMap::new(),
            maps: HashMap::new(),
        };
        for (i, k) in d.setup_keys.iter().enumerate() {
            match kind {
                super::Kind::Value => {
                    m.values.insert(*k, d.value(i));
                }
                super::Kind::List => {
                    m.lists.insert(*k, vec![d.value(i)]);
                }
                super::Kind::Map => {
                    m.maps.insert(
                        *k,
                        d.map_keys
                            .iter()
                            .copied()
                            .zip(d.map_values.iter().copied())
                            .collect(),
                    );
                }
            }
        }
        m
    }

    /// Runs op `name` `n` times from invocation `start`, as `run_op` does; returns the
    /// ops counted and the fold of what was read, or `None` for an op without a
    /// baseline.
    pub(super) fn run(
        &mut self,
        d: &Data,
        name: &str,
        start: usize,
        n: usize,
    ) -> Option<(u64, u64)> {
        let mut ops = 0u64;
        let mut sink = 0u64;
        for i in start..start + n {
            let (k, new_k, v) = (d.setup_key(i), d.new_key(i), d.value(i));
            let (mk, mv) = (d.map_keys[i % MAP_KEYS], d.map_values[i % MAP_KEYS]);
            match name {
                "valueUpdate" => {
                    self.values.insert(k, v);
                }
                "valueAdd" => {
                    self.values.insert(new_k, v);
                }
                "valueGet" => sink ^= self.values.get(&k).copied().unwrap_or(0),
                "listUpdate" => {
                    self.lists.insert(k, d.list.clone());
                }
                "listAdd" => self.lists.entry(new_k).or_default().push(v),
                "listAppend" => self.lists.entry(k).or_default().push(v),
                "listGet" => sink ^= self.lists.get(&k).map_or(0, |l| l.len() as u64),
                "listGetAndIterate" => {
                    for x in self.lists.get(&k).into_iter().flatten() {
                        sink ^= x;
                    }
                }
                "listAddAll" => self.lists.entry(k).or_default().extend_from_slice(&d.list),
                "mapUpdate" => {
                    self.maps.entry(k).or_default().insert(mk, mv + 1.0);
                }
                "mapAdd" => {
                    self.maps.entry(new_k).or_default().insert(mk, mv);
                }
                "mapGet" => {
                    sink ^= self
                        .maps
                        .get(&k)
                        .and_then(|m| m.get(&mk))
                        .map_or(0, |v| v.to_bits())
                }
                "mapContains" => {
                    sink ^= u64::from(self.maps.get(&k).is_some_and(|m| m.contains_key(&mk)))
                }
                "mapIsEmpty" => sink ^= u64::from(self.maps.get(&k).is_none_or(|m| m.is_empty())),
                "mapKeys" | "mapValues" | "mapEntries" | "mapIterator" => {
                    for (uk, uv) in self.maps.get(&k).into_iter().flatten() {
                        sink ^= super::ops::fold_entry(name, *uk, uv.to_bits());
                        ops += 1;
                    }
                    continue;
                }
                "mapRemove" => {
                    if let Some(m) = self.maps.get_mut(&k) {
                        m.remove(&mk);
                    }
                }
                "mapPutAll" => self
                    .maps
                    .entry(k)
                    .or_default()
                    .extend(d.map_keys.iter().copied().zip(d.map_values.iter().copied())),
                _ => return None,
            }
            ops += 1;
        }
        Some((ops, sink))
    }
}

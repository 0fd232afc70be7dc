//! Key selection of the `state` ops: one key at a time as Flink's benchmark selects
//! it, or a batch ahead, prefetched, as the keyed operator runs records.

use anyhow::Result;
use flowstate_core::backend::KeyedStateBackend;

use super::Data;

/// How many invocations' keys a prefetching run prefetches at a time (the keyed
/// operator's number).
const PREFETCH: usize = 32;

/// Selects each invocation's key: one at a time as Flink's benchmark does, or, with
/// `prefetch`, as the keyed operator runs a batch of records: each key's group
/// computed once (`key_by` does it in a job), and the keys of the next [`PREFETCH`]
/// invocations prefetched before they run.
pub(super) struct Select<'a> {
    d: &'a Data,
    /// The op writes new keys (`valueAdd`, `listAdd`, `mapAdd`), not set-up ones.
    new: bool,
    prefetch: bool,
    /// Invocation `at + j` is `ahead[j]`: its key group and key.
    ahead: Vec<(u32, u64)>,
    at: usize,
}

impl<'a> Select<'a> {
    pub(super) fn new(d: &'a Data, op: &str, prefetch: bool) -> Self {
        Select {
            d,
            new: matches!(op, "valueAdd" | "listAdd" | "mapAdd"),
            prefetch,
            ahead: Vec::with_capacity(PREFETCH),
            at: 0,
        }
    }

    fn key(&self, i: usize) -> u64 {
        if self.new {
            self.d.new_key(i)
        } else {
            self.d.setup_key(i)
        }
    }

    /// Makes invocation `i`'s key current; invocations come in increasing order.
    pub(super) fn select<B: KeyedStateBackend<u64>>(&mut self, b: &B, i: usize) -> Result<()> {
        if !self.prefetch {
            return Ok(b.set_current_key(self.key(i))?);
        }
        if self.ahead.is_empty() || i >= self.at + self.ahead.len() {
            self.at = i;
            self.ahead.clear();
            for j in i..i + PREFETCH {
                let k = self.key(j);
                self.ahead.push((b.key_group_of(&k)?, k));
            }
            // On the stack: a `Vec` per batch was an allocation per 32 invocations.
            let refs: [(u32, &u64); PREFETCH] = std::array::from_fn(|j| {
                let (g, k) = &self.ahead[j];
                (*g, k)
            });
            b.prefetch(&refs);
        }
        let (kg, k) = self.ahead[i - self.at];
        Ok(b.set_current_key_in_group(k, kg)?)
    }
}

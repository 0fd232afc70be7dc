//! The per-key map of a heap map state: a few entries kept in a vector and searched in
//! order, more in a hash map.
//!
//! Most keys of a map state hold few user keys. A `hashbrown` map per key costs an
//! allocation at the first `put`, and a second cache miss on every access: the table
//! entry points to the map's own control bytes and buckets. [`UserMap::Few`] keeps up
//! to [`INLINE`] pairs inside the table entry itself (no allocation, no second miss),
//! and up to [`linear_max`] in one contiguous allocation, where a linear search reads
//! a few cache lines and no hash is computed. Past that the map becomes a hash map
//! ([`UserMap::Many`]) and stays one. Both behave as the same map: the state API cannot
//! tell them apart, except by iteration order, which no map promises.

use std::hash::Hash;

use smallvec::SmallVec;

/// Pairs kept in line, inside the state table's entry.
pub(crate) const INLINE: usize = 2;
/// Most pairs kept in a vector for any user key type; one more makes the map a hash
/// map.
pub(crate) const LINEAR_MAX: usize = 8;
/// Most pairs kept in a vector for user keys of plain data ([`linear_max`]).
pub(crate) const LINEAR_MAX_PLAIN: usize = 16;
/// The bytes of pairs a linear search over plain-data keys may read: four cache lines.
const LINEAR_PLAIN_BYTES: usize = 256;

/// Most pairs a [`UserMap::Few`] of these types holds; one more makes it a hash map.
///
/// A key without drop glue owns no heap data (integers, `char`s, arrays and plain
/// structs of them; a `&'static str` would be the exception) and is compared where it
/// lies, so a linear search reads only the vector: up to [`LINEAR_MAX_PLAIN`] pairs
/// when they fit in [`LINEAR_PLAIN_BYTES`], never fewer than [`LINEAR_MAX`].
/// That keeps maps of 9 to 16 such pairs out of `hashbrown`, whose control bytes cost
/// the keyed operator's prefetch a load that waits before it can request the pairs
/// (the vector's pairs it requests from the entry alone). A key that owns heap data
/// (a `String`) may be read through a pointer at each comparison, a miss per pair, so
/// those maps switch at [`LINEAR_MAX`], where hashing one key costs less.
pub(crate) const fn linear_max<UK, UV>() -> usize {
    let pair = std::mem::size_of::<(UK, UV)>();
    if std::mem::needs_drop::<UK>() || pair == 0 {
        return LINEAR_MAX;
    }
    let fit = LINEAR_PLAIN_BYTES / pair;
    if fit > LINEAR_MAX_PLAIN {
        LINEAR_MAX_PLAIN
    } else if fit < LINEAR_MAX {
        LINEAR_MAX
    } else {
        fit
    }
}

/// Most pairs whose lines [`UserMap::prefetch_pairs`] all requests (a hash map of up
/// to 16 pairs spans at most 32 buckets).
pub(crate) const PREFETCH_MAX_PAIRS: usize = 16;

// The prefetch requests every pair of a vector of plain-data pairs (that is why those
// stay a vector up to `LINEAR_MAX_PLAIN`): a larger vector would get one line only.
const _: () = assert!(LINEAR_MAX_PLAIN <= PREFETCH_MAX_PAIRS);

/// The user map of one (key, namespace) of a map state.
#[derive(Clone, Debug)]
pub(crate) enum UserMap<UK, UV> {
    /// At most [`linear_max`] pairs, distinct keys, searched in order.
    Few(SmallVec<[(UK, UV); INLINE]>),
    /// Any number of pairs.
    Many(hashbrown::HashMap<UK, UV>),
}

impl<UK, UV> Default for UserMap<UK, UV> {
    fn default() -> Self {
        UserMap::Few(SmallVec::new())
    }
}

/// Reading, iterating and filtering: no hashing involved.
impl<UK, UV> UserMap<UK, UV> {
    /// The number of pairs.
    pub(crate) fn len(&self) -> usize {
        match self {
            UserMap::Few(v) => v.len(),
            UserMap::Many(m) => m.len(),
        }
    }

    /// Whether the map holds no pair.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the pairs for which `f` returns `true`; `f` may change their values.
    pub(crate) fn retain(&mut self, mut f: impl FnMut(&UK, &mut UV) -> bool) {
        match self {
            UserMap::Few(v) => v.retain(|(k, value)| f(k, value)),
            UserMap::Many(m) => m.retain(|k, value| f(k, value)),
        }
    }

    /// The pairs, in no particular order.
    pub(crate) fn iter(&self) -> Iter<'_, UK, UV> {
        match self {
            UserMap::Few(v) => Iter::Few(v.iter()),
            UserMap::Many(m) => Iter::Many(m.iter()),
        }
    }

    /// Asks the CPU to load every cache line holding a pair, without waiting for them
    /// (see [`flowstate_prefetch::prefetch`]): a look-up that follows finds its pair
    /// in cache, whichever it is. A hash map's control bytes are read to find its
    /// pairs (that load waits); pairs kept in line are already where the entry is.
    /// A map of more than [`PREFETCH_MAX_PAIRS`] gets its first pair's line only: a
    /// look-up reads one line of many, and walking them all would cost a walk of the
    /// map per record.
    pub(crate) fn prefetch_pairs(&self) {
        use flowstate_prefetch::LINE;
        let mut last = usize::MAX;
        let n = if self.len() > PREFETCH_MAX_PAIRS {
            1
        } else {
            PREFETCH_MAX_PAIRS
        };
        for (k, _) in self.iter().take(n) {
            let line = (k as *const UK as usize) / LINE;
            if line != last {
                flowstate_prefetch::prefetch(k);
                last = line;
            }
        }
    }

    /// The keys, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &UK> {
        self.iter().map(|(k, _)| k)
    }

    /// The values, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &UV> {
        self.iter().map(|(_, v)| v)
    }
}

/// Look-ups and changes by key.
impl<UK: Eq + Hash, UV> UserMap<UK, UV> {
    /// An empty map with room for `n` pairs.
    pub(crate) fn with_capacity(n: usize) -> Self {
        if n <= linear_max::<UK, UV>() {
            UserMap::Few(SmallVec::with_capacity(n))
        } else {
            UserMap::Many(hashbrown::HashMap::with_capacity(n))
        }
    }

    /// A map of one pair, built in place: no allocation, nothing to search.
    #[inline]
    pub(crate) fn single(key: UK, value: UV) -> Self {
        let mut v = SmallVec::new();
        v.push((key, value));
        UserMap::Few(v)
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &UK) -> Option<&UV> {
        match self {
            UserMap::Few(v) => v.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            UserMap::Many(m) => m.get(key),
        }
    }

    /// Whether `key` has a value.
    pub(crate) fn contains_key(&self, key: &UK) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    #[inline]
    pub(crate) fn insert(&mut self, key: UK, value: UV) -> Option<UV> {
        match self {
            UserMap::Few(v) => {
                if let Some((_, old)) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(old, value));
                }
                let max = linear_max::<UK, UV>();
                if v.len() < max {
                    v.push((key, value));
                    return None;
                }
                let mut m = hashbrown::HashMap::with_capacity(max + 1);
                m.extend(v.drain(..));
                m.insert(key, value);
                *self = UserMap::Many(m);
                None
            }
            UserMap::Many(m) => m.insert(key, value),
        }
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove(&mut self, key: &UK) -> Option<UV> {
        match self {
            UserMap::Few(v) => {
                let i = v.iter().position(|(k, _)| k == key)?;
                // Order carries no meaning: the last pair fills the gap.
                Some(v.swap_remove(i).1)
            }
            UserMap::Many(m) => m.remove(key),
        }
    }
}

impl<UK: Eq + Hash, UV> Extend<(UK, UV)> for UserMap<UK, UV> {
    fn extend<I: IntoIterator<Item = (UK, UV)>>(&mut self, pairs: I) {
        for (k, v) in pairs {
            self.insert(k, v);
        }
    }
}

impl<UK: Eq + Hash, UV> FromIterator<(UK, UV)> for UserMap<UK, UV> {
    fn from_iter<I: IntoIterator<Item = (UK, UV)>>(pairs: I) -> Self {
        let pairs = pairs.into_iter();
        let mut map = UserMap::with_capacity(pairs.size_hint().0);
        map.extend(pairs);
        map
    }
}

/// The pairs of a [`UserMap`].
pub(crate) enum Iter<'a, UK, UV> {
    /// Of a [`UserMap::Few`].
    Few(std::slice::Iter<'a, (UK, UV)>),
    /// Of a [`UserMap::Many`].
    Many(hashbrown::hash_map::Iter<'a, UK, UV>),
}

impl<UK, UV> ExactSizeIterator for Iter<'_, UK, UV> {}

impl<'a, UK, UV> Iterator for Iter<'a, UK, UV> {
    type Item = (&'a UK, &'a UV);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Few(i) => i.next().map(|(k, v)| (k, v)),
            Iter::Many(i) => i.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Few(i) => i.size_hint(),
            Iter::Many(i) => i.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        Retain(u8),
        Extend(Vec<(u8, u32)>),
        AddToValues(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Keys 0..24 cross both switch points (8 and 16 pairs) both ways.
        prop_oneof![
            6 => (0u8..24, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0u8..24).prop_map(Op::Remove),
            1 => (1u8..5).prop_map(Op::Retain),
            1 => proptest::collection::vec((0u8..24, any::<u32>()), 0..12).prop_map(Op::Extend),
            1 => any::<u32>().prop_map(Op::AddToValues),
        ]
    }

    fn assert_same<K>(map: &UserMap<K, u32>, model: &HashMap<K, u32>, key: fn(u8) -> K)
    where
        K: Clone + Eq + Hash + std::fmt::Debug,
    {
        assert_eq!(map.len(), model.len());
        assert_eq!(map.is_empty(), model.is_empty());
        let pairs: HashMap<K, u32> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(&pairs, model, "iteration yields each pair once");
        assert_eq!(map.keys().count(), model.len());
        assert_eq!(
            map.values().map(|v| u64::from(*v)).sum::<u64>(),
            model.values().map(|v| u64::from(*v)).sum::<u64>()
        );
        for k in (0u8..24).map(key) {
            assert_eq!(map.get(&k), model.get(&k), "key {k:?}");
            assert_eq!(map.contains_key(&k), model.contains_key(&k));
        }
        if let UserMap::Few(v) = map {
            assert!(v.len() <= linear_max::<K, u32>());
        }
    }

    /// Runs `ops` on a map of keys `key(k)` and on `std`'s map, comparing after each.
    fn run_model<K>(start: &[(u8, u32)], ops: Vec<Op>, key: fn(u8) -> K)
    where
        K: Clone + Eq + Hash + std::fmt::Debug,
    {
        let mut map: UserMap<K, u32> = start.iter().map(|(k, v)| (key(*k), *v)).collect();
        let mut model: HashMap<K, u32> = start.iter().map(|(k, v)| (key(*k), *v)).collect();
        assert_same(&map, &model, key);
        for op in ops {
            match op {
                Op::Insert(k, v) => assert_eq!(map.insert(key(k), v), model.insert(key(k), v)),
                Op::Remove(k) => assert_eq!(map.remove(&key(k)), model.remove(&key(k))),
                Op::Retain(m) => {
                    let keep: Vec<K> = (0u8..24).filter(|k| k % m == 0).map(key).collect();
                    map.retain(|k, _| keep.contains(k));
                    model.retain(|k, _| keep.contains(k));
                }
                Op::Extend(pairs) => {
                    map.extend(pairs.iter().map(|(k, v)| (key(*k), *v)));
                    model.extend(pairs.iter().map(|(k, v)| (key(*k), *v)));
                }
                Op::AddToValues(d) => {
                    map.retain(|_, v| {
                        *v = v.wrapping_add(d);
                        true
                    });
                    model.values_mut().for_each(|v| *v = v.wrapping_add(d));
                }
            }
            assert_same(&map, &model, key);
        }
    }

    proptest! {
        /// Every operation agrees with `std`'s map, on both representations and
        /// across the switch from one to the other, for plain-data keys (switching at
        /// 16 pairs) and keys that own heap data (at 8).
        #[test]
        fn behaves_as_a_hash_map(
            start in proptest::collection::vec((0u8..24, any::<u32>()), 0..20),
            ops in proptest::collection::vec(op(), 0..80),
        ) {
            run_model(&start, ops.clone(), |k| k);
            run_model(&start, ops, |k| format!("user key {k}"));
        }
    }

    #[test]
    fn the_switch_point_depends_on_what_a_key_owns() {
        assert_eq!(linear_max::<u64, f64>(), LINEAR_MAX_PLAIN);
        assert_eq!(linear_max::<u8, u32>(), LINEAR_MAX_PLAIN);
        // 24-byte pairs: ten fit in four lines.
        assert_eq!(linear_max::<u64, [u64; 2]>(), 10);
        // Large pairs never switch earlier than any key type does.
        assert_eq!(linear_max::<[u64; 8], u64>(), LINEAR_MAX);
        assert_eq!(linear_max::<String, u64>(), LINEAR_MAX);
        assert_eq!(linear_max::<Vec<u8>, u8>(), LINEAR_MAX);
        assert_eq!(linear_max::<(), ()>(), LINEAR_MAX);
    }

    /// Fills a map of keys `key(0..n)` twice over, then adds one more key: it is a
    /// vector up to `n` pairs and a hash map from then on, also when it shrinks.
    fn switches_after<K: Clone + Eq + Hash + std::fmt::Debug>(n: usize, key: fn(u32) -> K) {
        let mut map = UserMap::default();
        for k in 0..n as u32 {
            map.insert(key(k), k);
            map.insert(key(k), k + 1);
        }
        assert!(matches!(&map, UserMap::Few(v) if v.len() == n));
        map.insert(key(n as u32), 0);
        assert!(matches!(&map, UserMap::Many(m) if m.len() == n + 1));
        assert_eq!(map.get(&key(3)), Some(&4));
        // A hash map stays one when it shrinks again.
        let three = key(3);
        map.retain(|k, _| *k == three);
        assert!(matches!(&map, UserMap::Many(m) if m.len() == 1));
    }

    #[test]
    fn few_pairs_stay_in_a_vector_and_more_make_a_hash_map() {
        switches_after(LINEAR_MAX_PLAIN, u64::from);
        switches_after(LINEAR_MAX, |k| k.to_string());
    }

    #[test]
    fn two_small_pairs_need_no_allocation() {
        let mut map = UserMap::<u64, u64>::with_capacity(1);
        map.insert(1, 1);
        map.insert(2, 2);
        assert!(matches!(&map, UserMap::Few(v) if !v.spilled()));
        map.insert(3, 3);
        assert!(matches!(&map, UserMap::Few(v) if v.spilled()));
        let few = UserMap::<u64, u64>::with_capacity(LINEAR_MAX_PLAIN);
        assert!(matches!(few, UserMap::Few(_)));
        let big = UserMap::<u64, u64>::with_capacity(LINEAR_MAX_PLAIN + 1);
        assert!(matches!(big, UserMap::Many(_)));
        let strings = UserMap::<String, u64>::with_capacity(LINEAR_MAX + 1);
        assert!(matches!(strings, UserMap::Many(_)));
    }
}

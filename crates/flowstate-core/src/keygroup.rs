//! Key groups: the unit in which keyed state is partitioned and redistributed.
//!
//! The arithmetic is Flink's, so that a Flink user can reason about where a key lives:
//! a key's 32-bit hash is mixed with Flink's `MathUtils.murmurHash(int)` and taken
//! modulo the max parallelism; key groups map to operator instances by
//! `key_group * parallelism / max_parallelism`, and instance `i` owns the contiguous
//! range `[(i*maxP + p - 1)/p, ((i+1)*maxP - 1)/p]`.
//!
//! The key hash is XXH3-64 of the key's serialized bytes, truncated to its low 32 bits.
//! It depends only on those bytes, so it is the same in every process, platform and
//! release. Changing it would silently misplace state on restore; the golden test in
//! `tests/key_group_golden.rs` pins it.
//!
//! ```
//! use flowstate_core::keygroup::{key_group_range_for_operator, KeyGroupRange};
//! let r = key_group_range_for_operator(128, 3, 1).unwrap();
//! assert_eq!(r, KeyGroupRange::new(43, 85).unwrap());
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{StateError, StateResult};

/// Upper bound for max parallelism (Flink's `UPPER_BOUND_MAX_PARALLELISM`, 2^15).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;
/// Lower bound used by [`default_max_parallelism`].
pub const DEFAULT_LOWER_BOUND_MAX_PARALLELISM: u32 = 128;

/// A contiguous, inclusive range of key groups; may be empty.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyGroupRange {
    start: u32,
    /// Exclusive end; `start == end_exclusive` means empty.
    end_exclusive: u32,
}

impl KeyGroupRange {
    /// The inclusive range `[start, end]`. `end < start` is an error; use [`KeyGroupRange::empty`].
    pub fn new(start: u32, end: u32) -> StateResult<Self> {
        if end < start || end >= UPPER_BOUND_MAX_PARALLELISM {
            return Err(StateError::InvalidArgument(format!(
                "key group range [{start}, {end}] is not a valid inclusive range below {UPPER_BOUND_MAX_PARALLELISM}"
            )));
        }
        Ok(KeyGroupRange {
            start,
            end_exclusive: end + 1,
        })
    }

    /// The range of all key groups for a max parallelism.
    pub fn all(max_parallelism: u32) -> StateResult<Self> {
        check_max_parallelism(max_parallelism)?;
        KeyGroupRange::new(0, max_parallelism - 1)
    }

    /// The empty range.
    pub const fn empty() -> Self {
        KeyGroupRange {
            start: 0,
            end_exclusive: 0,
        }
    }

    /// First key group (meaningless when empty).
    #[inline]
    pub fn start(&self) -> u32 {
        self.start
    }

    /// Last key group, inclusive; `None` when empty.
    pub fn end(&self) -> Option<u32> {
        self.end_exclusive
            .checked_sub(1)
            .filter(|e| *e >= self.start)
    }

    /// Number of key groups.
    #[inline]
    pub fn len(&self) -> usize {
        (self.end_exclusive - self.start) as usize
    }

    /// Whether the range holds no key group.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end_exclusive == self.start
    }

    /// Whether `key_group` lies in the range.
    #[inline]
    pub fn contains(&self, key_group: u32) -> bool {
        key_group >= self.start && key_group < self.end_exclusive
    }

    /// Position of `key_group` within the range, if inside.
    #[inline]
    pub fn index_of(&self, key_group: u32) -> Option<usize> {
        self.contains(key_group)
            .then(|| (key_group - self.start) as usize)
    }

    /// The key groups both ranges hold.
    pub fn intersection(&self, other: &KeyGroupRange) -> KeyGroupRange {
        let start = self.start.max(other.start);
        let end = self.end_exclusive.min(other.end_exclusive);
        if start < end {
            KeyGroupRange {
                start,
                end_exclusive: end,
            }
        } else {
            KeyGroupRange::empty()
        }
    }

    /// Iterates the key groups in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + use<> {
        self.start..self.end_exclusive
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end() {
            Some(end) => write!(f, "key groups [{}, {}]", self.start, end),
            None => write!(f, "the empty key group range"),
        }
    }
}

impl fmt::Debug for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Checks that a max parallelism is in `1..=32768`.
pub fn check_max_parallelism(max_parallelism: u32) -> StateResult<()> {
    if max_parallelism == 0 || max_parallelism > UPPER_BOUND_MAX_PARALLELISM {
        return Err(StateError::InvalidMaxParallelism(max_parallelism));
    }
    Ok(())
}

fn check_parallelism(max_parallelism: u32, parallelism: u32) -> StateResult<()> {
    check_max_parallelism(max_parallelism)?;
    if parallelism == 0 || parallelism > max_parallelism {
        return Err(StateError::InvalidParallelism {
            parallelism,
            max_parallelism,
        });
    }
    Ok(())
}

/// Flink's `MathUtils.murmurHash(int)`: a murmur3 finalizer over one 32-bit word,
/// folded to a non-negative value.
#[inline]
pub fn murmur_mix(code: i32) -> i32 {
    let mut c = code;
    c = c.wrapping_mul(0xcc9e_2d51_u32 as i32);
    c = c.rotate_left(15);
    c = c.wrapping_mul(0x1b87_3593);
    c = c.rotate_left(13);
    c = c.wrapping_mul(5).wrapping_add(0xe654_6b64_u32 as i32);
    c ^= 4;
    // bitMix, with Java's unsigned shift `>>>`.
    c ^= ((c as u32) >> 16) as i32;
    c = c.wrapping_mul(0x85eb_ca6b_u32 as i32);
    c ^= ((c as u32) >> 13) as i32;
    c = c.wrapping_mul(0xc2b2_ae35_u32 as i32);
    c ^= ((c as u32) >> 16) as i32;
    non_negative(c)
}

/// The last step of Flink's `murmurHash`: `c` if non-negative, else `-c`, and 0 for
/// `i32::MIN` (which has no positive counterpart). Computed as the absolute value with
/// its sign bit cleared: below 2^31 the mask keeps it, and `i32::MIN`'s wrapped
/// absolute value is the sign bit alone. Three operations in place of two branches
/// on every routed record.
#[inline]
fn non_negative(c: i32) -> i32 {
    c.wrapping_abs() & i32::MAX
}

/// The stable 32-bit hash of a key's serialized bytes (low half of XXH3-64).
#[inline]
pub fn key_hash(serialized_key: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(serialized_key) as u32
}

/// Key group of a key hash: `murmur_mix(hash) % max_parallelism`.
///
/// `max_parallelism` must already be valid (see [`check_max_parallelism`]).
#[inline]
pub fn key_group_for_hash(hash: u32, max_parallelism: u32) -> u32 {
    let mixed = murmur_mix(hash as i32) as u32;
    let max = max_parallelism.max(1);
    // Default maximum parallelisms are powers of two, where a mask is the same
    // remainder without a division (a division was a tenth of a keyed job's routing).
    if max.is_power_of_two() {
        mixed & (max - 1)
    } else {
        mixed % max
    }
}

/// Key group of a key given its serialized bytes.
#[inline]
pub fn key_group_for_serialized_key(serialized_key: &[u8], max_parallelism: u32) -> u32 {
    key_group_for_hash(key_hash(serialized_key), max_parallelism)
}

/// Index of the operator instance that owns `key_group` at `parallelism`.
pub fn operator_index_for_key_group(
    max_parallelism: u32,
    parallelism: u32,
    key_group: u32,
) -> StateResult<u32> {
    let owners = KeyGroupOwners::new(max_parallelism, parallelism)?;
    if key_group >= max_parallelism {
        return Err(StateError::KeyGroupOutOfRange {
            key_group,
            range: KeyGroupRange::all(max_parallelism)?,
        });
    }
    Ok(owners.owner(key_group))
}

/// Which operator index owns each key group, for one maximum parallelism and
/// parallelism checked once ([`operator_index_for_key_group`] checks them at every
/// call, a per-record cost where records are routed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGroupOwners {
    max_parallelism: u32,
    parallelism: u32,
}

impl KeyGroupOwners {
    /// The owners at `parallelism` of `max_parallelism` key groups; an error when
    /// either is invalid.
    pub fn new(max_parallelism: u32, parallelism: u32) -> StateResult<Self> {
        check_parallelism(max_parallelism, parallelism)?;
        Ok(KeyGroupOwners {
            max_parallelism,
            parallelism,
        })
    }

    /// The operator index that owns `key_group`, which must be below the maximum
    /// parallelism (as [`key_group_for_hash`] gives); a larger one gives an index at
    /// or past the parallelism.
    #[inline]
    pub fn owner(&self, key_group: u32) -> u32 {
        let scaled = key_group as u64 * self.parallelism as u64;
        // As in `key_group_for_hash`: a shift where the maximum is a power of two.
        (if self.max_parallelism.is_power_of_two() {
            scaled >> self.max_parallelism.trailing_zeros()
        } else {
            scaled / self.max_parallelism as u64
        }) as u32
    }
}

/// The key-group range owned by operator instance `index` of `parallelism`.
pub fn key_group_range_for_operator(
    max_parallelism: u32,
    parallelism: u32,
    index: u32,
) -> StateResult<KeyGroupRange> {
    check_parallelism(max_parallelism, parallelism)?;
    if index >= parallelism {
        return Err(StateError::InvalidOperatorIndex { index, parallelism });
    }
    let (m, p, i) = (max_parallelism as u64, parallelism as u64, index as u64);
    let start = (i * m).div_ceil(p);
    let end = ((i + 1) * m - 1) / p;
    KeyGroupRange::new(start as u32, end as u32)
}

/// Flink's default max parallelism for a parallelism:
/// `min(max(next_power_of_two(p + p/2), 128), 32768)`.
pub fn default_max_parallelism(parallelism: u32) -> StateResult<u32> {
    if parallelism == 0 || parallelism > UPPER_BOUND_MAX_PARALLELISM {
        return Err(StateError::InvalidParallelism {
            parallelism,
            max_parallelism: UPPER_BOUND_MAX_PARALLELISM,
        });
    }
    let wanted = (parallelism as u64 + parallelism as u64 / 2).next_power_of_two();
    Ok(wanted.clamp(
        DEFAULT_LOWER_BOUND_MAX_PARALLELISM as u64,
        UPPER_BOUND_MAX_PARALLELISM as u64,
    ) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flink_ranges_for_p3_max128() {
        let ranges: Vec<_> = (0..3)
            .map(|i| key_group_range_for_operator(128, 3, i).map(|r| (r.start(), r.end())))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        assert_eq!(ranges, vec![(0, Some(42)), (43, Some(85)), (86, Some(127))]);
    }

    #[test]
    fn ranges_partition_and_agree_with_routing() {
        for max_p in [1u32, 2, 7, 128, 1000, 32768] {
            for p in [1u32, 2, 3, 5, 8, 17, 128] {
                if p > max_p {
                    continue;
                }
                let mut next = 0;
                for i in 0..p {
                    let r =
                        key_group_range_for_operator(max_p, p, i).unwrap_or(KeyGroupRange::empty());
                    assert_eq!(r.start(), next, "max_p {max_p} p {p} i {i}");
                    for kg in r.iter() {
                        assert_eq!(operator_index_for_key_group(max_p, p, kg).ok(), Some(i));
                    }
                    next = r.end().map_or(r.start(), |e| e + 1);
                }
                assert_eq!(next, max_p);
            }
        }
    }

    #[test]
    fn default_max_parallelism_matches_flink() {
        let got: Vec<_> = [1u32, 64, 85, 86, 100, 1000, 30000]
            .iter()
            .map(|p| default_max_parallelism(*p).unwrap_or(0))
            .collect();
        assert_eq!(got, vec![128, 128, 128, 256, 256, 2048, 32768]);
        assert!(default_max_parallelism(0).is_err());
        assert!(default_max_parallelism(32769).is_err());
    }

    #[test]
    fn bounds_are_typed_errors() {
        assert!(matches!(
            check_max_parallelism(0),
            Err(StateError::InvalidMaxParallelism(0))
        ));
        assert!(matches!(
            check_max_parallelism(32769),
            Err(StateError::InvalidMaxParallelism(32769))
        ));
        assert!(check_max_parallelism(32768).is_ok());
        assert!(matches!(
            operator_index_for_key_group(128, 2, 128),
            Err(StateError::KeyGroupOutOfRange { key_group: 128, .. })
        ));
        assert!(matches!(
            key_group_range_for_operator(128, 0, 0),
            Err(StateError::InvalidParallelism { .. })
        ));
        assert!(matches!(
            key_group_range_for_operator(128, 129, 0),
            Err(StateError::InvalidParallelism { .. })
        ));
        assert!(matches!(
            key_group_range_for_operator(128, 4, 4),
            Err(StateError::InvalidOperatorIndex { .. })
        ));
    }

    /// Expected values computed by running Flink's `MathUtils.murmurHash(int)` in Java 17.
    #[test]
    fn murmur_mix_matches_flink_java() {
        let cases: [(i32, i32); 13] = [
            (0, 593689054),
            (1, 68075478),
            (-1, 1982413648),
            (2, 1085422463),
            (42, 1134849565),
            (100, 616682048),
            (12345, 638799361),
            (-12345, 1626926666),
            (i32::MAX, 1653689534),
            (i32::MIN, 1718298732),
            (0x7fff_0000, 1260750601),
            (0xdead_beef_u32 as i32, 1047277220),
            (987654321, 359423800),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur_mix(input), expected, "murmur_mix({input})");
        }
        assert_eq!(key_group_for_hash(42, 128), 29);
        assert_eq!(key_group_for_hash(42, 32768), 28189);
        assert_eq!(key_group_for_hash(0xdead_beef, 128), 36);
    }

    proptest::proptest! {
        /// The mask and shift of powers of two give what the division gives.
        #[test]
        fn powers_of_two_route_as_the_division_does(
            hash in proptest::prelude::any::<u32>(),
            bits in 0u32..=15,
            p in 1u32..=32768,
        ) {
            let max_p = 1u32 << bits;
            proptest::prop_assert_eq!(
                key_group_for_hash(hash, max_p),
                (murmur_mix(hash as i32) as u32) % max_p
            );
            let p = p.min(max_p);
            let kg = key_group_for_hash(hash, max_p);
            proptest::prop_assert_eq!(
                operator_index_for_key_group(max_p, p, kg).ok(),
                Some(((kg as u64 * p as u64) / max_p as u64) as u32)
            );
        }
    }

    /// Flink's branches, value by value, at the edges and at random.
    #[test]
    fn non_negative_is_flinks_abs() {
        fn flink(c: i32) -> i32 {
            if c >= 0 {
                c
            } else if c != i32::MIN {
                -c
            } else {
                0
            }
        }
        let mut edges = vec![0, 1, -1, 2, -2, i32::MAX, -i32::MAX, i32::MIN, i32::MIN + 1];
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            edges.push(x as i32);
        }
        for c in edges {
            assert_eq!(non_negative(c), flink(c), "c = {c}");
        }
        assert_eq!(non_negative(i32::MIN), 0);
    }

    #[test]
    fn murmur_mix_is_non_negative() {
        for c in [0, 1, -1, i32::MIN, i32::MAX, 42, 0x7fff_0000] {
            assert!(murmur_mix(c) >= 0);
        }
    }
}

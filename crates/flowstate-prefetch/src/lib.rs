//! Prefetch hints: ask the CPU to bring the cache lines holding a value (or the bucket
//! of a `hashbrown` table a look-up or insert will touch) into its caches, and go on
//! without waiting for them.
//!
//! A plain load of the same line would do the same work but hold the instruction in
//! the CPU's reorder window until the line arrives from memory (~100 ns): a loop of
//! such loads has only a few misses in flight at once. A prefetch retires at once, so
//! a batch's misses all overlap (the heap backend's batch prefetch, where this took a
//! key's probe from 36-45 ns to 16-20 ns).
//!
//! The instruction needs `unsafe` in Rust only because it is declared for SSE, which
//! every x86-64 CPU has; it can neither fault nor change memory. This crate is the
//! workspace's one `unsafe` block, kept apart so that every other crate forbids it
//! (a published crate for this, `mem_prefetch`, refuses zero-sized types at compile
//! time, which generic state tables can hold: the heap backend's
//! `tests/prefetch.rs` builds and runs a state of them).

#![no_std]

use hashbrown::HashTable;

/// Asks the CPU to load the cache lines holding `value` into every cache level,
/// without waiting for them. A hint only: nothing is read into the program and
/// nothing changes; on CPUs other than x86-64 it does nothing.
///
/// Every line the value spans is requested, up to [`MAX_LINES`]: a value need not
/// start on a line. A `hashbrown` table's buckets, for one, lie at multiples of their
/// size from the end of an allocation that is only 16-byte aligned (glibc's large
/// allocations start 16 bytes into a page), so half of a table's 32-byte buckets can
/// straddle two lines, and a prefetch of the first alone left the second (there, the
/// key the look-up compares) to miss.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    prefetch_span((value as *const T).cast::<u8>(), core::mem::size_of::<T>());
}

/// Most lines [`prefetch`] requests for one value: a bucket or an entry is a line or
/// two; a larger value's later lines are left to the hardware's own prefetcher.
pub const MAX_LINES: usize = 4;

/// A cache line's size on x86-64: what [`prefetch`] requests at a time, and what a
/// caller walking many values needs to request each line once.
pub const LINE: usize = 64;

/// Prefetches the lines of the `len` bytes at `start` (one line for `len` 0), at most
/// [`MAX_LINES`].
#[inline(always)]
fn prefetch_span(start: *const u8, len: usize) {
    prefetch_ptr(start);
    // `start + l * LINE` lies in the `l`-th line after `start`'s, whatever `start`'s
    // offset in its line.
    for l in 1..=further_lines(start.addr(), len) {
        prefetch_ptr(start.wrapping_add(l * LINE));
    }
}

/// How many lines after the one holding address `start` the `len` bytes from there
/// reach into, capped so that at most [`MAX_LINES`] are requested in all.
#[inline(always)]
fn further_lines(start: usize, len: usize) -> usize {
    let last = start.wrapping_add(len.saturating_sub(1)) / LINE;
    last.saturating_sub(start / LINE).min(MAX_LINES - 1)
}

/// Prefetches the line at `ptr`, which need not point to anything: the instruction
/// never faults and reads nothing into the program.
#[inline(always)]
fn prefetch_ptr<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: `_mm_prefetch` is unsafe to call only for its `#[target_feature(enable =
    // "sse")]`, and SSE is part of the x86-64 baseline every such CPU has. The
    // instruction is a hint: it never faults, whatever the address (valid, dangling or
    // unmapped), and writes nothing.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ptr.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// Prefetches the bucket of `table` that an entry with `hash` most likely occupies, or
/// else the free bucket where inserting it would put it, so that the look-up, or the
/// insert's write, finds its line in cache.
///
/// Reads only `table`'s control bytes: the occupied bucket is the first whose 7-bit
/// hash tag matches (another entry's with the same tag, a few times in a hundred,
/// costs a useless line). The free bucket is the first from the hash's home position
/// (`hash` modulo the bucket count, where `hashbrown`'s probe starts). A free bucket
/// has no reference to take: its address is derived from the nearest occupied bucket
/// within three, relying on `hashbrown` laying bucket `i` at `size_of::<T>()` bytes
/// below bucket `i - 1`. That is a guess at another crate's private layout, for speed
/// only: a wrong guess prefetches a useless line and changes nothing else.
///
/// Why the insert's line matters: a store that misses the cache holds its place in the
/// CPU's store buffer until the line arrives, and once the stores behind it fill the
/// buffer the core stalls at its next store (a job inserting a new key every other
/// record showed it as a third of its state writes' time, at the writes' first push).
#[inline]
pub fn prefetch_bucket<T>(table: &HashTable<T>, hash: u64) {
    if let Some(entry) = table
        .find_bucket_index(hash, |_| true)
        .and_then(|i| table.get_bucket(i))
    {
        prefetch_bucket_lines(entry as *const T);
    } else if let Some(slot) = insert_slot(table, hash) {
        prefetch_bucket_lines(slot);
    }
}

/// Prefetches the lines of the table bucket at `bucket`, occupied or free: its first
/// line alone when every bucket of `T`s lies within one (see [`within_one_line`]),
/// else every line it spans.
#[inline(always)]
fn prefetch_bucket_lines<T>(bucket: *const T) {
    if within_one_line::<T>() {
        prefetch_ptr(bucket);
    } else {
        prefetch_span(bucket.cast::<u8>(), core::mem::size_of::<T>());
    }
}

/// Whether every bucket of a table of `T`s lies within one cache line, so that its
/// first line is all a prefetch needs to request (without computing how many lines it
/// spans): a size of 1, 2, 4, 8 or 16 bytes, because `hashbrown` lays its buckets at
/// multiples of their size below control bytes aligned to 16 bytes, which makes each
/// bucket's address a multiple of its size. Resolved at compile time. Like
/// [`insert_slot`], a guess at the layout for speed only: were it wrong, a bucket's
/// second line would miss as it did before lines were counted.
const fn within_one_line<T>() -> bool {
    let size = core::mem::size_of::<T>();
    size.is_power_of_two() && size <= 16
}

/// The address of the free bucket an insert of `hash` takes, derived from an occupied
/// neighbour's (see [`prefetch_bucket`]); `None` when none is within three buckets.
fn insert_slot<T>(table: &HashTable<T>, hash: u64) -> Option<*const T> {
    let n = table.num_buckets();
    if n == 0 {
        return None;
    }
    let mask = n - 1;
    let home = hash as usize & mask;
    let slot = (0..16)
        .map(|d| (home + d) & mask)
        .find(|&i| table.get_bucket(i).is_none())?;
    // Bucket `slot - d` lies `d` buckets above the slot, bucket `slot + d` below it.
    (1..4)
        .find_map(|d| {
            let above = table.get_bucket(slot.checked_sub(d)?)?;
            Some((above as *const T).wrapping_sub(d))
        })
        .or_else(|| {
            (1..4).find_map(|d| {
                let below = table.get_bucket(slot + d)?;
                Some((below as *const T).wrapping_add(d))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value is requested line by line: one line when it fits in its start's, two
    /// when it straddles a boundary (a 32-byte bucket 48 bytes into a line), never
    /// more than [`MAX_LINES`].
    #[test]
    fn every_line_a_value_spans_is_requested() {
        assert_eq!(
            further_lines(0x1000, 0),
            0,
            "a zero-sized value: its start's line"
        );
        assert_eq!(further_lines(0x1000, 1), 0);
        assert_eq!(further_lines(0x1000, 64), 0, "a whole line from its start");
        assert_eq!(further_lines(0x1000, 65), 1);
        assert_eq!(further_lines(0x1010, 32), 0, "a bucket 16 bytes in");
        assert_eq!(
            further_lines(0x1030, 32),
            1,
            "a bucket 48 bytes in straddles"
        );
        assert_eq!(further_lines(0x103f, 2), 1, "two bytes across a boundary");
        assert_eq!(further_lines(0x1030, 100), 2);
        assert_eq!(further_lines(0x1000, 4096), MAX_LINES - 1, "capped");
        assert_eq!(
            further_lines(usize::MAX - 8, 32),
            0,
            "no overflow at the top"
        );
    }

    /// The layout [`insert_slot`] relies on: bucket `i` lies one bucket below `i - 1`.
    /// Fails (and says the guess went stale) if a `hashbrown` release changes it.
    #[test]
    fn buckets_lie_in_reverse_order() {
        let mut table: HashTable<u64> = HashTable::new();
        for k in 0..1000u64 {
            let h = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            table.insert_unique(h, k, |&v| v.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        let mut checked = 0;
        for i in 1..table.num_buckets() {
            if let (Some(a), Some(b)) = (table.get_bucket(i - 1), table.get_bucket(i)) {
                assert_eq!(
                    (a as *const u64).wrapping_sub(1),
                    b as *const u64,
                    "bucket {i} right below bucket {}",
                    i - 1
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "{checked} adjacent pairs");
    }

    /// The layout [`within_one_line`] relies on: a table's buckets of 16, 8 or 4 bytes
    /// never cross a cache line (32-byte ones may, and are not claimed to). Fails
    /// (and says the guess went stale) if a `hashbrown` release changes it.
    #[test]
    fn small_buckets_lie_within_one_line() {
        fn check<T>(value: impl Fn(u64) -> T) -> usize {
            // Sized up front: no resize, so the rehash function is never called.
            let mut table: HashTable<T> = HashTable::with_capacity(5000);
            let hash_of = |k: u64| k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for k in 0..5000u64 {
                table.insert_unique(hash_of(k), value(k), |_| 0);
            }
            let size = core::mem::size_of::<T>();
            let mut checked = 0;
            for i in 0..table.num_buckets() {
                if let Some(b) = table.get_bucket(i) {
                    let addr = (b as *const T).addr();
                    assert_eq!(further_lines(addr, size), 0, "bucket {i} of {size} bytes");
                    checked += 1;
                }
            }
            checked
        }
        assert!(within_one_line::<(u64, u64)>());
        assert!(within_one_line::<u64>());
        assert!(within_one_line::<u32>());
        assert!(!within_one_line::<[u64; 3]>());
        assert!(!within_one_line::<[u64; 4]>());
        assert!(!within_one_line::<()>());
        assert_eq!(check(|k| (k, k)), 5000);
        assert_eq!(check(|k| k), 5000);
        assert_eq!(check(|k| k as u32), 5000);
        assert_eq!(check(|k| [k as u16; 2]), 5000, "4 bytes aligned to 2");
    }

    /// The slot found is the bucket where the insert lands.
    #[test]
    fn the_insert_slot_is_where_the_entry_goes() {
        let hash_of = |k: u64| k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k << 40);
        let mut table: HashTable<[u64; 3]> = HashTable::with_capacity(4096);
        let (mut guessed, mut right) = (0, 0);
        for k in 0..3000u64 {
            let h = hash_of(k);
            let slot = insert_slot(&table, h);
            let at =
                table.insert_unique(h, [k; 3], |v| hash_of(v[0])).into_mut() as *const [u64; 3];
            if let Some(slot) = slot {
                guessed += 1;
                right += usize::from(slot == at);
            }
        }
        assert!(guessed > 1000, "{guessed} slots guessed");
        assert_eq!(
            right, guessed,
            "every guessed slot is where the insert went"
        );
    }
}

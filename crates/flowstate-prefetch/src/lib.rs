//! A prefetch hint: asks the CPU to bring the cache line holding a value into its
//! caches, and goes on without waiting for it.
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

/// Asks the CPU to load the cache line holding the start of `value` into every cache
/// level, without waiting for it. A hint only: nothing is read into the program and
/// nothing changes; on CPUs other than x86-64 it does nothing.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: `_mm_prefetch` is unsafe to call only for its `#[target_feature(enable =
    // "sse")]`, and SSE is part of the x86-64 baseline every such CPU has. The
    // instruction is a hint: it never faults, whatever the address, and writes
    // nothing; `value` is a live reference in any case.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

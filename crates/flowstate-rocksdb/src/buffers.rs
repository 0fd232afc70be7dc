//! Byte buffers a state handle reuses for what it builds on every access (the entry
//! key, the serialized value), so that a steady run of gets and puts allocates nothing.
//!
//! A [`Buf`] is taken from its handle's [`Buffers`] and goes back when dropped. Taking
//! one while others are out (a nested access) takes another spare or a new one, never
//! a shared one, so no access can see another's bytes.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Spare buffers kept at most: more than any access holds at once.
const MAX_SPARE: usize = 4;
/// Capacity above which a buffer is freed rather than kept, so that one large value
/// does not pin its memory for the handle's life.
const MAX_KEPT_BYTES: usize = 64 << 10;

/// The spare buffers of one state handle.
#[derive(Debug, Default)]
pub(crate) struct Buffers(RefCell<Vec<Vec<u8>>>);

impl Buffers {
    /// An empty buffer, a spare one when there is one.
    #[inline]
    pub(crate) fn take(&self) -> Buf<'_> {
        let mut buf = self.0.borrow_mut().pop().unwrap_or_default();
        buf.clear();
        Buf { buf, pool: self }
    }

    /// Spare buffers held (for tests).
    #[cfg(test)]
    fn spare(&self) -> usize {
        self.0.borrow().len()
    }
}

/// A buffer taken from [`Buffers`]; a `Vec<u8>` to its user.
#[derive(Debug)]
pub(crate) struct Buf<'a> {
    buf: Vec<u8>,
    pool: &'a Buffers,
}

impl Deref for Buf<'_> {
    type Target = Vec<u8>;
    #[inline]
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for Buf<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl AsRef<[u8]> for Buf<'_> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Buf<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.buf.capacity() > MAX_KEPT_BYTES {
            return;
        }
        let mut spare = self.pool.0.borrow_mut();
        if spare.len() < MAX_SPARE {
            spare.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_reused_empty() {
        let pool = Buffers::default();
        let mut a = pool.take();
        a.extend_from_slice(b"entry key");
        let ptr = a.as_ptr();
        drop(a);
        assert_eq!(pool.spare(), 1);
        let b = pool.take();
        assert!(b.is_empty(), "a reused buffer starts empty");
        assert_eq!(b.as_ptr(), ptr, "the same allocation");
    }

    #[test]
    fn buffers_out_at_once_are_distinct() {
        let pool = Buffers::default();
        let mut a = pool.take();
        let mut b = pool.take();
        a.push(1);
        b.push(2);
        assert_eq!((a.as_slice(), b.as_slice()), (&[1][..], &[2][..]));
        drop((a, b));
        assert_eq!(pool.spare(), 2);
    }

    #[test]
    fn keeps_a_bounded_number_of_small_buffers() {
        let pool = Buffers::default();
        let out: Vec<Buf<'_>> = (0..MAX_SPARE + 3)
            .map(|_| {
                let mut b = pool.take();
                b.push(0);
                b
            })
            .collect();
        drop(out);
        assert_eq!(pool.spare(), MAX_SPARE);
        let mut big = pool.take();
        big.reserve(MAX_KEPT_BYTES + 1);
        drop(big);
        assert_eq!(pool.spare(), MAX_SPARE - 1, "a large buffer is freed");
    }
}

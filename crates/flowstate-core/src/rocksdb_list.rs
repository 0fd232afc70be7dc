//! The stored layout of a list state's value in the RocksDB backend (`docs/formats.md`,
//! "Key and value layout"): items back to back, each either one length-prefixed element or a
//! run of integer elements behind a marker. Appends are merge operands concatenated by
//! the `flowstate.list-append` merge operator, so a value is any mix of the two.
//!
//! Why runs: the elements of a list of postcard integers (`u64`, `i64`, `u32`, `i32`)
//! are LEB128 varints, which end themselves, yet each carried a length byte as well.
//! RocksDB throttles whole-list writes on the bytes they write, so that byte was a
//! tenth of a list of full-range `u64`s (ten or eleven bytes an element, against
//! Flink's nine: eight and a delimiter). A run spends three bytes on up to 127
//! elements instead.
//!
//! The marker is `0x80 0x00`, a varint that is not in its shortest form. No length
//! prefix is written so, so values written before runs existed read unchanged, and a
//! reader that predates runs rejects a run as a malformed varint instead of misreading
//! it (the native manifest's version 3 also keeps such a reader from restoring one).
//!
//! Defined in core (not the RocksDB crate), like the native manifest, so the decoder
//! can be fuzzed without linking RocksDB.

use crate::format::{ByteReader, put_varint, put_vbytes};
use crate::snapshot::payload;
use crate::{StateError, StateResult};

/// What starts a run of integer elements.
pub const RUN_MARKER: [u8; 2] = [0x80, 0x00];

/// The fewest elements written as a run: the marker and count cost three bytes (up to
/// 127 elements), length prefixes one byte an element, so four is where a run is
/// shorter.
pub const RUN_MIN: usize = 4;

/// The longest LEB128 varint of a `u64`.
const MAX_VARINT64: usize = 10;

/// Starts a run of `count` integer elements in `out`; the caller appends exactly that
/// many varints after it. `false` (and nothing written) when `count` is below
/// [`RUN_MIN`] or above `u32::MAX`: the elements are then written length-prefixed.
pub fn begin_run(out: &mut Vec<u8>, count: usize) -> bool {
    match u32::try_from(count) {
        Ok(n) if count >= RUN_MIN => {
            out.extend_from_slice(&RUN_MARKER);
            put_varint(out, n);
            true
        }
        _ => false,
    }
}

/// The elements of a stored list, in order: each a length-prefixed element's bytes or
/// a run element's varint bytes (exactly what the element's serializer wrote). Yields
/// one error and stops at the first malformed byte.
pub struct StoredItems<'a> {
    stored: &'a [u8],
    pos: usize,
    /// Elements of the current run not yet yielded.
    run_left: u32,
    /// Whether a run was seen: the value is then not already a canonical element list.
    saw_run: bool,
    what: &'a str,
}

impl<'a> StoredItems<'a> {
    /// The elements of `stored`; errors name `what` (the state).
    pub fn new(stored: &'a [u8], what: &'a str) -> Self {
        StoredItems {
            stored,
            pos: 0,
            run_left: 0,
            saw_run: false,
            what,
        }
    }

    /// Ends the iteration (after an error).
    fn stop(&mut self) {
        self.pos = self.stored.len();
        self.run_left = 0;
    }

    fn corrupt(&mut self, detail: String) -> StateError {
        self.stop();
        StateError::corrupt(self.what, detail)
    }

    /// A `u32` varint (a length or a run's count) at the current position.
    fn varint(&mut self, what: &str) -> StateResult<u32> {
        let mut r = ByteReader::new(&self.stored[self.pos..], self.what);
        match r.varint(what) {
            Ok(n) => {
                self.pos += r.position();
                Ok(n)
            }
            Err(e) => {
                self.stop();
                Err(e)
            }
        }
    }

    /// A run's element: one LEB128 varint of a `u64` in its shortest form.
    fn run_element(&mut self) -> StateResult<&'a [u8]> {
        let rest = &self.stored[self.pos..];
        let Some(end) = rest.iter().take(MAX_VARINT64).position(|b| b & 0x80 == 0) else {
            let at = self.pos;
            return Err(self.corrupt(format!(
                "list run element at offset {at}: no varint of at most {MAX_VARINT64} bytes"
            )));
        };
        let last = rest[end];
        if (end > 0 && last == 0) || (end == MAX_VARINT64 - 1 && last > 1) {
            let at = self.pos;
            return Err(self.corrupt(format!(
                "list run element at offset {at}: not the shortest varint of a u64"
            )));
        }
        self.pos += end + 1;
        Ok(&rest[..=end])
    }

    fn item(&mut self) -> StateResult<&'a [u8]> {
        if self.run_left > 0 {
            self.run_left -= 1;
            return self.run_element();
        }
        if self.stored[self.pos..].starts_with(&RUN_MARKER) {
            self.pos += RUN_MARKER.len();
            let count = self.varint("list run count")?;
            if count == 0 {
                let at = self.pos;
                return Err(self.corrupt(format!("empty list run before offset {at}")));
            }
            self.saw_run = true;
            self.run_left = count - 1;
            return self.run_element();
        }
        let n = self.varint("list element")? as usize;
        match self.stored.get(self.pos..).and_then(|r| r.get(..n)) {
            Some(e) => {
                self.pos += n;
                Ok(e)
            }
            None => {
                let (at, left) = (self.pos, self.stored.len() - self.pos);
                Err(self.corrupt(format!(
                    "list element: needs {n} bytes at offset {at}, only {left} left"
                )))
            }
        }
    }
}

impl<'a> Iterator for StoredItems<'a> {
    type Item = StateResult<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        (self.run_left > 0 || self.pos < self.stored.len()).then(|| self.item())
    }
}

/// Splits a stored list into its elements.
pub fn stored_list_items<'a>(stored: &'a [u8], what: &'a str) -> StateResult<Vec<&'a [u8]>> {
    StoredItems::new(stored, what).collect()
}

/// Canonical list payload (count, then length-prefixed elements) of a stored list.
pub fn stored_list_to_canonical(stored: &[u8], what: &str) -> StateResult<Vec<u8>> {
    let mut items = StoredItems::new(stored, what);
    let elements: Vec<&[u8]> = items.by_ref().collect::<StateResult<_>>()?;
    let mut out = Vec::with_capacity(stored.len() + 5 + elements.len());
    put_varint(&mut out, elements.len() as u32);
    if items.saw_run {
        for e in elements {
            put_vbytes(&mut out, e)?;
        }
    } else {
        // Without runs the stored value is the canonical element list already.
        out.extend_from_slice(stored);
    }
    Ok(out)
}

/// Stored form of a canonical list payload (checks every element): length-prefixed
/// elements, which every reader takes whatever the element type.
pub fn canonical_list_to_stored(canonical: &[u8], what: &str) -> StateResult<Vec<u8>> {
    let mut out = Vec::with_capacity(canonical.len());
    for item in payload::list_items(canonical, what)? {
        put_vbytes(&mut out, item)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::serializer::IntegerEncoding;
    use proptest::prelude::*;

    fn varint64(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        IntegerEncoding::of(&v).unwrap().append_to(&mut out);
        out
    }

    /// How a list is written: runs of `RUN_MIN` or more integers, the rest prefixed.
    fn write(ops: &[Vec<u64>]) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            let run = begin_run(&mut out, op.len());
            for v in op {
                let e = varint64(*v);
                if run {
                    out.extend_from_slice(&e);
                } else {
                    put_vbytes(&mut out, &e).unwrap();
                }
            }
        }
        out
    }

    /// The golden bytes of one value, committed (`tests/golden/rocksdb_list/`, also the
    /// fuzz target's seed): a length-prefixed element, a run of four, a prefixed empty
    /// element (what a unit value is), a run of two with the longest varint. Values of
    /// this layout must keep reading; never rewrite the file.
    #[test]
    fn reads_the_documented_layout() {
        let stored: &[u8] = include_bytes!("../tests/golden/rocksdb_list/v1-items-and-runs.bin");
        assert_eq!(stored.len(), 25);
        let items = stored_list_items(stored, "golden").unwrap();
        let want: Vec<&[u8]> = vec![
            &[0x07],
            &[0x01],
            &[0x7f],
            &[0x80, 0x01],
            &[0x00],
            &[],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            &[0x05],
        ];
        assert_eq!(items, want);
        assert_eq!(items[6], varint64(u64::MAX).as_slice());
        let canonical = stored_list_to_canonical(stored, "golden").unwrap();
        assert_eq!(payload::list_items(&canonical, "c").unwrap(), want);
    }

    #[test]
    fn rejects_malformed_runs() {
        for bad in [
            &[0x80, 0x00][..],               // no count
            &[0x80, 0x00, 0x00],             // empty run
            &[0x80, 0x00, 0x02, 0x01],       // one element short
            &[0x80, 0x00, 0x01, 0x80],       // an unfinished varint
            &[0x80, 0x00, 0x01, 0x81, 0x00], // not the shortest form
            &[
                0x80, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ],
            &[
                0x80, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            &[0x03, 0x01], // a prefixed element cut short
        ] {
            assert!(stored_list_items(bad, "bad").is_err(), "{bad:x?}");
            assert!(stored_list_to_canonical(bad, "bad").is_err(), "{bad:x?}");
            // One error, then the iterator ends.
            let mut it = StoredItems::new(bad, "bad");
            while let Some(Ok(_)) = it.next() {}
            assert!(it.next().is_none(), "{bad:x?}");
        }
    }

    #[test]
    fn short_lists_stay_prefixed() {
        let mut out = Vec::new();
        assert!(!begin_run(&mut out, RUN_MIN - 1));
        assert!(out.is_empty());
        assert!(begin_run(&mut out, RUN_MIN));
        assert_eq!(out, [0x80, 0x00, RUN_MIN as u8]);
    }

    proptest! {
        /// Any sequence of appends, runs or not, reads back as the model (the
        /// concatenation of the appended values), and its canonical form is the same
        /// as that of the same elements written length-prefixed.
        #[test]
        fn appends_read_back_as_the_model(
            ops in prop::collection::vec(
                prop::collection::vec(
                    prop_oneof![any::<u64>(), 0u64..200, Just(u64::MAX)],
                    0..12,
                ),
                0..8,
            )
        ) {
            let stored = write(&ops);
            let model: Vec<u64> = ops.concat();
            let got: Vec<Vec<u8>> = stored_list_items(&stored, "p")
                .unwrap()
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect();
            let want: Vec<Vec<u8>> = model.iter().map(|v| varint64(*v)).collect();
            prop_assert_eq!(&got, &want);
            let mut prefixed = Vec::new();
            for e in &want {
                put_vbytes(&mut prefixed, e).unwrap();
            }
            prop_assert_eq!(
                stored_list_to_canonical(&stored, "p").unwrap(),
                stored_list_to_canonical(&prefixed, "p").unwrap()
            );
            prop_assert_eq!(
                canonical_list_to_stored(&stored_list_to_canonical(&stored, "p").unwrap(), "p")
                    .unwrap(),
                prefixed
            );
        }

        /// No input panics the reader; whatever it accepts converts to a canonical list
        /// of the same elements.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(items) = stored_list_items(&bytes, "a") {
                let canonical = stored_list_to_canonical(&bytes, "a").unwrap();
                prop_assert_eq!(payload::list_items(&canonical, "c").unwrap(), items);
            }
        }
    }
}

//! The key-group-indexed file: the container of every keyed snapshot.
//!
//! A file holds one block of bytes per key group of a contiguous range, an opaque
//! header, an index of block offsets and a footer. Every byte is covered by a CRC32C
//! (header, each block, index, footer) or is a magic number, so one flipped byte or a
//! truncation is always detected. A reader fetches the footer, index and header, then
//! only the blocks of the key groups it owns (contiguous blocks in one ranged read).
//! The byte layout is specified in `docs/formats.md` ("Key-group-indexed file").
//!
//! ```no_run
//! # use flowstate_core::format::{KeyGroupFileWriter, KIND_KEYED_RAW};
//! # use flowstate_core::keygroup::KeyGroupRange;
//! # fn demo(storage: &dyn flowstate_core::storage::CheckpointStorage) -> flowstate_core::StateResult<()> {
//! let range = KeyGroupRange::new(0, 3)?;
//! let mut w = KeyGroupFileWriter::new(storage.create("chk-1/raw-0")?, KIND_KEYED_RAW, 128, range, b"")?;
//! for kg in range.iter() {
//!     w.begin_key_group(kg)?;
//!     w.buffer().extend_from_slice(&[kg as u8; 3]);
//! }
//! let size = w.finish()?;
//! # Ok(()) }
//! ```

use bytes::Bytes;

use crate::error::{StateError, StateResult};
use crate::keygroup::{KeyGroupRange, check_max_parallelism};
use crate::storage::{CheckpointStorage, StorageWrite};

mod encoding;

pub use encoding::{ByteReader, PutLe, frame, put_len_prefixed, put_varint, put_vbytes, unframe};

/// Magic at the start of a key-group-indexed file.
pub const FILE_MAGIC: &[u8; 8] = b"FLWSKGF\0";
/// Magic at the very end of a key-group-indexed file.
pub const FOOTER_MAGIC: &[u8; 8] = b"FLWSEND\0";
/// Current format version.
pub const FORMAT_VERSION: u32 = 1;
/// Payload kind: managed keyed state (see `snapshot`).
pub const KIND_KEYED_MANAGED: u32 = 1;
/// Payload kind: raw keyed state written by operators.
pub const KIND_KEYED_RAW: u32 = 2;

const PRELUDE_LEN: u64 = 16;
const FOOTER_LEN: u64 = 40;
const INDEX_ENTRY_LEN: u64 = 24;

/// Writes a key-group-indexed file into a [`StorageWrite`], one key group at a time:
/// memory holds at most the current key group's block (plus buffering), never the file.
pub struct KeyGroupFileWriter<'w> {
    sink: Box<dyn StorageWrite + 'w>,
    /// Bytes not yet handed to the sink; starts at file offset `flushed`.
    buf: Vec<u8>,
    flushed: u64,
    max_parallelism: u32,
    range: KeyGroupRange,
    /// (key group, offset, length, crc) of finished blocks.
    index: Vec<(u32, u64, u64, u32)>,
    /// Key group and buffer position of the block being written.
    current: Option<(u32, usize)>,
}

/// Hand buffered bytes to the sink once this many accumulate (at block boundaries).
const FLUSH_BYTES: usize = 1 << 20;

impl<'w> KeyGroupFileWriter<'w> {
    /// Starts a file of `kind` for `range` with an opaque `header`.
    pub fn new(
        sink: Box<dyn StorageWrite + 'w>,
        kind: u32,
        max_parallelism: u32,
        range: KeyGroupRange,
        header: &[u8],
    ) -> StateResult<Self> {
        let header_len = u32::try_from(header.len())
            .map_err(|_| StateError::InvalidArgument("snapshot header exceeds 4 GiB".into()))?;
        let mut buf = Vec::with_capacity(64 + header.len());
        buf.extend_from_slice(FILE_MAGIC);
        buf.put_u32(FORMAT_VERSION);
        buf.put_u32(kind);
        buf.put_u32(header_len);
        buf.extend_from_slice(header);
        buf.put_u32(crc32c::crc32c(header));
        Ok(KeyGroupFileWriter {
            sink,
            buf,
            flushed: 0,
            max_parallelism,
            range,
            index: Vec::with_capacity(range.len()),
            current: None,
        })
    }

    fn close_block(&mut self) -> StateResult<()> {
        if let Some((kg, start)) = self.current.take() {
            let block = &self.buf[start..];
            self.index.push((
                kg,
                self.flushed + start as u64,
                block.len() as u64,
                crc32c::crc32c(block),
            ));
            if self.buf.len() >= FLUSH_BYTES {
                self.sink.write(&self.buf)?;
                self.flushed += self.buf.len() as u64;
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Starts the block of `key_group`; key groups must come in order, each once.
    pub fn begin_key_group(&mut self, key_group: u32) -> StateResult<()> {
        self.close_block()?;
        let expected = self.range.start() + self.index.len() as u32;
        if !self.range.contains(key_group) || key_group != expected {
            return Err(StateError::InvalidArgument(format!(
                "key group {key_group} written out of order (expected {expected} within {})",
                self.range
            )));
        }
        self.current = Some((key_group, self.buf.len()));
        Ok(())
    }

    /// The buffer the current key group's bytes are appended to.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes the index and footer, publishes the file and returns its size.
    pub fn finish(mut self) -> StateResult<u64> {
        self.close_block()?;
        if self.index.len() != self.range.len() {
            return Err(StateError::InvalidArgument(format!(
                "{} of {} key groups written",
                self.index.len(),
                self.range.len()
            )));
        }
        let index_offset = self.flushed + self.buf.len() as u64;
        let mut index = Vec::with_capacity(self.index.len() * INDEX_ENTRY_LEN as usize);
        for (kg, offset, len, crc) in &self.index {
            index.put_u32(*kg);
            index.put_u64(*offset);
            index.put_u64(*len);
            index.put_u32(*crc);
        }
        let index_crc = crc32c::crc32c(&index);
        self.buf.extend_from_slice(&index);
        let footer_start = self.buf.len();
        self.buf.put_u32(self.max_parallelism);
        self.buf.put_u32(self.range.start());
        self.buf
            .put_u32(self.range.start() + self.range.len() as u32);
        self.buf.put_u64(index_offset);
        self.buf.put_u32(self.index.len() as u32);
        self.buf.put_u32(index_crc);
        let footer_crc = crc32c::crc32c(&self.buf[footer_start..]);
        self.buf.put_u32(footer_crc);
        self.buf.extend_from_slice(FOOTER_MAGIC);
        self.sink.write(&self.buf)?;
        Ok(self.sink.finish()?)
    }
}

#[derive(Clone, Copy)]
struct IndexEntry {
    offset: u64,
    len: u64,
    crc: u32,
}

/// An opened key-group-indexed file: footer, index and header verified.
pub struct KeyGroupFileReader<'s> {
    storage: &'s dyn CheckpointStorage,
    path: String,
    kind: u32,
    max_parallelism: u32,
    range: KeyGroupRange,
    header: Bytes,
    index: Vec<IndexEntry>,
}

impl<'s> KeyGroupFileReader<'s> {
    /// Opens `path`, verifying magic numbers, version, kind and checksums of the
    /// footer, index and header.
    pub fn open(
        storage: &'s dyn CheckpointStorage,
        path: &str,
        expected_kind: u32,
    ) -> StateResult<Self> {
        let size = storage.size(path)?;
        if size < PRELUDE_LEN + 4 + 4 + FOOTER_LEN {
            return Err(StateError::corrupt(
                path,
                format!("file of {size} bytes is truncated"),
            ));
        }
        let prelude = storage.get_range(path, 0..PRELUDE_LEN + 4)?;
        let mut r = ByteReader::new(&prelude, path);
        if r.take(8, "magic")? != FILE_MAGIC {
            return Err(StateError::corrupt(
                path,
                "not a flowstate key-group file (bad magic)",
            ));
        }
        let version = r.u32("version")?;
        if version == 0 || version > FORMAT_VERSION {
            return Err(StateError::UnsupportedVersion {
                path: path.to_string(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let kind = r.u32("kind")?;
        let header_len = r.u32("header length")? as u64;

        let footer = storage.get_range(path, size - FOOTER_LEN..size)?;
        let mut f = ByteReader::new(&footer, path);
        let max_parallelism = f.u32("max parallelism")?;
        let start = f.u32("range start")?;
        let end_exclusive = f.u32("range end")?;
        let index_offset = f.u64("index offset")?;
        let count = f.u32("index count")?;
        let index_crc = f.u32("index crc")?;
        let footer_crc = f.u32("footer crc")?;
        if f.take(8, "footer magic")? != FOOTER_MAGIC {
            return Err(StateError::corrupt(
                path,
                "bad footer magic (file truncated or overwritten)",
            ));
        }
        if crc32c::crc32c(&footer[..28]) != footer_crc {
            return Err(StateError::corrupt(path, "footer checksum mismatch"));
        }
        if kind != expected_kind {
            return Err(StateError::corrupt(
                path,
                format!("file holds payload kind {kind}, expected {expected_kind}"),
            ));
        }
        check_max_parallelism(max_parallelism).map_err(|_| {
            StateError::corrupt(path, format!("max parallelism {max_parallelism} invalid"))
        })?;
        if end_exclusive < start
            || end_exclusive > max_parallelism
            || (end_exclusive - start) != count
        {
            return Err(StateError::corrupt(
                path,
                "key-group range and index count disagree",
            ));
        }
        let range = if count == 0 {
            KeyGroupRange::empty()
        } else {
            KeyGroupRange::new(start, end_exclusive - 1)?
        };
        let header_end = PRELUDE_LEN + 4 + header_len + 4;
        let index_len = count as u64 * INDEX_ENTRY_LEN;
        if index_offset < header_end
            || index_offset.checked_add(index_len) != Some(size - FOOTER_LEN)
        {
            return Err(StateError::corrupt(
                path,
                "index offset does not match the file size",
            ));
        }
        let index_bytes = storage.get_range(path, index_offset..index_offset + index_len)?;
        if crc32c::crc32c(&index_bytes) != index_crc {
            return Err(StateError::corrupt(path, "index checksum mismatch"));
        }
        let mut ir = ByteReader::new(&index_bytes, path);
        let mut index = Vec::with_capacity(count as usize);
        let mut expected_offset = header_end;
        for kg in range.iter() {
            let stored_kg = ir.u32("index key group")?;
            let offset = ir.u64("index offset")?;
            let len = ir.u64("index length")?;
            let crc = ir.u32("index crc")?;
            if stored_kg != kg || offset != expected_offset {
                return Err(StateError::corrupt(
                    path,
                    format!("index entry of key group {kg} is inconsistent"),
                ));
            }
            expected_offset = offset
                .checked_add(len)
                .filter(|e| *e <= index_offset)
                .ok_or_else(|| {
                    StateError::corrupt(path, format!("block of key group {kg} overruns the index"))
                })?;
            index.push(IndexEntry { offset, len, crc });
        }
        if expected_offset != index_offset {
            return Err(StateError::corrupt(
                path,
                "blocks do not end where the index starts",
            ));
        }
        let header_block = storage.get_range(path, PRELUDE_LEN + 4..header_end)?;
        let (header, crc) = header_block.split_at(header_block.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(header) != stored {
            return Err(StateError::corrupt(path, "header checksum mismatch"));
        }
        Ok(KeyGroupFileReader {
            storage,
            path: path.to_string(),
            kind,
            max_parallelism,
            range,
            header: header_block.slice(..header_block.len() - 4),
            index,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The payload kind.
    pub fn kind(&self) -> u32 {
        self.kind
    }
    /// Max parallelism the file was written with.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }
    /// The key groups the file holds.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }
    /// The opaque header.
    pub fn header(&self) -> &Bytes {
        &self.header
    }

    /// Reads and verifies the blocks of every key group in `wanted ∩ file range`, in
    /// order, fetching contiguous blocks together in reads of at most 16 MiB (or one
    /// block, if larger), and hands each to `visit`.
    pub fn for_each_key_group(
        &self,
        wanted: KeyGroupRange,
        mut visit: impl FnMut(u32, Bytes) -> StateResult<()>,
    ) -> StateResult<()> {
        const SPAN_BYTES: u64 = 16 << 20;
        let span = self.range.intersection(&wanted);
        let kgs: Vec<u32> = span.iter().collect();
        let mut i = 0;
        while i < kgs.len() {
            // Extend the read while it stays under the span limit.
            let first = self.entry(kgs[i])?;
            let mut j = i + 1;
            while j < kgs.len() {
                let e = self.entry(kgs[j])?;
                if e.offset + e.len - first.offset > SPAN_BYTES {
                    break;
                }
                j += 1;
            }
            let last = self.entry(kgs[j - 1])?;
            let expected = last.offset + last.len - first.offset;
            let data = self
                .storage
                .get_range(&self.path, first.offset..last.offset + last.len)?;
            if data.len() as u64 != expected {
                return Err(StateError::corrupt(
                    &self.path,
                    "storage returned a short read",
                ));
            }
            for kg in &kgs[i..j] {
                let e = self.entry(*kg)?;
                let from = (e.offset - first.offset) as usize;
                let block = data.slice(from..from + e.len as usize);
                if crc32c::crc32c(&block) != e.crc {
                    return Err(StateError::corrupt(
                        &self.path,
                        format!("checksum mismatch in key group {kg}"),
                    ));
                }
                visit(*kg, block)?;
            }
            i = j;
        }
        Ok(())
    }

    /// The blocks of every key group in `wanted ∩ file range`, in order.
    pub fn read_key_groups(&self, wanted: KeyGroupRange) -> StateResult<Vec<(u32, Bytes)>> {
        let mut out = Vec::new();
        self.for_each_key_group(wanted, |kg, b| {
            out.push((kg, b));
            Ok(())
        })?;
        Ok(out)
    }

    fn entry(&self, key_group: u32) -> StateResult<IndexEntry> {
        self.range
            .index_of(key_group)
            .and_then(|i| self.index.get(i).copied())
            .ok_or_else(|| {
                StateError::corrupt(
                    &self.path,
                    format!("no index entry for key group {key_group}"),
                )
            })
    }
}

//! Raw keyed state: bytes an operator writes per key group itself.
//!
//! Operators that manage their own structures write one byte stream per key group into
//! the snapshot; on restore (at any parallelism) each instance gets back the streams of
//! exactly the key groups it owns. The file is the key-group-indexed container of
//! [`crate::format`] with payload kind 2 and an empty header.
//!
//! ```no_run
//! # use flowstate_core::raw::RawKeyedStateOutput;
//! # use flowstate_core::keygroup::KeyGroupRange;
//! # fn demo(storage: &dyn flowstate_core::storage::CheckpointStorage) -> flowstate_core::StateResult<()> {
//! let mut out = RawKeyedStateOutput::new(128, KeyGroupRange::new(0, 63)?)?;
//! out.key_group(5)?.extend_from_slice(b"my bytes");
//! let handle = out.write(storage, "chk-1/raw-0")?;
//! # Ok(()) }
//! ```

use bytes::Bytes;

use crate::error::{StateError, StateResult};
use crate::format::{KIND_KEYED_RAW, KeyGroupFileWriter};
use crate::keygroup::{KeyGroupRange, check_max_parallelism};
use crate::snapshot::{KeyedStateHandle, open_overlapping};
use crate::storage::CheckpointStorage;

/// Collects the raw byte streams of one instance's key groups for a snapshot.
#[derive(Debug, Clone)]
pub struct RawKeyedStateOutput {
    max_parallelism: u32,
    range: KeyGroupRange,
    blocks: Vec<Vec<u8>>,
}

impl RawKeyedStateOutput {
    /// An empty output for an instance owning `range`.
    pub fn new(max_parallelism: u32, range: KeyGroupRange) -> StateResult<Self> {
        check_max_parallelism(max_parallelism)?;
        if range.end().is_some_and(|e| e >= max_parallelism) {
            return Err(StateError::InvalidArgument(format!(
                "{range} exceeds max parallelism {max_parallelism}"
            )));
        }
        Ok(RawKeyedStateOutput {
            max_parallelism,
            range,
            blocks: vec![Vec::new(); range.len()],
        })
    }

    /// The stream of `key_group`, to append to; errors outside the owned range.
    pub fn key_group(&mut self, key_group: u32) -> StateResult<&mut Vec<u8>> {
        let range = self.range;
        let i = range
            .index_of(key_group)
            .ok_or(StateError::KeyGroupOutOfRange { key_group, range })?;
        Ok(&mut self.blocks[i])
    }

    /// Writes the streams to `path`.
    pub fn write(
        self,
        storage: &dyn CheckpointStorage,
        path: &str,
    ) -> StateResult<KeyedStateHandle> {
        let mut file = KeyGroupFileWriter::new(
            storage.create(path)?,
            KIND_KEYED_RAW,
            self.max_parallelism,
            self.range,
            &[],
        )?;
        for (kg, block) in self.range.iter().zip(&self.blocks) {
            file.begin_key_group(kg)?;
            file.buffer().extend_from_slice(block);
        }
        let size = file.finish()?;
        Ok(KeyedStateHandle::canonical(
            path,
            self.range,
            self.max_parallelism,
            size,
        ))
    }
}

/// Reads back the non-empty raw streams of the key groups in `range`, in key-group order.
pub fn read_raw_keyed_state(
    storage: &dyn CheckpointStorage,
    handles: &[KeyedStateHandle],
    max_parallelism: u32,
    range: KeyGroupRange,
) -> StateResult<Vec<(u32, Bytes)>> {
    let mut out = Vec::new();
    for (_, file, overlap) in
        open_overlapping(storage, handles, max_parallelism, range, KIND_KEYED_RAW)?
    {
        out.extend(
            file.read_key_groups(overlap)?
                .into_iter()
                .filter(|(_, b)| !b.is_empty()),
        );
    }
    out.sort_by_key(|(kg, _)| *kg);
    Ok(out)
}

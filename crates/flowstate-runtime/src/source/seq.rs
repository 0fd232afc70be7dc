//! The sequence source behind `source_vec` and the Nexmark generator: each worker reads
//! every `of`-th element from its own index, and stores how many it has read.

use serde::{Deserialize, Serialize};

use crate::BoxError;

use super::split::{Read, SplitPosition, SplitReader, SplitSource};

/// A split of a sequence: elements `index`, `index + of`, ..., `consumed` of them
/// read (the vec and Nexmark sources).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SeqSplit {
    pub(crate) index: u64,
    pub(crate) of: u64,
    pub(crate) consumed: u64,
}

/// A sequence source over elements `0..len` given by `element` (made per split).
pub(crate) struct SeqSource<T> {
    /// This worker's fresh split (index, of); `None`: it reads nothing.
    pub(crate) fresh: Option<(u64, u64)>,
    pub(crate) len: u64,
    #[allow(clippy::type_complexity)]
    pub(crate) element: Box<dyn FnMut(&SeqSplit) -> Box<dyn FnMut(u64) -> Option<T>>>,
}

impl<T: 'static> SplitSource<T> for SeqSource<T> {
    type Split = SeqSplit;
    fn initial_splits(&mut self, _: usize, _: usize) -> Result<Vec<SeqSplit>, BoxError> {
        Ok(self
            .fresh
            .map(|(index, of)| SeqSplit {
                index,
                of,
                consumed: 0,
            })
            .into_iter()
            .collect())
    }
    fn open_split(
        &mut self,
        split: SeqSplit,
    ) -> Result<Box<dyn SplitReader<T, SeqSplit>>, BoxError> {
        Ok(Box::new(SeqReader {
            element: (self.element)(&split),
            split,
            len: self.len,
        }))
    }
    fn store_split(s: &SeqSplit) -> Result<SplitPosition, BoxError> {
        Ok(SplitPosition::Seq {
            index: s.index,
            of: s.of,
            consumed: s.consumed,
        })
    }
    fn load_split(stored: SplitPosition) -> Result<SeqSplit, BoxError> {
        match stored {
            SplitPosition::Seq {
                index,
                of,
                consumed,
            } => Ok(SeqSplit {
                index,
                of: of.max(1),
                consumed,
            }),
            other => Err(format!("a sequence source cannot resume from {other:?}").into()),
        }
    }
}

/// Reads a [`SeqSplit`].
struct SeqReader<T> {
    split: SeqSplit,
    len: u64,
    element: Box<dyn FnMut(u64) -> Option<T>>,
}

impl<T> SplitReader<T, SeqSplit> for SeqReader<T> {
    fn next(&mut self) -> Result<Read<T>, BoxError> {
        let s = &self.split;
        let Some(i) = s
            .consumed
            .checked_mul(s.of)
            .and_then(|o| s.index.checked_add(o))
            .filter(|i| *i < self.len)
        else {
            return Ok(Read::End);
        };
        let Some(v) = (self.element)(i) else {
            return Ok(Read::End);
        };
        self.split.consumed += 1;
        Ok(Read::Record(v))
    }
    fn position(&self) -> SeqSplit {
        self.split.clone()
    }
}

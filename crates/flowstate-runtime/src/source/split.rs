//! The split API a source implements (Flink's FLIP-27 split reader, in small): splits,
//! their stored positions, and the readers that resume from them.

use serde::{Deserialize, Serialize};

use crate::BoxError;
use crate::connectors::FilePosition;
use crate::stream::Data;

/// Name of the operator list state holding a source's splits.
pub const SOURCE_SPLITS_STATE: &str = "source-splits";

/// Where a split is read up to, as stored in the source's operator state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitPosition {
    /// Elements `index`, `index + of`, ... of a sequence; `consumed` of them were read.
    Seq {
        /// First element.
        index: u64,
        /// Step between elements.
        of: u64,
        /// Elements already read.
        consumed: u64,
    },
    /// A byte range of a file.
    File(FilePosition),
    /// A split of a user-defined [`SplitSource`]: its `Split` value in postcard's
    /// encoding (the default of [`SplitSource::store_split`]).
    Custom(Vec<u8>),
}

/// One split's stored state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitState {
    /// Read position.
    pub position: SplitPosition,
    /// Largest event time read from the split (`i64::MIN`: none yet).
    pub max_ts: i64,
}

/// What reading a split gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<T> {
    /// A record.
    Record(T),
    /// Nothing for now (an unbounded split waiting for data): asked again later.
    Idle,
    /// The split is read to its end.
    End,
}

/// Reads one split of a [`SplitSource`] from a position.
///
/// `position` must name exactly the records returned so far: a reader opened at it
/// returns the next record after them, and nothing before (the source replays from
/// it after a failure, so anything else loses or repeats records).
pub trait SplitReader<T, S> {
    /// The next record, [`Read::Idle`] when none is available yet, or [`Read::End`];
    /// an error fails the job (it restarts from its last checkpoint).
    fn next(&mut self) -> Result<Read<T>, BoxError>;
    /// The position after the last record returned.
    fn position(&self) -> S;
}

/// A replayable source of records `T`, read as splits (Flink's FLIP-27 `Source`).
///
/// A fresh job asks every worker for its [`SplitSource::initial_splits`]. At every
/// checkpoint each worker stores the position of each of its splits and the largest
/// event time read from it in the source's operator state; a restored job gives each
/// worker its share of the stored splits (at any parallelism) and opens them at their
/// positions. Watermarks follow the [`WatermarkStrategy`] given to [`Job::source`]
/// per split, the source's watermark being the least over its unfinished splits.
///
/// What an implementation must guarantee: the same split opened at the same position
/// gives the same records in the same order (replay), and initial splits of all
/// workers together cover the input once.
///
/// [`WatermarkStrategy`]: crate::WatermarkStrategy
/// [`Job::source`]: crate::Job::source
pub trait SplitSource<T>: 'static {
    /// A split and where it is read up to.
    type Split: Data;

    /// The splits worker `index` of `workers` reads in a fresh job.
    fn initial_splits(
        &mut self,
        index: usize,
        workers: usize,
    ) -> Result<Vec<Self::Split>, BoxError>;

    /// Opens `split` at its position.
    fn open_split(
        &mut self,
        split: Self::Split,
    ) -> Result<Box<dyn SplitReader<T, Self::Split>>, BoxError>;

    /// How a split is stored; the default suits any serde type
    /// ([`SplitPosition::Custom`]).
    fn store_split(split: &Self::Split) -> Result<SplitPosition, BoxError>
    where
        Self: Sized,
    {
        Ok(SplitPosition::Custom(postcard::to_stdvec(split)?))
    }

    /// Reads a stored split back; the inverse of [`SplitSource::store_split`].
    fn load_split(stored: SplitPosition) -> Result<Self::Split, BoxError>
    where
        Self: Sized,
    {
        match stored {
            SplitPosition::Custom(bytes) => Ok(postcard::from_bytes(&bytes)?),
            other => Err(format!("this source cannot resume from {other:?}").into()),
        }
    }
}

/// A reader whose positions are stored as [`SplitPosition`]s.
pub(crate) trait StoredReader<T> {
    fn next(&mut self) -> Result<Read<T>, BoxError>;
    fn position(&self) -> Result<SplitPosition, BoxError>;
}

/// A [`SplitReader`] of a [`SplitSource`] with the source's way of storing positions.
struct Stored<T, S> {
    reader: Box<dyn SplitReader<T, S>>,
    store: fn(&S) -> Result<SplitPosition, BoxError>,
}

impl<T, S> StoredReader<T> for Stored<T, S> {
    fn next(&mut self) -> Result<Read<T>, BoxError> {
        self.reader.next()
    }
    fn position(&self) -> Result<SplitPosition, BoxError> {
        (self.store)(&self.reader.position())
    }
}

/// How a source finds its splits: `None` for a fresh job (make this worker's
/// initial splits), or the stored splits handed to this worker on restore.
pub(crate) type SplitFactory<T> =
    Box<dyn FnOnce(Option<Vec<SplitState>>) -> Result<Vec<Box<dyn StoredReader<T>>>, BoxError>>;

/// The split factory of `source` on worker `index` of `workers`.
pub(crate) fn split_factory<T: 'static, S: SplitSource<T>>(
    mut source: S,
    index: usize,
    workers: usize,
) -> SplitFactory<T> {
    Box::new(move |stored| {
        let splits = match stored {
            None => source.initial_splits(index, workers)?,
            Some(stored) => stored
                .into_iter()
                .map(|s| S::load_split(s.position))
                .collect::<Result<_, _>>()?,
        };
        splits
            .into_iter()
            .map(|split| {
                Ok(Box::new(Stored {
                    reader: source.open_split(split)?,
                    store: S::store_split,
                }) as Box<dyn StoredReader<T>>)
            })
            .collect()
    })
}

//! Connectors: file sources (lines, CSV, JSON lines) split across workers, a Nexmark
//! event source, and the transactional file sink, all built on the public connector
//! traits ([`crate::SplitSource`], [`crate::TransactionalSink`]). (The vec sources and
//! stdout sink are in `stream`.)
//!
//! **File splits.** A file of `n` bytes is cut into one byte range per worker; a worker
//! reads the lines that *start* in its range (it skips the partial line at its start,
//! and finishes the line running past its end), so every line is read exactly once at
//! any number of workers, as Hadoop and Flink's file sources split text. The read
//! position of each split (`path`, range, next byte offset) is kept in the worker's
//! split state of the source ([`crate::SOURCE_SPLITS_STATE`]), stored at every checkpoint.
//!
//! **Nexmark.** [`Job::source_nexmark`] generates the benchmark's Person, Auction and
//! Bid events with the `nexmark` crate; worker `i` of `W` generates events `i`, `i+W`,
//! ..., so the job sees the same events at any parallelism. Event times are the
//! events' `date_time` from a fixed base time, so runs repeat.

mod error;
mod file_sink;
mod file_source;
#[cfg(feature = "nexmark")]
mod nexmark;

pub use error::FileError;
pub use file_sink::{FileSink, SinkTransaction};
pub use file_source::{FileFormat, FilePosition};

//! Client of Flowstate's queryable state over HTTP.
//!
//! A job started with a query address (`run --query-addr 127.0.0.1:8081`, or a
//! `flowstate-query` server in code) answers look-ups of the states it marked
//! queryable, from every process, for every key. This crate holds the wire types
//! ([`wire`]) and, with feature `http` (default), [`QueryClient`]: typed point and
//! batch look-ups on `reqwest`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flowstate_query_client::ClientError> {
//! use flowstate_query_client::{Consistency, QueryClient};
//! let client = QueryClient::new("127.0.0.1:8081")?;
//! let count: Option<u64> = client
//!     .get::<_, u64>("counts", &"alice", Consistency::Live)
//!     .await?
//!     .map(|v| v.value);
//! # Ok(()) }
//! ```

#[cfg(feature = "http")]
mod client;
pub mod wire;

#[cfg(feature = "http")]
pub use client::{ClientError, QueryClient, Typed, TypedBatch};
pub use wire::{
    BatchEntry, BatchRequest, BatchResponse, Consistency, ErrorBody, QueryableState,
    StatesResponse, ValueResponse,
};

//! Queryable state over HTTP: a running job answers look-ups of the keyed states it
//! marked queryable (`descriptor.queryable("name")`).
//!
//! Start a [`QueryServer`] on the same [`QueryHub`] the job's
//! [`flowstate_runtime::JobConfig::queries`] holds (the job harness does both for
//! `run --query-addr`). What it does, where Flink's queryable state (deprecated in
//! FLINK-32559) and Kafka Streams' interactive queries fell short:
//!
//! - **Every process answers for every key**: it computes the key's group and
//!   forwards a `live` look-up to the process owning it (one hop, marked; a second
//!   hop is refused with 503). Clients need no proxy and no routing of their own.
//! - **Consistency is chosen per request and stated in every answer**: `live` is
//!   read by the owning worker on its own thread between two record batches (never
//!   concurrently with a write; the answer names the newest checkpoint that worker
//!   has snapshotted and its watermark); `committed` reads the last completed
//!   checkpoint's files (the answer names its id) and never touches the workers.
//! - **Restarts answer 503 with `Retry-After`**, never a value of a half-restored
//!   job: the hub knows when the job's attempt ended and when every worker of the
//!   next one has restored.
//! - **Processing stays first**: workers answer at most a slice of look-ups per
//!   activation ([`QueryHub::with_slice`]); the queue per worker is bounded (503
//!   beyond it).
//! - **Bad requests get a 4xx with a JSON body** (`flowstate_query_client::ErrorBody`:
//!   a stable code and a message) and never reach the job.
//!
//! The API and its JSON are specified in `docs/formats.md` ("Queryable state over
//! HTTP"); `flowstate-query-client` is the typed client.

mod committed;
mod error;
mod gateway;
mod routes;
mod server;

pub use error::ServerError;
pub use flowstate_runtime::query::QueryHub;
pub use server::{QueryServer, ServerConfig};

//! Queryable state, the job's side: which keyed states a job exposes, and the
//! owning worker answering look-ups of them between record batches.
//!
//! A state is exposed only when its descriptor says so
//! (`ValueStateDescriptor::new("count").queryable("counts")`); the queryable name is
//! unique in the job. With a [`QueryHub`] in [`crate::JobConfig::queries`], every
//! keyed operator instance registers its queryable states and a mailbox with the
//! process's hub when it starts. A `live` look-up goes to the mailbox of the worker
//! that owns the key's group; that worker answers it **on its own thread between
//! record batches** (at most [`QueryHub::with_slice`] look-ups per activation), so
//! a read never runs concurrently with a write and the heap backend is never read
//! from another thread (Flink's queryable state did exactly that). A `committed`
//! look-up reads the last completed checkpoint instead (see the `flowstate-query`
//! crate); the hub tells it which one.
//!
//! The hub lives longer than one attempt of the job: when the job fails and
//! restarts (or has not finished restoring), [`QueryHub::status`] says so and
//! look-ups fail with [`QueryError::Unavailable`] rather than read state that is
//! being replaced. The HTTP server on top is the `flowstate-query` crate.

mod hub;
mod worker;

pub use flowstate_query_client::wire::QueryableState;
pub(crate) use hub::follow_completions;
pub use hub::{Committed, HubStatus, QueryHub, Route};
pub(crate) use worker::{LiveQueries, QueryRegistry};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A look-up for the owning worker: keys of one state, all in its key groups.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LiveLookup {
    /// The queryable name.
    pub state: String,
    /// The keys, as JSON (what `serde_json` makes of the key type).
    pub keys: Vec<Value>,
    /// Map state: only this user key's value (else the whole map).
    #[serde(default)]
    pub user_key: Option<Value>,
    /// Namespaced state: the namespace (window), as JSON.
    #[serde(default)]
    pub namespace: Option<Value>,
}

/// The owning worker's answer: one value per key (`None`: nothing stored).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LiveAnswer {
    /// Per key, in order.
    pub values: Vec<Option<Value>>,
    /// The newest checkpoint this operator instance has snapshotted: the answer is
    /// that checkpoint's state plus the records processed since (0: none yet).
    pub checkpoint: u64,
    /// The instance's event-time watermark (`i64::MIN` before the first).
    pub watermark: i64,
    /// The attempt of the job that answered (restarts count up).
    pub attempt: u64,
}

/// Why a look-up got no answer. Each maps to one HTTP status in the server.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// No queryable state of that name (404).
    #[error("no queryable state `{0}`")]
    UnknownState(String),
    /// The key (or user key, or namespace) does not decode as the state's type (400).
    #[error("{0}")]
    BadKey(String),
    /// The request is malformed otherwise (400).
    #[error("{0}")]
    BadRequest(String),
    /// The job is restarting, restoring or overloaded: ask again later (503).
    #[error("{0}")]
    Unavailable(String),
    /// Reading the state failed (500).
    #[error("reading state failed: {0}")]
    State(String),
}

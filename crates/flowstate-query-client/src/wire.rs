//! The wire types of queryable state over HTTP: what the server (`flowstate-query`)
//! sends and this crate's client reads. The JSON is specified in `docs/formats.md`
//! ("Queryable state over HTTP"); keys and values are what `serde_json` makes of the
//! Rust values.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Header marking a request one process forwarded to the key's owner (the owner then
/// answers itself or fails; it never forwards again).
pub const FORWARDED_HEADER: &str = "x-flowstate-forwarded";

/// Most keys one batch look-up may name.
pub const MAX_BATCH_KEYS: usize = 10_000;

/// Largest request body the server reads, in bytes.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// Which state a look-up reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// The owning worker's current state, read between two record batches (never
    /// while a record is processed).
    #[default]
    Live,
    /// The state as of the last completed checkpoint (read from its files).
    Committed,
}

impl Consistency {
    /// The name used in URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Live => "live",
            Consistency::Committed => "committed",
        }
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "live" => Ok(Consistency::Live),
            "committed" => Ok(Consistency::Committed),
            _ => Err(format!(
                "consistency must be `live` or `committed`, not `{s}`"
            )),
        }
    }
}

/// A queryable state as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryableState {
    /// The queryable name (what clients ask for).
    pub name: String,
    /// The state's own name in the operator.
    pub state: String,
    /// The operator's uid (`None`: the job does not checkpoint).
    pub operator: Option<String>,
    /// `value`, `list`, `map`, `reducing`; `window-reduce` (the window's reduced
    /// value) or `window-contents` (its records) for window state.
    pub kind: String,
    /// The key's type.
    pub key_type: String,
    /// The key's schema (`docs/formats.md`, "State schemas").
    pub key_schema: Option<Value>,
    /// The value's (list element's, map value's) type.
    pub value_type: String,
    /// The value's schema.
    pub value_schema: Option<Value>,
    /// Map state: the user key's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key_type: Option<String>,
    /// Map state: the user key's schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key_schema: Option<Value>,
    /// Window state: the namespace's type (`TimeWindow`); look-ups name one window
    /// (`{"start": ms, "end": ms}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_type: Option<String>,
    /// The state's time to live in ms, if it has one (expired values read as
    /// nothing stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<i64>,
    /// Key groups of the job.
    pub max_parallelism: u32,
    /// Operator instances (the job's parallelism).
    pub parallelism: u32,
}

/// `GET /v1/states`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatesResponse {
    /// The process that answered.
    pub process: usize,
    /// Processes of the job.
    pub processes: usize,
    /// The job's attempt in that process (restarts count up).
    pub attempt: u64,
    /// The queryable states, by name.
    pub states: Vec<QueryableState>,
}

/// `GET /v1/states/{name}/keys/{key}`: one key's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueResponse {
    /// The queryable name.
    pub state: String,
    /// The key, as the key type reads it.
    pub key: Value,
    /// Its key group.
    pub key_group: u32,
    /// What was read.
    pub consistency: Consistency,
    /// `committed`: the checkpoint read. `live`: the newest checkpoint the owning
    /// instance has snapshotted; the value is that checkpoint's plus the records
    /// processed since (0: none yet).
    pub checkpoint: u64,
    /// `live`: the owning instance's event-time watermark, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// The process that read it.
    pub process: usize,
    /// The value (a list's elements, a map as an object or `[key, value]` pairs, or
    /// one map value when a user key was given).
    pub value: Value,
}

/// `POST /v1/states/{name}/batch`: many keys of one state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The keys (at most [`MAX_BATCH_KEYS`]).
    pub keys: Vec<Value>,
    /// What to read.
    #[serde(default)]
    pub consistency: Consistency,
    /// Map state: only this user key of each key's map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<Value>,
    /// Window state: the window to read, for every key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Value>,
}

/// One key of a batch answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchEntry {
    /// The key, as the key type reads it.
    pub key: Value,
    /// Its value; `null` when nothing is stored.
    pub value: Option<Value>,
}

/// The answer to a batch look-up, keys in request order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// The queryable name.
    pub state: String,
    /// What was read.
    pub consistency: Consistency,
    /// `committed`: the checkpoint read; `live`: the oldest checkpoint any answering
    /// instance had snapshotted (see [`ValueResponse::checkpoint`]).
    pub checkpoint: u64,
    /// Per key, in request order.
    pub values: Vec<BatchEntry>,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code: `no_value`, `unknown_state` and `not_found` (404), `bad_key`,
    /// `bad_request` (400), `method_not_allowed` (405), `batch_too_large` (413),
    /// `unsupported_media_type` (415), `unavailable` (503, with `Retry-After`),
    /// `state` (500).
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// The checkpoint the answer reflects, when one was read (`no_value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
}

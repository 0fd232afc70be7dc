//! The HTTP API (`docs/formats.md`, "Queryable state over HTTP"): list the states,
//! look up one key or a batch, `live` or `committed`. A `live` look-up of a key
//! another process owns is forwarded there once (marked, so it is never forwarded
//! again); every failure is a JSON error with a stable code.
//!
//! Beside the handlers: `forward.rs` (a look-up's hop to the process owning its key).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flowstate_query_client::wire::{FORWARDED_HEADER, MAX_BATCH_KEYS, MAX_BODY_BYTES};
use flowstate_query_client::{
    BatchEntry, BatchRequest, BatchResponse, Consistency, QueryableState, StatesResponse,
    ValueResponse,
};
use flowstate_runtime::query::{LiveAnswer, LiveLookup, QueryError, QueryHub, Route};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::committed::CommittedReader;
use crate::error::ApiError;

mod forward;

pub(crate) use forward::relay;
use forward::{forward_get, peer_url, refuse_second_hop, unreachable_peer};

/// What every handler shares.
pub(crate) struct App {
    pub(crate) hub: QueryHub,
    pub(crate) peers: Vec<String>,
    pub(crate) timeout: Duration,
    pub(crate) committed: CommittedReader,
    pub(crate) http: reqwest::Client,
    /// Requests being answered; beyond [`MAX_IN_FLIGHT`] a request gets 503 at once.
    pub(crate) in_flight: Arc<Semaphore>,
    /// `committed` reads running on blocking threads; beyond [`COMMITTED_READERS`] a
    /// read gets 503 at once.
    pub(crate) committed_reads: Arc<Semaphore>,
}

/// Requests answered at once. Every waiting request holds a socket (a file
/// descriptor of the job's process, which RocksDB needs too): a client that keeps
/// asking faster than answers come gets 503s, never the job's descriptors.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// `committed` reads at once. The first read of a new checkpoint opens it (a native
/// RocksDB checkpoint is converted, which takes a while) and the others wait for it
/// on blocking threads: without a bound a burst of reads would be a burst of threads.
pub(crate) const COMMITTED_READERS: usize = 2;

type Shared = Arc<App>;

/// Tries of a `committed` read before it answers 503, and the wait between them.
const COMMITTED_TRIES: usize = 20;
const COMMITTED_RETRY: Duration = Duration::from_millis(25);

type Answer = Result<Response, ApiError>;

/// The routes.
pub(crate) fn router(app: Shared) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/states", get(states))
        .route("/v1/states/{name}", get(state))
        .route("/v1/states/{name}/keys/{key}", get(key))
        .route("/v1/states/{name}/batch", post(batch))
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "look-ups are GET, batches POST: see /v1/states",
            )
        })
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint: see /v1/states",
            )
        })
        .layer(axum::middleware::from_fn_with_state(app.clone(), shed))
        .with_state(app)
}

/// Answers 503 at once when [`MAX_IN_FLIGHT`] requests are being answered already.
async fn shed(State(app): State<Shared>, request: Request, next: Next) -> Response {
    match app.in_flight.clone().try_acquire_owned() {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(_) => ApiError::unavailable(format!(
            "busy: {MAX_IN_FLIGHT} requests are being answered; ask again"
        ))
        .into_response(),
    }
}

/// A key (or user key) from a URL: JSON, or else the text itself as a string.
fn lenient_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn path_error(e: PathRejection) -> ApiError {
    ApiError::bad_request(format!("bad path: {e}"))
}

async fn health(State(app): State<Shared>) -> Response {
    let s = app.hub.status();
    let status = if s.running {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = (status, axum::Json(s)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::error::RETRY_AFTER_SECS),
        );
    }
    r
}

async fn states(State(app): State<Shared>) -> Answer {
    let states = app.hub.states()?;
    let s = app.hub.status();
    Ok(axum::Json(StatesResponse {
        process: s.process,
        processes: s.processes,
        attempt: s.attempt,
        states,
    })
    .into_response())
}

async fn state(State(app): State<Shared>, name: Result<Path<String>, PathRejection>) -> Answer {
    let Path(name) = name.map_err(path_error)?;
    Ok(axum::Json(&*app.hub.state(&name)?).into_response())
}

/// Checks what a look-up names against what the state is: a user key only for map
/// state, a window exactly for window state.
fn check_lookup(
    info: &QueryableState,
    user_key: Option<&Value>,
    namespace: Option<&Value>,
) -> Result<(), ApiError> {
    let name = &info.name;
    if user_key.is_some() && info.kind != "map" {
        return Err(ApiError::bad_request(format!(
            "`{name}` is a {} state: `user_key` is for map states",
            info.kind
        )));
    }
    match (&info.namespace_type, namespace) {
        (Some(t), None) => Err(ApiError::bad_request(format!(
            "`{name}` is a window's state: name the window with `namespace` (a {t}, \
             {{\"start\": ms, \"end\": ms}})"
        ))),
        (None, Some(_)) => Err(ApiError::bad_request(format!(
            "`{name}` is not a window's state: it takes no `namespace`"
        ))),
        _ => Ok(()),
    }
}

/// The query parameters of a point look-up.
struct KeyParams {
    consistency: Consistency,
    user_key: Option<Value>,
    namespace: Option<Value>,
}

fn key_params(params: HashMap<String, String>) -> Result<KeyParams, ApiError> {
    let mut p = KeyParams {
        consistency: Consistency::Live,
        user_key: None,
        namespace: None,
    };
    for (k, v) in params {
        match k.as_str() {
            "consistency" => p.consistency = v.parse().map_err(ApiError::bad_request)?,
            "user_key" => p.user_key = Some(lenient_json(&v)),
            "namespace" => {
                p.namespace =
                    Some(serde_json::from_str(&v).map_err(|e| {
                        ApiError::bad_request(format!("`namespace` is not JSON: {e}"))
                    })?)
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}` (known: consistency, user_key, namespace)"
                )));
            }
        }
    }
    Ok(p)
}

async fn key(
    State(app): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Answer {
    let Path((name, key_text)) = path.map_err(path_error)?;
    let Query(params) = params.map_err(|e| ApiError::bad_request(format!("bad query: {e}")))?;
    let p = key_params(params)?;
    let info = app.hub.state(&name)?;
    check_lookup(&info, p.user_key.as_ref(), p.namespace.as_ref())?;
    let route = app.hub.route(&name, &lenient_json(&key_text))?;
    let here = app.hub.status().process;
    let (checkpoint, watermark, value) = match p.consistency {
        Consistency::Committed => {
            let (id, mut values) = read_committed(
                &app,
                info,
                vec![(route.key.clone(), route.key_group)],
                p.user_key,
                p.namespace,
            )
            .await?;
            (id, None, values.pop().flatten())
        }
        Consistency::Live => {
            if route.process != here {
                return forward_get(&app, &route, &name, &key_text, &p, &headers).await;
            }
            let lookup = LiveLookup {
                state: name.clone(),
                keys: vec![route.key.clone()],
                user_key: p.user_key,
                namespace: p.namespace,
            };
            let rx = submit(&app, route.worker, lookup)?;
            let mut a = answer_of(&app, route.worker, rx).await?;
            let watermark = Some(a.watermark).filter(|w| *w != i64::MIN);
            (a.checkpoint, watermark, a.values.pop().flatten())
        }
    };
    let Some(value) = value else {
        return Err(ApiError::no_value(&name, &route.key, checkpoint));
    };
    Ok(axum::Json(ValueResponse {
        state: name,
        key: route.key,
        key_group: route.key_group,
        consistency: p.consistency,
        checkpoint,
        watermark,
        process: here,
        value,
    })
    .into_response())
}

/// The reply channel of a look-up handed to a worker.
type Waiting = tokio::sync::oneshot::Receiver<Result<LiveAnswer, QueryError>>;

/// Hands a look-up of keys one worker of this process owns to it (at once, without
/// waiting).
fn submit(app: &App, worker: u32, lookup: LiveLookup) -> Result<Waiting, ApiError> {
    Ok(app.hub.live(worker, lookup)?)
}

/// Waits for a worker's answer.
async fn answer_of(app: &App, worker: u32, rx: Waiting) -> Result<LiveAnswer, ApiError> {
    match tokio::time::timeout(app.timeout, rx).await {
        Ok(Ok(answer)) => Ok(answer?),
        // The attempt ended while the look-up waited: its worker is gone.
        Ok(Err(_)) => Err(ApiError::unavailable(
            "the job stopped or restarted while the look-up waited",
        )),
        Err(_) => Err(ApiError::unavailable(format!(
            "worker {worker} did not answer within {} ms",
            app.timeout.as_millis()
        ))),
    }
}

/// Reads keys of the last completed checkpoint (on a blocking thread).
async fn read_committed(
    app: &Shared,
    info: Arc<QueryableState>,
    keys: Vec<(Value, u32)>,
    user_key: Option<Value>,
    namespace: Option<Value>,
) -> Result<(u64, Vec<Option<Value>>), ApiError> {
    let ttl = app.hub.ttl(&info.name)?;
    let permit = app
        .committed_reads
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::unavailable(format!(
                "busy: {COMMITTED_READERS} committed reads are running; ask again"
            ))
        })?;
    let app = app.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<_, QueryError> {
        let _permit = permit;
        let mut tries = 0;
        loop {
            let Some(at) = app.hub.committed()? else {
                return Err(QueryError::Unavailable(
                    "no checkpoint has completed yet".into(),
                ));
            };
            let read = app.committed.read(
                &at,
                &info,
                ttl.as_ref(),
                &keys,
                user_key.as_ref(),
                namespace.as_ref(),
            );
            match read {
                // Retention deletes a checkpoint as the next one completes, a moment
                // before the workers (who tell the hub) hear of the new one.
                Err(QueryError::Unavailable(_)) if tries < COMMITTED_TRIES => {
                    tries += 1;
                    std::thread::sleep(COMMITTED_RETRY);
                }
                other => return other,
            }
        }
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("the read was interrupted: {e}")))?;
    Ok(read?)
}

async fn batch(
    State(app): State<Shared>,
    name: Result<Path<String>, PathRejection>,
    request: Request,
) -> Answer {
    let Path(name) = name.map_err(path_error)?;
    let headers = request.headers().clone();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a batch look-up is a JSON body: send `Content-Type: application/json`",
        ));
    }
    let body = read_body(request.into_body()).await?;
    let req: BatchRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a batch request: {e}")))?;
    if req.keys.len() > MAX_BATCH_KEYS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{} keys in one batch; at most {MAX_BATCH_KEYS}",
                req.keys.len()
            ),
        ));
    }
    let info = app.hub.state(&name)?;
    check_lookup(&info, req.user_key.as_ref(), req.namespace.as_ref())?;
    let routes = req
        .keys
        .iter()
        .map(|k| app.hub.route(&name, k))
        .collect::<Result<Vec<_>, _>>()?;
    let keys: Vec<Value> = routes.iter().map(|r| r.key.clone()).collect();
    let (checkpoint, values) = match req.consistency {
        Consistency::Committed => {
            let keys = routes
                .iter()
                .map(|r| (r.key.clone(), r.key_group))
                .collect();
            read_committed(&app, info, keys, req.user_key, req.namespace).await?
        }
        Consistency::Live => {
            live_batch(&app, &name, &routes, req.user_key, req.namespace, &headers).await?
        }
    };
    Ok(axum::Json(BatchResponse {
        state: name,
        consistency: req.consistency,
        checkpoint,
        values: keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| BatchEntry { key, value })
            .collect(),
    })
    .into_response())
}

/// Bodies up to this size are read to their end even when too large, so the client
/// gets its 413 rather than a connection reset mid-upload.
const DRAIN_BYTES: usize = 4 * MAX_BODY_BYTES;

/// A request body of at most [`MAX_BODY_BYTES`] (413 beyond).
pub(crate) async fn read_body(body: Body) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let (mut kept, mut total) = (Vec::new(), 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("the body broke off: {e}")))?;
        total = total.saturating_add(chunk.len());
        if total <= MAX_BODY_BYTES {
            kept.extend_from_slice(&chunk);
        } else if total > DRAIN_BYTES {
            break;
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    Ok(kept)
}

/// A live batch: keys grouped by owning worker here and by owning process
/// elsewhere (one forwarded batch per process), answered concurrently.
async fn live_batch(
    app: &App,
    name: &str,
    routes: &[Route],
    user_key: Option<Value>,
    namespace: Option<Value>,
    headers: &HeaderMap,
) -> Result<(u64, Vec<Option<Value>>), ApiError> {
    let here = app.hub.status().process;
    let mut local: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut remote: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, r) in routes.iter().enumerate() {
        if r.process == here {
            local.entry(r.worker).or_default().push(i);
        } else {
            remote.entry(r.process).or_default().push(i);
        }
    }
    if let Some(p) = remote.keys().next() {
        refuse_second_hop(headers, *p)?;
    }
    let mut values: Vec<Option<Value>> = vec![None; routes.len()];
    let mut checkpoint = u64::MAX;
    // Every worker gets its part at once; then the answers are collected.
    let mut waiting = Vec::new();
    for (worker, idx) in &local {
        let keys = idx.iter().map(|i| routes[*i].key.clone()).collect();
        waiting.push((
            *worker,
            idx,
            submit(
                app,
                *worker,
                LiveLookup {
                    state: name.to_string(),
                    keys,
                    user_key: user_key.clone(),
                    namespace: namespace.clone(),
                },
            )?,
        ));
    }
    let mut forwarded = Vec::new();
    for (process, idx) in &remote {
        let body = BatchRequest {
            keys: idx.iter().map(|i| routes[*i].key.clone()).collect(),
            consistency: Consistency::Live,
            user_key: user_key.clone(),
            namespace: namespace.clone(),
        };
        let url = peer_url(app, *process, &["v1", "states", name, "batch"])?;
        let send = app
            .http
            .post(url)
            .header(FORWARDED_HEADER, "1")
            .json(&body)
            .send();
        forwarded.push((*process, idx, tokio::spawn(send)));
    }
    for (worker, idx, rx) in waiting {
        let a = answer_of(app, worker, rx).await?;
        checkpoint = checkpoint.min(a.checkpoint);
        for (i, v) in idx.iter().zip(a.values) {
            values[*i] = v;
        }
    }
    for (process, idx, send) in forwarded {
        let response = send
            .await
            .map_err(|e| ApiError::unavailable(format!("forwarding to process {process}: {e}")))?
            .map_err(|e| unreachable_peer(process, &e))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: flowstate_query_client::ErrorBody = response
                .json()
                .await
                .map_err(|e| unreachable_peer(process, &e))?;
            return Err(ApiError {
                status: StatusCode::from_u16(status.as_u16())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body,
            });
        }
        let part: BatchResponse = response
            .json()
            .await
            .map_err(|e| unreachable_peer(process, &e))?;
        if part.values.len() != idx.len() {
            return Err(ApiError::unavailable(format!(
                "process {process} answered {} keys for {}",
                part.values.len(),
                idx.len()
            )));
        }
        checkpoint = checkpoint.min(part.checkpoint);
        for (i, e) in idx.iter().zip(part.values) {
            values[*i] = e.value;
        }
    }
    Ok((
        if checkpoint == u64::MAX {
            0
        } else {
            checkpoint
        },
        values,
    ))
}

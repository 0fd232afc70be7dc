//! The supervisor's gateway: one stable address in front of a multi-process job's
//! processes, which come and go with restarts. Requests pass through unchanged; when
//! no process answers, the job is restarting: 503 with `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;

use crate::error::ApiError;
use crate::routes::{read_body, relay};

struct Gateway {
    peers: Vec<String>,
    next: AtomicUsize,
    http: reqwest::Client,
}

/// Every path and method, passed on to the processes at `peers`.
pub(crate) fn router(peers: Vec<String>, http: reqwest::Client) -> Router {
    Router::new()
        .fallback(pass_on)
        .with_state(Arc::new(Gateway {
            peers,
            next: AtomicUsize::new(0),
            http,
        }))
}

async fn pass_on(State(g): State<Arc<Gateway>>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body).await?;
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|e| ApiError::bad_request(format!("method: {e}")))?;
    let n = g.peers.len();
    let first = g.next.fetch_add(1, Ordering::Relaxed);
    let mut last_error = String::from("the job has no processes");
    for i in 0..n {
        let peer = &g.peers[(first + i) % n];
        let mut req = g
            .http
            .request(method.clone(), format!("http://{peer}{path}"))
            .body(body.clone());
        if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
            req = req.header(header::CONTENT_TYPE, ct.as_bytes());
        }
        match req.send().await {
            Ok(response) => return relay(response).await,
            Err(e) => last_error = format!("{peer}: {e}"),
        }
    }
    Err(ApiError::unavailable(format!(
        "no process of the job answers (it is probably restarting): {last_error}"
    )))
}

//! Forwarding a `live` look-up to the process that owns its key: the peer's URL, the
//! one hop (marked, so that a second is refused while the processes disagree on who
//! owns the key), and the peer's answer passed on as it is.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use flowstate_query_client::wire::FORWARDED_HEADER;
use flowstate_runtime::query::Route;

use super::{Answer, App, KeyParams};
use crate::error::ApiError;

/// The URL of `segments` on process `process`.
pub(super) fn peer_url(
    app: &App,
    process: usize,
    segments: &[&str],
) -> Result<reqwest::Url, ApiError> {
    let peer = app.peers.get(process).ok_or_else(|| {
        ApiError::unavailable(format!("the address of process {process} is not known"))
    })?;
    let mut url = reqwest::Url::parse(&format!("http://{peer}/"))
        .map_err(|e| ApiError::unavailable(format!("process {process} at `{peer}`: {e}")))?;
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    Ok(url)
}

/// Passes a peer's answer on as it is (status, JSON body, `Retry-After`).
pub(crate) async fn relay(response: reqwest::Response) -> Answer {
    let status = StatusCode::from_u16(response.status().as_u16())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let retry = response.headers().get(header::RETRY_AFTER).cloned();
    let body = response.bytes().await.map_err(|e| {
        ApiError::unavailable(format!("the owning process's answer broke off: {e}"))
    })?;
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(v) = retry {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Ok(r)
}

/// The 503 of a look-up whose owning process did not answer.
pub(super) fn unreachable_peer(process: usize, e: &reqwest::Error) -> ApiError {
    ApiError::unavailable(format!(
        "process {process}, which owns the key, does not answer ({e})"
    ))
}

/// A look-up already forwarded once must be answered where it arrived.
pub(super) fn refuse_second_hop(headers: &HeaderMap, process: usize) -> Result<(), ApiError> {
    if headers.contains_key(FORWARDED_HEADER) {
        return Err(ApiError::unavailable(format!(
            "the processes disagree on who owns the key (process {process} per this one); \
             the job is probably rescaling"
        )));
    }
    Ok(())
}

/// Forwards a single-key `live` look-up (`p`) of state `name` to the process that
/// `route` names, once, and passes its answer on.
pub(super) async fn forward_get(
    app: &App,
    route: &Route,
    name: &str,
    key_text: &str,
    p: &KeyParams,
    headers: &HeaderMap,
) -> Answer {
    refuse_second_hop(headers, route.process)?;
    let mut url = peer_url(
        app,
        route.process,
        &["v1", "states", name, "keys", key_text],
    )?;
    url.query_pairs_mut()
        .append_pair("consistency", p.consistency.as_str());
    if let Some(uk) = &p.user_key {
        url.query_pairs_mut()
            .append_pair("user_key", &uk.to_string());
    }
    let response = app
        .http
        .get(url)
        .header(FORWARDED_HEADER, "1")
        .send()
        .await
        .map_err(|e| unreachable_peer(route.process, &e))?;
    relay(response).await
}

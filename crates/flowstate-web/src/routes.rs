//! The HTTP routes: `/` (the history page), `/api/checkpoints` (the same as JSON) and
//! `/metrics` (Prometheus text format). Storage reads block, so they run on the
//! runtime's blocking threads, never on its async ones.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::CheckpointLocation;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::history::{HistoryView, load};
use crate::page::{JobInfo, render};

/// Where the history is read from.
#[derive(Clone)]
pub enum HistorySource {
    /// The job checkpoints nowhere: an empty history.
    None,
    /// Storage opened by the caller.
    Storage(Arc<dyn CheckpointStorage>),
    /// A checkpoint directory opened (read-only, never created) at the first request
    /// that finds it: a job's server starts before its directory is claimed.
    Location(CheckpointLocation),
}

/// What the routes serve.
#[derive(Clone)]
pub struct WebState {
    /// The checkpoint history's source.
    pub source: HistorySource,
    /// The job, as the page names it.
    pub job: JobInfo,
    /// This process's metrics (`None`: `/metrics` answers 404).
    pub metrics: Option<PrometheusHandle>,
}

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

/// The state with the storage it opened, once opened.
struct Served {
    state: WebState,
    opened: Mutex<Option<Arc<dyn CheckpointStorage>>>,
}

impl Served {
    /// The storage to read, opening a location at the first call that finds it.
    fn storage(&self) -> Result<Option<Arc<dyn CheckpointStorage>>, flowstate_core::StorageError> {
        match &self.state.source {
            HistorySource::None => Ok(None),
            HistorySource::Storage(s) => Ok(Some(s.clone())),
            HistorySource::Location(l) => {
                let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(s) = opened.as_ref() {
                    return Ok(Some(s.clone()));
                }
                let s: Arc<dyn CheckpointStorage> = Arc::new(l.open_existing()?);
                *opened = Some(s.clone());
                Ok(Some(s))
            }
        }
    }
}

async fn view(served: &Arc<Served>) -> Result<HistoryView, Response> {
    let served = served.clone();
    let read = tokio::task::spawn_blocking(move || match served.storage() {
        Ok(None) | Err(flowstate_core::StorageError::NotFound { .. }) => Ok(HistoryView::default()),
        Ok(Some(s)) => load(s.as_ref()),
        Err(e) => Err(e),
    });
    match read.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("reading the checkpoint directory: {e}"),
        )
            .into_response()),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()),
    }
}

/// The routes over `state`.
pub fn router(state: WebState) -> Router {
    let state = Arc::new(Served {
        state,
        opened: Mutex::new(None),
    });
    let page = state.clone();
    let api = state.clone();
    let metrics = state;
    Router::new()
        .route(
            "/",
            get(move || async move {
                match view(&page).await {
                    Ok(v) => (
                        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                        render(&page.state.job, &v),
                    )
                        .into_response(),
                    Err(r) => r,
                }
            }),
        )
        .route(
            "/api/checkpoints",
            get(move || async move {
                match view(&api).await {
                    Ok(v) => axum::Json(v).into_response(),
                    Err(r) => r,
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                match &metrics.state.metrics {
                    Some(h) => (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        h.render(),
                    )
                        .into_response(),
                    None => (StatusCode::NOT_FOUND, "no metrics in this process").into_response(),
                }
            }),
        )
}

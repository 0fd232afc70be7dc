//! Errors: [`ServerError`] for starting the server, and the error answers every
//! request can get (one status and one stable code per kind of failure).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowstate_query_client::ErrorBody;
use flowstate_runtime::query::QueryError;

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server's threads could not be started.
    #[error("starting the query server's threads")]
    Runtime(#[source] std::io::Error),
}

/// Seconds a client is told to wait before asking again (503).
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) body: ErrorBody,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: code.into(),
                message: message.into(),
                checkpoint: None,
            },
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    /// Nothing is stored for the key (as of `checkpoint`).
    pub(crate) fn no_value(state: &str, key: &serde_json::Value, checkpoint: u64) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "no_value",
            format!("`{state}` holds nothing for key {key}"),
        );
        e.body.checkpoint = Some(checkpoint);
        e
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let (status, code) = match &e {
            QueryError::UnknownState(_) => (StatusCode::NOT_FOUND, "unknown_state"),
            QueryError::BadKey(_) => (StatusCode::BAD_REQUEST, "bad_key"),
            QueryError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            QueryError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            QueryError::State(_) => (StatusCode::INTERNAL_SERVER_ERROR, "state"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        r
    }
}

//! [`QueryClient`]: look-ups over HTTP with `reqwest`, typed or as JSON.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::wire::{
    BatchRequest, BatchResponse, Consistency, ErrorBody, StatesResponse, ValueResponse,
};

/// What a look-up can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not `host:port` or an `http://` URL.
    #[error("bad address `{addr}`: {why}")]
    Address {
        /// The address given.
        addr: String,
        /// Why it does not parse.
        why: String,
    },
    /// The request did not get an answer (connection refused, timeout, ...).
    #[error("request to {url} failed")]
    Http {
        /// The URL asked.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{status}: {}", body.message)]
    Server {
        /// The HTTP status.
        status: u16,
        /// Its body.
        body: ErrorBody,
    },
    /// A key or value did not convert between JSON and the Rust type.
    #[error("{what}")]
    Json {
        /// What was converted.
        what: String,
        /// The conversion error.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// Whether asking again later may succeed (503: the job restarts, or the
    /// connection failed).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Server { status, .. } => *status == 503,
            ClientError::Http { .. } => true,
            _ => false,
        }
    }
}

/// A typed value and the checkpoint it reflects.
#[derive(Clone, Debug, PartialEq)]
pub struct Typed<V> {
    /// The value.
    pub value: V,
    /// See [`ValueResponse::checkpoint`].
    pub checkpoint: u64,
    /// See [`ValueResponse::consistency`].
    pub consistency: Consistency,
}

/// A typed batch answer, values in key order (`None`: nothing stored).
#[derive(Clone, Debug, PartialEq)]
pub struct TypedBatch<V> {
    /// Per key, in request order.
    pub values: Vec<Option<V>>,
    /// See [`BatchResponse::checkpoint`].
    pub checkpoint: u64,
}

/// A client of one process of a job (any process answers for every key).
#[derive(Clone, Debug)]
pub struct QueryClient {
    base: Url,
    http: reqwest::Client,
}

fn json_err(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> ClientError {
    let what = what.into();
    move |source| ClientError::Json { what, source }
}

impl QueryClient {
    /// A client of the server at `addr` (`127.0.0.1:8081` or `http://host:port`),
    /// with a 30 s timeout per request.
    pub fn new(addr: &str) -> Result<Self, ClientError> {
        let with_scheme = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let bad = |why: String| ClientError::Address {
            addr: addr.to_string(),
            why,
        };
        let base = Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(bad("no host".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| ClientError::Http {
                url: base.to_string(),
                source,
            })?;
        Ok(QueryClient { base, http })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<Option<T>, ClientError> {
        let http = |source| ClientError::Http {
            url: url.to_string(),
            source,
        };
        let response = request.send().await.map_err(http)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(json_err(format!("the answer of {url}")));
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
            error: "http".into(),
            message: String::from_utf8_lossy(&bytes).into_owned(),
            checkpoint: None,
        });
        if status == StatusCode::NOT_FOUND && body.error == "no_value" {
            return Ok(None);
        }
        Err(ClientError::Server {
            status: status.as_u16(),
            body,
        })
    }

    /// The queryable states of the job.
    pub async fn states(&self) -> Result<StatesResponse, ClientError> {
        let url = self.url(&["v1", "states"]);
        let got = self.send(self.http.get(url.clone()), &url).await?;
        got.ok_or_else(|| ClientError::Server {
            status: 404,
            body: ErrorBody {
                error: "no_value".into(),
                message: "no states".into(),
                checkpoint: None,
            },
        })
    }

    /// One key's value as JSON (`None`: nothing stored for it); `user_key` reads one
    /// entry of a map state.
    pub async fn lookup(
        &self,
        state: &str,
        key: &Value,
        consistency: Consistency,
        user_key: Option<&Value>,
    ) -> Result<Option<ValueResponse>, ClientError> {
        self.ask(state, key, consistency, user_key, None).await
    }

    /// One key's contents of one window (`{"start": ms, "end": ms}`) of a window
    /// state, as JSON.
    pub async fn lookup_window(
        &self,
        state: &str,
        key: &Value,
        window: &Value,
        consistency: Consistency,
    ) -> Result<Option<ValueResponse>, ClientError> {
        self.ask(state, key, consistency, None, Some(window)).await
    }

    async fn ask(
        &self,
        state: &str,
        key: &Value,
        consistency: Consistency,
        user_key: Option<&Value>,
        namespace: Option<&Value>,
    ) -> Result<Option<ValueResponse>, ClientError> {
        let mut url = self.url(&["v1", "states", state, "keys", &key.to_string()]);
        url.query_pairs_mut()
            .append_pair("consistency", consistency.as_str());
        if let Some(uk) = user_key {
            url.query_pairs_mut()
                .append_pair("user_key", &uk.to_string());
        }
        if let Some(ns) = namespace {
            url.query_pairs_mut()
                .append_pair("namespace", &ns.to_string());
        }
        self.send(self.http.get(url.clone()), &url).await
    }

    /// One key's value, typed.
    pub async fn get<K: Serialize + ?Sized, V: DeserializeOwned>(
        &self,
        state: &str,
        key: &K,
        consistency: Consistency,
    ) -> Result<Option<Typed<V>>, ClientError> {
        let key = serde_json::to_value(key).map_err(json_err("the key"))?;
        let Some(r) = self.lookup(state, &key, consistency, None).await? else {
            return Ok(None);
        };
        Ok(Some(Typed {
            value: serde_json::from_value(r.value)
                .map_err(json_err(format!("the value of {key} in `{state}`")))?,
            checkpoint: r.checkpoint,
            consistency: r.consistency,
        }))
    }

    /// Many keys of one state in one request, as JSON.
    pub async fn batch_json(
        &self,
        state: &str,
        request: &BatchRequest,
    ) -> Result<BatchResponse, ClientError> {
        let url = self.url(&["v1", "states", state, "batch"]);
        let got = self
            .send(self.http.post(url.clone()).json(request), &url)
            .await?;
        got.ok_or_else(|| ClientError::Server {
            status: 404,
            body: ErrorBody {
                error: "no_value".into(),
                message: "empty answer".into(),
                checkpoint: None,
            },
        })
    }

    /// Many keys of one state in one request, typed.
    pub async fn batch<K: Serialize, V: DeserializeOwned>(
        &self,
        state: &str,
        keys: &[K],
        consistency: Consistency,
    ) -> Result<TypedBatch<V>, ClientError> {
        let keys = keys
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(json_err("the keys"))?;
        let request = BatchRequest {
            keys,
            consistency,
            ..BatchRequest::default()
        };
        let r = self.batch_json(state, &request).await?;
        let values = r
            .values
            .into_iter()
            .map(|e| {
                e.value
                    .map(|v| {
                        serde_json::from_value(v)
                            .map_err(json_err(format!("the value of {} in `{state}`", e.key)))
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TypedBatch {
            values,
            checkpoint: r.checkpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_and_without_a_scheme() {
        for (addr, base) in [
            ("127.0.0.1:8081", "http://127.0.0.1:8081/"),
            ("http://localhost:9/", "http://localhost:9/"),
        ] {
            let c = QueryClient::new(addr).map_err(|e| e.to_string());
            assert_eq!(c.map(|c| c.base.to_string()), Ok(base.to_string()));
        }
        for bad in ["", "http://", "::::"] {
            assert!(
                matches!(QueryClient::new(bad), Err(ClientError::Address { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_are_one_escaped_path_segment() -> Result<(), ClientError> {
        let c = QueryClient::new("127.0.0.1:1")?;
        let url = c.url(&["v1", "states", "a/b", "keys", "[1,\"x y\"]"]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/v1/states/a%2Fb/keys/[1,%22x%20y%22]"
        );
        Ok(())
    }
}

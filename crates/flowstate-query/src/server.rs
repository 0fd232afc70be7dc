//! [`QueryServer`]: the HTTP server of one process, on its own threads (a small
//! tokio runtime), never on the job's workers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use flowstate_runtime::query::QueryHub;
use tokio::sync::{Semaphore, oneshot};

use crate::committed::CommittedReader;
use crate::error::ServerError;
use crate::routes::{App, router};

/// How a process serves queries.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen (`127.0.0.1:8081`; port 0 picks a free one).
    pub addr: String,
    /// The query address of every process of the job, in process order (empty for
    /// a single process): a look-up of a key another process owns goes there.
    pub peers: Vec<String>,
    /// How long a look-up waits for the owning worker or process.
    pub timeout: Duration,
    /// More routes served beside the query API (the job's web page and metrics);
    /// they must not overlap `/v1/...`.
    pub routes: Option<axum::Router>,
}

impl ServerConfig {
    /// Listens on `addr`, a single-process job, a 10 s timeout.
    pub fn new(addr: impl Into<String>) -> Self {
        ServerConfig {
            addr: addr.into(),
            peers: Vec::new(),
            timeout: Duration::from_secs(10),
            routes: None,
        }
    }

    /// Serves `routes` too (see [`ServerConfig::routes`]).
    pub fn with_routes(mut self, routes: axum::Router) -> Self {
        self.routes = Some(routes);
        self
    }

    /// The query addresses of all the job's processes.
    pub fn peers(mut self, peers: Vec<String>) -> Self {
        self.peers = peers;
        self
    }
}

/// The HTTP client a server forwards with.
fn client(config: &ServerConfig) -> Result<reqwest::Client, ServerError> {
    reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(|e| ServerError::Runtime(std::io::Error::other(e)))
}

/// A running query server; dropping it stops it.
pub struct QueryServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for QueryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl QueryServer {
    /// Binds `config.addr` and serves the states of `hub` (the hub given to the
    /// job's [`flowstate_runtime::JobConfig::queries`]) until dropped.
    pub fn start(hub: QueryHub, config: ServerConfig) -> Result<Self, ServerError> {
        let http = client(&config)?;
        let app = Arc::new(App {
            hub,
            peers: config.peers,
            timeout: config.timeout,
            committed: CommittedReader::default(),
            http,
            in_flight: Arc::new(Semaphore::new(crate::routes::MAX_IN_FLIGHT)),
            committed_reads: Arc::new(Semaphore::new(crate::routes::COMMITTED_READERS)),
        });
        // The last reference to the app (its open checkpoint holds a storage with
        // its own runtime) is dropped outside the server's async context.
        let mut routes = router(app.clone());
        if let Some(extra) = config.routes {
            routes = routes.merge(extra);
        }
        Self::serve(&config.addr, routes, Some(app))
    }

    /// A gateway on `config.addr` for a job of several processes run by one
    /// supervisor: every request goes on unchanged to one of `config.peers` (the
    /// processes' own query addresses, taken in turn; the next one when one does not
    /// answer), and while none answers (the job restarts) it answers 503 with
    /// `Retry-After`. Its address stays the same across the job's restarts.
    pub fn gateway(config: ServerConfig) -> Result<Self, ServerError> {
        let http = client(&config)?;
        Self::serve(
            &config.addr,
            crate::gateway::router(config.peers, http),
            None,
        )
    }

    fn serve(
        addr: &str,
        router: axum::Router,
        keep: Option<Arc<App>>,
    ) -> Result<Self, ServerError> {
        // One thread: look-ups are short (the owning worker does the reading), and
        // every extra thread that wakes up takes a core from the job's workers.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flowstate-query")
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let bind = |source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("flowstate-query".into())
            .spawn(move || {
                let served = runtime.block_on(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await
                });
                if let Err(e) = served {
                    tracing::error!("the query server stopped: {e}");
                }
                drop(keep);
            })
            .map_err(ServerError::Runtime)?;
        tracing::info!("serving queryable state on http://{addr}");
        Ok(QueryServer {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for QueryServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

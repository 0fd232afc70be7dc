//! [`WebServer`]: the web routes on an address of their own, on one thread of a small
//! tokio runtime (for `flowstate ui`, when no job runs).

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The runtime could not start.
    #[error("starting the web server: {0}")]
    Runtime(#[source] std::io::Error),
    /// The address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running web server; dropping it stops it.
#[derive(Debug)]
pub struct WebServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    /// Serves `router` on `addr` (port 0: a free one) until dropped.
    pub fn start(addr: &str, router: axum::Router) -> Result<Self, WebError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flowstate-web")
            .enable_all()
            .build()
            .map_err(WebError::Runtime)?;
        let bind = |source| WebError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("flowstate-web".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let served = axum::serve(listener, router)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::warn!("web server: {e}");
                    }
                });
            })
            .map_err(WebError::Runtime)?;
        Ok(WebServer {
            addr: local,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

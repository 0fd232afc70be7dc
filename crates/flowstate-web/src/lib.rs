//! Flowstate's web page and metrics.
//!
//! - [`router`]: `/` is a page with the job, its operators and parallelism, charts of
//!   checkpoint durations and sizes over time, and the checkpoint history (id, time,
//!   duration, alignment, in-flight bytes, sizes, per operator), read from the
//!   checkpoint storage ([`history::load`]: the `_history` file merged with every
//!   `_metadata` present); `/api/checkpoints` is the same as JSON; `/metrics` is the
//!   process's metrics in Prometheus's text format. A running job serves these on its
//!   query server (`--query-addr`).
//! - [`WebServer`]: the same routes on their own, for a stopped job
//!   (`flowstate ui CHECKPOINT_DIR`).
//! - [`install_metrics`]: the process's Prometheus recorder, behind the `metrics`
//!   facade the runtime records through.

pub mod history;
pub mod page;
mod routes;
mod server;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub use routes::{HistorySource, WebState, router};
pub use server::{WebError, WebServer};

/// Installs a Prometheus recorder as the process's `metrics` recorder (once; later
/// calls return the same handle). `None` when another recorder was installed first.
pub fn install_metrics() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!("metrics are off: {e}");
                None
            }
        })
        .clone()
}

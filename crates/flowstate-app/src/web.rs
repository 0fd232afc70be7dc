//! The job's web page and metrics in the harness: the routes a running job serves on
//! its `--query-addr` (the checkpoint history page, `/api/checkpoints`, `/metrics`),
//! and `ui`, the same page for a stopped job's checkpoint directory.

use flowstate_storage::CheckpointLocation;
use flowstate_web::page::JobInfo;
use flowstate_web::{HistorySource, WebServer, WebState, install_metrics, router};

use crate::AppError;
use crate::cli::RunOptions;

/// This binary's name (the job's, on the page).
fn job_name(given: &str) -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| given.to_string())
}

/// The routes of a running job: its page (reloading every 5 s) and this process's
/// metrics (the recorder is installed here, before the job starts).
pub(crate) fn job_routes(opts: &RunOptions) -> axum::Router {
    router(WebState {
        source: HistorySource::Location(opts.checkpoint_dir.clone()),
        job: JobInfo {
            name: job_name("job"),
            status: "running".into(),
            location: opts.checkpoint_dir.to_string(),
            refresh_secs: Some(5),
        },
        metrics: install_metrics(),
    })
}

/// `ui DIR`: serves the checkpoint history of `dir` until the process is stopped.
pub(crate) fn ui(name: &str, dir: &CheckpointLocation, addr: &str) -> Result<(), AppError> {
    // Read-only: a missing directory is an error, never created.
    let storage = dir
        .open_existing()
        .map_err(|e| AppError::Failed(format!("opening {dir}: {e}")))?;
    let server = WebServer::start(
        addr,
        router(WebState {
            source: HistorySource::Storage(std::sync::Arc::new(storage)),
            job: JobInfo {
                name: job_name(name),
                status: "stopped".into(),
                location: dir.to_string(),
                refresh_secs: None,
            },
            metrics: None,
        }),
    )
    .map_err(|e| AppError::Failed(e.to_string()))?;
    println!(
        "serving the checkpoint history of {dir} at http://{}/",
        server.addr()
    );
    server.wait();
    Ok(())
}

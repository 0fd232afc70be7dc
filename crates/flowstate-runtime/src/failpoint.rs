//! Crash points for tests: `FLOWSTATE_FAILPOINT=<name>[:<n>]` makes the process kill
//! itself with SIGKILL the `n`-th time (default first) it reaches point `<name>`, so a
//! crash test can stop a job at exact moments (mid-checkpoint, between the files of a
//! snapshot and its `_metadata`) as well as at random ones. Unset, a point costs one
//! relaxed atomic load.
//!
//! Points: `snapshot-written` (a task's files are written, not yet acknowledged),
//! `before-metadata`, `after-metadata` (before the sinks commit), `sink-commit`
//! (between two renames of a sink's commit).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    name: String,
    nth: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("FLOWSTATE_FAILPOINT").ok()?;
            let (name, nth) = match spec.split_once(':') {
                Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed {
                name,
                nth,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Reaches point `name`: kills the process if it is the armed point's chosen hit.
pub(crate) fn hit(name: &str) {
    let Some(a) = armed() else {
        return;
    };
    if a.name != name || a.hits.fetch_add(1, Ordering::Relaxed) + 1 != a.nth {
        return;
    }
    eprintln!("failpoint {name}: killing process {}", std::process::id());
    // A real SIGKILL, as an operator's `kill -9` would deliver: no unwinding, no
    // destructors, buffered writes lost.
    let _ = std::process::Command::new("kill")
        .args(["-9", &std::process::id().to_string()])
        .status();
    std::process::abort();
}

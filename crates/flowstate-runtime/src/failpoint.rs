//! Crash points for tests: `FLOWSTATE_FAILPOINT=<name>[:<n>]` makes the process kill
//! itself with SIGKILL the `n`-th time (default first) it reaches point `<name>`, so a
//! crash test can stop a job at exact moments (mid-checkpoint, between the files of a
//! snapshot and its `_metadata`) as well as at random ones. Unset, a point costs one
//! relaxed atomic load.
//!
//! Points: `snapshot-written` (a task's files are written, not yet acknowledged),
//! `before-metadata`, `after-metadata` (before the sinks commit), `sink-commit`
//! (between two renames of a sink's commit).
//!
//! Error points: `FLOWSTATE_ERRORPOINT=<name>:<every>[:<until>]` makes every
//! `every`-th hit of point `<name>` (among the first `until`, default all) fail with an
//! error instead, for tests of how a job handles faults it survives. Points:
//! `sync-snapshot` (the synchronous part of a keyed operator's snapshot, as when
//! RocksDB cannot write its checkpoint on a full disk).

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

struct ErrorPoint {
    name: String,
    every: u64,
    until: u64,
    hits: AtomicU64,
}

fn error_point() -> Option<&'static ErrorPoint> {
    static ARMED: OnceLock<Option<ErrorPoint>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("FLOWSTATE_ERRORPOINT").ok()?;
            let mut parts = spec.split(':');
            let name = parts.next()?.to_string();
            let every = parts.next().and_then(|k| k.parse().ok()).unwrap_or(1);
            let until = parts
                .next()
                .and_then(|k| k.parse().ok())
                .unwrap_or(u64::MAX);
            Some(ErrorPoint {
                name,
                every: every.max(1),
                until,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Reaches error point `name`: fails if it is one of the armed point's chosen hits.
pub(crate) fn error(name: &str) -> Result<(), String> {
    let Some(p) = error_point() else {
        return Ok(());
    };
    if p.name != name {
        return Ok(());
    }
    let n = p.hits.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= p.until && n.is_multiple_of(p.every) {
        return Err(format!("error point {name} (hit {n})"));
    }
    Ok(())
}

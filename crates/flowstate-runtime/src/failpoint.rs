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

/// An armed point: `<name>[:<a>[:<b>]]` read once from an environment variable.
struct Armed {
    name: String,
    a: Option<u64>,
    b: Option<u64>,
    hits: AtomicU64,
}

impl Armed {
    fn from_env(var: &str) -> Option<Armed> {
        let spec = std::env::var(var).ok()?;
        let mut parts = spec.split(':');
        let name = parts.next()?.to_string();
        let mut number = || parts.next().and_then(|k| k.parse().ok());
        let (a, b) = (number(), number());
        Some(Armed {
            name,
            a,
            b,
            hits: AtomicU64::new(0),
        })
    }

    /// Counts a hit of point `name`: its number (from 1) when it is this point.
    fn count(&self, name: &str) -> Option<u64> {
        (self.name == name).then(|| self.hits.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// Reaches point `name`: kills the process if it is the armed point's chosen hit.
pub(crate) fn hit(name: &str) {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    let Some(a) = ARMED.get_or_init(|| Armed::from_env("FLOWSTATE_FAILPOINT")) else {
        return;
    };
    if a.count(name) != Some(a.a.unwrap_or(1)) {
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

/// Reaches error point `name`: fails if it is one of the armed point's chosen hits
/// (every `a`-th, default each, among the first `b`, default all).
pub(crate) fn error(name: &str) -> Result<(), String> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    let Some(p) = ARMED.get_or_init(|| Armed::from_env("FLOWSTATE_ERRORPOINT")) else {
        return Ok(());
    };
    let Some(n) = p.count(name) else {
        return Ok(());
    };
    if n <= p.b.unwrap_or(u64::MAX) && n.is_multiple_of(p.a.unwrap_or(1).max(1)) {
        return Err(format!("error point {name} (hit {n})"));
    }
    Ok(())
}

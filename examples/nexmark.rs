//! `nexmark`: one Nexmark query (q0-q2, q4, q5, q7, q8, q11; see `flowstate-nexmark`)
//! over the Nexmark event generator, run by the job harness, its result rows written
//! exactly once as text lines into `--out` (the file sink commits with each
//! checkpoint). Nexmark's own setting is a checkpoint every 10 s:
//!
//! ```text
//! nexmark run --query q5 --events 10000000 --out /tmp/nx/out \
//!     --checkpoint-dir /tmp/nx/ck --checkpoint-interval 10000
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use flowstate_nexmark::{Params, Query, Row, build};

/// The job's own options (after the harness's: `nexmark run --help`).
#[derive(Args, Clone)]
struct Options {
    /// The query: q0, q1, q2, q4, q5, q7, q8 or q11.
    #[arg(long)]
    query: Query,
    /// Events in all (people, auctions and bids in Nexmark's 1:3:46 mix).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Directory the file sink commits the result rows into.
    #[arg(long)]
    out: PathBuf,
    /// Sleep 1 ms every this many events per worker (0: never), to watch or kill it.
    #[arg(long, default_value_t = 0)]
    throttle_every: u64,
}

fn main() -> ExitCode {
    flowstate_app::main("nexmark", |job, o: &Options| {
        let params = Params {
            throttle_every: o.throttle_every,
            ..Params::new(o.events)
        };
        build(job, o.query, &params)
            .write_text_files(&o.out, Row::to_string)
            .uid("nexmark-out")
    })
}

//! The Nexmark benchmark's queries on Flowstate, and a reference model of each.
//!
//! [`build`] wires query `qN` onto the Nexmark source ([`Job::source_nexmark`]) and
//! returns its result rows; [`expected`] computes the same rows with plain maps over
//! the same events, so a job's output can be checked exactly. The queries follow the
//! Nexmark suite as Flink runs it (`nexmark-flink`'s SQL), with these choices where a
//! streaming job must choose:
//!
//! | query | what it answers | state |
//! |---|---|---|
//! | q0 | every bid, passed through | none |
//! | q1 | every bid, its price in euros (`0.908 * price`) | none |
//! | q2 | bids on auctions whose id is a multiple of 123 | none |
//! | q4 | per category, the average closing price of its auctions (closing price: the highest bid between the auction's start and its expiry), updated as each auction closes | a keyed join of auctions and bids closed by an event-time timer at expiry; a running (sum, count) per category |
//! | q5 | per sliding window (10 s, every 2 s), the auctions with the most bids | a sliding-window count per auction, then the maximum per window |
//! | q7 | per tumbling 10 s window, the bids with the highest price | a partial maximum per window and key part, then the maximum per window |
//! | q8 | people who opened an auction in the tumbling 10 s window they registered in | a windowed join of people and auctions by person id |
//! | q11 | per bidder, the bids of each session (gap 10 s) | a session-window count per bidder |
//!
//! q4's result is an updating one (as in Flink): each closed auction emits its
//! category's new (sum, count); the model gives the last of them.
//!
//! [`Job::source_nexmark`]: flowstate_runtime::Job::source_nexmark

mod model;
mod queries;
mod row;

use std::fmt;
use std::str::FromStr;

pub use model::{events, expected};
pub use queries::build;
pub use row::Row;

/// Nexmark's window length: q5's and q7's and q8's windows, q11's session gap (ms).
pub const WINDOW_MS: i64 = 10_000;
/// q5's slide (ms).
pub const SLIDE_MS: i64 = 2_000;
/// q2 keeps bids on auctions whose id is a multiple of this.
pub const Q2_MODULUS: u64 = 123;
/// q1's dollar-to-euro rate.
pub const EURO_RATE: f64 = 0.908;
/// The event time of the first event of every run (ms since the epoch), fixed so that
/// runs and the model see the same events.
pub const BASE_TIME_MS: u64 = 1_600_000_000_000;

/// A Nexmark time (ms since the epoch, unsigned in the generator) as the runtime's
/// event time.
pub(crate) fn event_time(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A Nexmark query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Query {
    /// Pass-through.
    Q0,
    /// Currency conversion.
    Q1,
    /// Selection.
    Q2,
    /// Average price per category.
    Q4,
    /// Hot items.
    Q5,
    /// Highest bid.
    Q7,
    /// Monitor new users.
    Q8,
    /// User sessions.
    Q11,
}

impl Query {
    /// Every query, in order.
    pub const ALL: [Query; 8] = [
        Query::Q0,
        Query::Q1,
        Query::Q2,
        Query::Q4,
        Query::Q5,
        Query::Q7,
        Query::Q8,
        Query::Q11,
    ];

    /// Flink's published throughput for the query, in events per second per core
    /// (Flink 1.13 on the nexmark repository's README; none published for q0-q2).
    pub fn flink_per_core(self) -> Option<u64> {
        match self {
            Query::Q4 => Some(34_000),
            Query::Q5 => Some(22_000),
            Query::Q7 => Some(12_000),
            Query::Q8 => Some(146_000),
            Query::Q11 => Some(40_000),
            Query::Q0 | Query::Q1 | Query::Q2 => None,
        }
    }

    /// Whether the query keeps state (q0-q2 do not).
    pub fn is_stateful(self) -> bool {
        !matches!(self, Query::Q0 | Query::Q1 | Query::Q2)
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match self {
            Query::Q0 => 0,
            Query::Q1 => 1,
            Query::Q2 => 2,
            Query::Q4 => 4,
            Query::Q5 => 5,
            Query::Q7 => 7,
            Query::Q8 => 8,
            Query::Q11 => 11,
        };
        write!(f, "q{n}")
    }
}

/// A query name that is not one of [`Query::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown Nexmark query `{0}` (known: q0, q1, q2, q4, q5, q7, q8, q11)")]
pub struct UnknownQuery(String);

impl FromStr for Query {
    type Err = UnknownQuery;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Query::ALL
            .into_iter()
            .find(|q| q.to_string().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownQuery(s.to_string()))
    }
}

/// What a run reads: how many events, and how its source behaves.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Events in all (people, auctions and bids in Nexmark's 1:3:46 mix).
    pub events: u64,
    /// The source's watermark trails its largest event time by this much (ms).
    pub max_delay_ms: i64,
    /// Sleep 1 ms every this many events per worker (0: never), to watch or kill a
    /// run; the answer does not change.
    pub throttle_every: u64,
}

impl Params {
    /// `events` events, a 1 s watermark delay, no throttling.
    pub fn new(events: u64) -> Self {
        Params {
            events,
            max_delay_ms: 1_000,
            throttle_every: 0,
        }
    }
}

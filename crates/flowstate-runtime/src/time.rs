//! The timely timestamp of every record: a pair (watermark epoch, checkpoint interval)
//! in the product partial order.
//!
//! The *epoch* is the watermark clock of [`crate::keyed`]: epoch `e` carries records
//! sent after watermark `e - 1`. The *interval* is the checkpoint clock: a record in
//! interval `c` belongs to checkpoint `c` (its effects are in that checkpoint's state);
//! a source moves to interval `c + 1` when checkpoint `c` is triggered. Because the
//! order is the product order, an operator's input frontier (an antichain) yields both
//! clocks at once: its watermark is the least epoch in the frontier, and every
//! checkpoint below the least interval in the frontier has all its records delivered.
//! One source far ahead in checkpoints never advances another's watermark, and a source
//! far ahead in event time never completes another's checkpoint, which a lexicographic
//! pair would do.

use serde::{Deserialize, Serialize};
use timely::order::{PartialOrder, TotalOrder};
use timely::progress::timestamp::{PathSummary, Refines, Timestamp};

/// A record's timely timestamp: (watermark epoch, checkpoint interval), ordered
/// componentwise. (`timely::order::Product` has this order but cannot be the timestamp
/// of a top-level dataflow.)
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub(crate) struct Time {
    /// Watermark epoch.
    pub(crate) outer: u64,
    /// Checkpoint interval.
    pub(crate) inner: u64,
}

impl PartialOrder for Time {
    fn less_equal(&self, other: &Self) -> bool {
        self.outer <= other.outer && self.inner <= other.inner
    }
}

/// Timely's input handles ask for a total order so that one capability describes
/// what an input may still send. Ours only ever advance both coordinates together
/// (never to an incomparable time), which keeps that true of every input; operators
/// read frontiers as antichains through [`frontier_clocks`].
impl TotalOrder for Time {}

impl Timestamp for Time {
    type Summary = TimeSummary;
    fn minimum() -> Self {
        Time::default()
    }
}

impl Refines<()> for Time {
    fn to_inner(_: ()) -> Self {
        Time::default()
    }
    fn to_outer(self) {}
    fn summarize(_: TimeSummary) {}
}

/// How a dataflow path advances a [`Time`] (ours never do: no loops).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TimeSummary {
    outer: u64,
    inner: u64,
}

impl PartialOrder for TimeSummary {
    fn less_equal(&self, other: &Self) -> bool {
        self.outer <= other.outer && self.inner <= other.inner
    }
}

impl PathSummary<Time> for TimeSummary {
    fn results_in(&self, t: &Time) -> Option<Time> {
        Some(Time {
            outer: t.outer.checked_add(self.outer)?,
            inner: t.inner.checked_add(self.inner)?,
        })
    }
    fn followed_by(&self, other: &Self) -> Option<Self> {
        Some(TimeSummary {
            outer: self.outer.checked_add(other.outer)?,
            inner: self.inner.checked_add(other.inner)?,
        })
    }
}

/// Builds a timestamp.
pub(crate) fn time(epoch: u64, interval: u64) -> Time {
    Time {
        outer: epoch,
        inner: interval,
    }
}

/// The time of a received message: the componentwise least element of its stamp
/// (our messages carry one); unstamped messages claim no time and count as the start.
pub(crate) fn stamp_time(stamp: &[Time]) -> Time {
    let outer = stamp.iter().map(|t| t.outer).min().unwrap_or(0);
    let inner = stamp.iter().map(|t| t.inner).min().unwrap_or(0);
    time(outer, inner)
}

/// The two clocks of a frontier: (least epoch, least interval), or `None` once the
/// input has ended.
pub(crate) fn frontier_clocks(frontier: &[Time]) -> Option<(u64, u64)> {
    let epoch = frontier.iter().map(|t| t.outer).min()?;
    let interval = frontier.iter().map(|t| t.inner).min()?;
    Some((epoch, interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_are_componentwise_minima() {
        assert_eq!(frontier_clocks(&[]), None);
        assert_eq!(frontier_clocks(&[time(5, 2), time(100, 1)]), Some((5, 1)));
        assert_eq!(frontier_clocks(&[time(7, 3)]), Some((7, 3)));
    }
}

//! The timely timestamp of every record: (watermark epoch, (checkpoint interval,
//! pacing round)), the epoch and the pair in the product partial order.
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
//!
//! The *round* refines the interval for flow control ([`crate::flow`]): a source
//! counts its steps in it, so a probe at the end of the dataflow tells it how many of
//! its batches are still in flight. Rounds order after intervals (a lexicographic
//! pair), so everything that reads the checkpoint clock reads [`Time::interval`] and
//! never notices them.

use serde::{Deserialize, Serialize};
use timely::order::{PartialOrder, TotalOrder};
use timely::progress::timestamp::{PathSummary, Refines, Timestamp};

/// A record's timely timestamp: (watermark epoch, (checkpoint interval, round)), the
/// epoch and the (interval, round) pair ordered componentwise. (`timely::order::Product`
/// has this order but cannot be the timestamp of a top-level dataflow.)
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub(crate) struct Time {
    /// Watermark epoch.
    pub(crate) outer: u64,
    /// Checkpoint interval and pacing round, ordered lexicographically.
    pub(crate) inner: (u64, u64),
}

impl Time {
    /// The checkpoint interval.
    pub(crate) fn interval(&self) -> u64 {
        self.inner.0
    }
    /// The pacing round.
    pub(crate) fn round(&self) -> u64 {
        self.inner.1
    }
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

/// How a dataflow path advances a [`Time`]: ours never do (no loops), so the only
/// summary is the identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TimeSummary;

impl PartialOrder for TimeSummary {
    fn less_equal(&self, _: &Self) -> bool {
        true
    }
}

impl PathSummary<Time> for TimeSummary {
    fn results_in(&self, t: &Time) -> Option<Time> {
        Some(*t)
    }
    fn followed_by(&self, _: &Self) -> Option<Self> {
        Some(TimeSummary)
    }
}

/// Builds a timestamp at the start (round 0) of `interval`.
pub(crate) fn time(epoch: u64, interval: u64) -> Time {
    time_at(epoch, (interval, 0))
}

/// The epoch of records sent after `watermark` (the inverse of [`watermark_before`]).
pub(crate) fn epoch_after(watermark: i64) -> u64 {
    u64::try_from(watermark.saturating_add(1)).unwrap_or(0)
}

/// The watermark an epoch stands for (epochs are unsigned; epoch 0 is "none yet").
pub(crate) fn watermark_before(epoch: u64) -> i64 {
    if epoch == 0 {
        i64::MIN
    } else {
        i64::try_from(epoch - 1).unwrap_or(i64::MAX)
    }
}

/// Builds a timestamp from an epoch and an (interval, round) pair.
pub(crate) fn time_at(epoch: u64, inner: (u64, u64)) -> Time {
    Time {
        outer: epoch,
        inner,
    }
}

/// The time of a received message: the componentwise least element of its stamp
/// (our messages carry one); unstamped messages claim no time and count as the start.
pub(crate) fn stamp_time(stamp: &[Time]) -> Time {
    let outer = stamp.iter().map(|t| t.outer).min().unwrap_or(0);
    let inner = stamp.iter().map(|t| t.inner).min().unwrap_or((0, 0));
    time_at(outer, inner)
}

/// The least time of a frontier, coordinate by coordinate (least epoch, least
/// (interval, round)): what an operator may still receive at the earliest, so where
/// it holds its capability. `None` once the input has ended.
pub(crate) fn frontier_least(frontier: &[Time]) -> Option<Time> {
    let epoch = frontier.iter().map(|t| t.outer).min()?;
    let inner = frontier.iter().map(|t| t.inner).min()?;
    Some(time_at(epoch, inner))
}

/// The two clocks of a frontier: (least epoch, least interval), or `None` once the
/// input has ended.
pub(crate) fn frontier_clocks(frontier: &[Time]) -> Option<(u64, u64)> {
    frontier_least(frontier).map(|t| (t.outer, t.interval()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_are_componentwise_minima() {
        assert_eq!(frontier_clocks(&[]), None);
        assert_eq!(frontier_clocks(&[time(5, 2), time(100, 1)]), Some((5, 1)));
        assert_eq!(frontier_clocks(&[time(7, 3)]), Some((7, 3)));
        let least = frontier_least(&[time_at(5, (2, 9)), time_at(100, (2, 4))]);
        assert_eq!(least, Some(time_at(5, (2, 4))));
    }

    #[test]
    fn rounds_order_within_an_interval() {
        // A later round of the same interval is later; any round of a later interval
        // is later than every round of an earlier one.
        assert!(time_at(0, (1, 5)).less_equal(&time_at(0, (1, 6))));
        assert!(time_at(0, (1, 900)).less_equal(&time_at(0, (2, 0))));
        assert!(!time_at(0, (2, 0)).less_equal(&time_at(0, (1, 900))));
        // The epoch still orders apart: incomparable across the two coordinates.
        assert!(!time_at(1, (1, 0)).less_equal(&time_at(0, (2, 0))));
        assert!(!time_at(0, (2, 0)).less_equal(&time_at(1, (1, 0))));
        assert_eq!(time_at(3, (4, 5)).interval(), 4);
        assert_eq!(time_at(3, (4, 5)).round(), 5);
    }
}

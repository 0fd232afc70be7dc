//! Flow control: sources paced by the dataflow's progress, so memory stays bounded
//! when sources are faster than the operators behind them, and a checkpoint's cut
//! never waits behind an unbounded backlog.
//!
//! Timely has no flow control of its own; its authors' recommendation is to watch a
//! probe at the dataflow's output and let an input run at most so far ahead of it.
//! That is what this does, with a clock of its own so that it works whatever the job
//! does with event time and checkpoints: every source step is a *round* (the second
//! half of [`Time`]'s (interval, round) pair), each source sends at most one batch
//! per round, and the probe watches the output of every keyed operator (where records
//! wait: the exchange to the worker owning their key group). A source whose round is
//! more than [`FlowControl::rounds_in_flight`] past the probe's least round waits,
//! its worker processing what is queued meanwhile. Progress tracking is timely's, so
//! the bound holds across threads and processes alike.
//!
//! A source steps its round whether it sent anything or not (an idle source must not
//! hold the others back) and never while it waits, so the sources of a job move in
//! step within the bound and the slowest operator sets the pace. What is not paced:
//! records a keyed operator holds back for event-time order (their epoch waits for
//! the other sources' watermarks, and holding rounds for them could deadlock), so a
//! job whose sources are far apart in event time still buffers that gap.

use std::cell::Cell;
use std::time::{Duration, Instant};

use timely::dataflow::operators::probe::Handle as ProbeHandle;

use crate::time::Time;

/// How far sources may run ahead of the operators behind them
/// ([`crate::JobConfig::flow_control`]): each source of a worker may have
/// `rounds_in_flight` batches in flight, a batch being at most [`FlowControl::BATCH`]
/// records and about `round_bytes` bytes (records measured in their postcard
/// encoding, sampled). The defaults bound a source to about 1 MiB in flight.
///
/// ```
/// use flowstate_runtime::{FlowControl, JobConfig};
/// let config = JobConfig::default().flow_control(FlowControl::rounds(4));
/// assert_eq!(config.flow_control.rounds_in_flight, Some(4));
/// assert_eq!(FlowControl::off().rounds_in_flight, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowControl {
    /// Source batches (rounds) each source of a worker may have in flight, sent and
    /// not yet through every keyed operator. `None`: sources are not paced.
    pub rounds_in_flight: Option<u64>,
    /// About how many bytes of records a source sends per round (at least one
    /// record, at most [`FlowControl::BATCH`]).
    pub round_bytes: usize,
}

impl FlowControl {
    /// Records a source sends per round at most.
    pub const BATCH: usize = 1024;

    /// The default bound: 16 rounds, enough for a worker to keep its operators busy
    /// while the probe catches up, small enough that a checkpoint's cut waits for
    /// little.
    pub const DEFAULT_ROUNDS: u64 = 16;

    /// The default bytes per round: 64 KiB (with 16 rounds, 1 MiB per source).
    pub const DEFAULT_ROUND_BYTES: usize = 64 * 1024;

    /// Sources may have `rounds` batches in flight (at least 1), of the default size.
    pub fn rounds(rounds: u64) -> Self {
        FlowControl {
            rounds_in_flight: Some(rounds.max(1)),
            round_bytes: Self::DEFAULT_ROUND_BYTES,
        }
    }

    /// Sets the bytes per round.
    pub fn round_bytes(mut self, bytes: usize) -> Self {
        self.round_bytes = bytes.max(1);
        self
    }

    /// Unpaced sources (the behaviour before flow control: memory grows with the
    /// backlog).
    pub fn off() -> Self {
        FlowControl {
            rounds_in_flight: None,
            round_bytes: Self::DEFAULT_ROUND_BYTES,
        }
    }
}

impl Default for FlowControl {
    fn default() -> Self {
        FlowControl::rounds(Self::DEFAULT_ROUNDS)
    }
}

/// One worker's view of the dataflow's progress, shared by its sources: a probe on
/// the output of every keyed operator.
#[derive(Clone)]
pub(crate) struct Pacer {
    probe: ProbeHandle<Time>,
    config: FlowControl,
}

impl Pacer {
    pub(crate) fn new(config: FlowControl) -> Self {
        Pacer {
            probe: ProbeHandle::new(),
            config,
        }
    }

    /// A source's batch size for records of about `record_bytes` each: the round's
    /// bytes, at least one record, at most [`FlowControl::BATCH`].
    pub(crate) fn batch(&self, record_bytes: usize) -> usize {
        (self.config.round_bytes / record_bytes.max(1)).clamp(1, FlowControl::BATCH)
    }

    /// The probe keyed operators' outputs report to.
    pub(crate) fn probe(&self) -> &ProbeHandle<Time> {
        &self.probe
    }

    /// Whether a source in round `round` may send another batch: the least round
    /// the probe can still see is within the bound.
    pub(crate) fn may_send(&self, round: u64) -> bool {
        let Some(rounds) = self.config.rounds_in_flight else {
            return true;
        };
        let least = self
            .probe
            .with_frontier(|f| f.iter().min_by_key(|t| t.inner).map(Time::round));
        may_send(round, least, rounds)
    }
}

/// The pacing rule: a source in `round` may send unless the least round still in
/// flight (`None`: nothing is) is more than `rounds` behind it.
fn may_send(round: u64, least_in_flight: Option<u64>, rounds: u64) -> bool {
    least_in_flight.is_none_or(|least| round < least.saturating_add(rounds))
}

/// The size of a source's records, measured on a sample (one record in
/// [`RecordSize::EVERY`]) in their postcard encoding: what they weigh in exchange
/// channels and in a snapshot's in-flight part.
pub(crate) struct RecordSize {
    seen: u64,
    /// Running average in bytes (exponentially weighted; 0: none measured yet).
    average: usize,
}

impl RecordSize {
    const EVERY: u64 = 64;

    pub(crate) fn new() -> Self {
        RecordSize {
            seen: 0,
            average: 0,
        }
    }

    /// Counts a record; measures it when it is a sampled one.
    pub(crate) fn observe<T: serde::Serialize>(&mut self, record: &T) {
        if self.seen.is_multiple_of(Self::EVERY)
            && let Ok(bytes) = postcard::experimental::serialized_size(record)
        {
            self.average = if self.average == 0 {
                bytes
            } else {
                (self.average * 7 + bytes) / 8
            };
        }
        self.seen = self.seen.wrapping_add(1);
    }

    /// The average measured so far (`usize::MAX` before any measurement, so the first
    /// batch is a single record, which gets measured).
    pub(crate) fn bytes(&self) -> usize {
        if self.average == 0 {
            usize::MAX
        } else {
            self.average
        }
    }
}

/// Time a source spent waiting for flow control, for its log lines.
#[derive(Default)]
pub(crate) struct Paused {
    since: Cell<Option<Instant>>,
    total: Cell<Duration>,
}

impl Paused {
    /// The source waits (from now, unless it already was).
    pub(crate) fn waiting(&self) {
        if self.since.get().is_none() {
            self.since.set(Some(Instant::now()));
        }
    }
    /// The source goes on; how long it waited, if it did.
    pub(crate) fn going(&self) -> Option<Duration> {
        let waited = self.since.take()?.elapsed();
        self.total.set(self.total.get() + waited);
        Some(waited)
    }
    /// Time waited so far.
    pub(crate) fn total(&self) -> Duration {
        self.total.get() + self.since.get().map_or(Duration::ZERO, |s| s.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_waits_once_its_oldest_batch_is_too_far_behind() {
        // Nothing in flight: go.
        assert!(may_send(100, None, 4));
        // Rounds 10..=13 in flight with a bound of 4: round 13 may go, 14 waits.
        assert!(may_send(13, Some(10), 4));
        assert!(!may_send(14, Some(10), 4));
        // A source behind the least round (another source's) always goes.
        assert!(may_send(3, Some(10), 1));
        // Rounds far apart do not overflow the sum.
        assert!(!may_send(u64::MAX, Some(0), 1));
        assert!(may_send(u64::MAX - 1, Some(u64::MAX - 1), 1));
    }

    #[test]
    fn an_unpaced_job_never_waits() {
        let pacer = Pacer::new(FlowControl::off());
        assert!(pacer.may_send(u64::MAX));
    }

    #[test]
    fn a_round_holds_about_its_bytes() {
        let pacer = Pacer::new(FlowControl::rounds(4).round_bytes(64 * 1024));
        // Small records: the record cap.
        assert_eq!(pacer.batch(8), FlowControl::BATCH);
        // 512-byte records: 128 a round; records bigger than the round: one.
        assert_eq!(pacer.batch(512), 128);
        assert_eq!(pacer.batch(1 << 20), 1);
        // Nothing measured yet: one record, which then is.
        let mut size = RecordSize::new();
        assert_eq!(pacer.batch(size.bytes()), 1);
        size.observe(&vec![7u8; 1000]);
        assert_eq!(pacer.batch(size.bytes()), 65);
    }

    #[test]
    fn the_bound_is_at_least_one_round() {
        assert_eq!(FlowControl::rounds(0).rounds_in_flight, Some(1));
        assert_eq!(
            FlowControl::default().rounds_in_flight,
            Some(FlowControl::DEFAULT_ROUNDS)
        );
    }
}

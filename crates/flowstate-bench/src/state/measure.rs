//! Timing: the subjects of one op (its variants and its baseline) warmed up, then
//! timed in rounds, one run of each per round, so that all see the same load, each
//! after every subject's background work has settled.

use std::time::{Duration, Instant};

use anyhow::Result;

/// What [`measure`] asks of a subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Run [`BATCH`] invocations from this index; returns the ops they count and the
    /// fold of what they read.
    Run(usize),
    /// Put the state back as freshly set up (returns zeros).
    Reset,
    /// Wait until the subject's database has no flush or compaction running or
    /// pending (returns zeros; at once for a subject without one).
    Settle,
    /// Compact the subject's state into one sorted run, as Flink's
    /// `ListStateBenchmark` does before each iteration (returns zeros; nothing for a
    /// subject without a database).
    Compact,
}

/// One timed subject: a variant of an op, or its baseline.
pub(super) type Run<'a> = Box<dyn FnMut(Step) -> Result<(u64, u64)> + 'a>;

/// What a subject does on [`Step::Settle`] and [`Step::Compact`].
pub(super) struct Upkeep<S, C> {
    /// Waits until the subject's database is idle.
    pub(super) settle: S,
    /// Compacts the subject's state.
    pub(super) compact: C,
}

/// A timed subject over `state`, run by `run`, settled and compacted by `upkeep`; a
/// reset drops the state before `set_up` makes it afresh, so that the two are never in
/// memory at once.
pub(super) fn subject<'a, T: 'a>(
    state: T,
    mut set_up: impl FnMut() -> Result<T> + 'a,
    mut run: impl FnMut(&mut T, usize) -> Result<(u64, u64)> + 'a,
    upkeep: Upkeep<impl Fn(&T) + 'a, impl Fn(&T) -> Result<()> + 'a>,
) -> Run<'a> {
    // `None` only after a reset whose set-up failed (the error went to `measure`).
    let mut state = Some(state);
    Box::new(move |step| match (step, state.as_mut()) {
        (Step::Run(start), Some(s)) => run(s, start),
        (Step::Run(_) | Step::Settle | Step::Compact, None) => {
            Err(anyhow::anyhow!("no state: its reset failed"))
        }
        (Step::Settle, Some(s)) => {
            (upkeep.settle)(s);
            Ok((0, 0))
        }
        (Step::Compact, Some(s)) => {
            (upkeep.compact)(s)?;
            Ok((0, 0))
        }
        (Step::Reset, _) => {
            state = None;
            state = Some(set_up()?);
            Ok((0, 0))
        }
    })
}

/// Invocations per timing check.
pub(super) const BATCH: usize = 1024;

/// Warms each of `runs` up for `warmup` runs of `seconds` (at least one batch), as the
/// Flink anchor warms up before its timed iterations (RocksDB's compactions of a large
/// set-up can outlast it: the map scans still vary run to run), then runs `iterations` rounds,
/// each timing one run of `seconds` of every one of `runs` in turn; returns ops/s per
/// timed run, per subject. The invocation indexes of each subject continue from
/// round to round, as one uninterrupted run's would; a timed run runs at least one
/// batch. With `reset`, each subject's state is set up afresh before each of its timed
/// runs, outside the timing. With `compact`, each subject's state is compacted before
/// each of its timed runs (after the reset, outside the timing), as Flink's
/// `ListStateBenchmark` compacts its list state before each iteration: every timed run
/// then starts from the same shape of the database, not from however many level-0
/// files and pending compactions the runs before it left. Before each timed run every
/// subject settles (outside the timing): the subjects of one process share RocksDB's
/// background threads and the machine's two cores, so a subject timed while another's
/// compactions run pays for that other's writes. Unsettled, the plain `listUpdate`
/// ran 0.60–0.97 of its raw baseline from run to run (2026-12-07); it was timed right
/// after the baseline's second of kilobyte puts, the likeliest cause (a reading from a
/// few runs, not a trace). Each subject still pays for the background work its own
/// timed second starts.
pub(super) fn measure(
    seconds: f64,
    warmup: usize,
    iterations: usize,
    reset: bool,
    compact: bool,
    runs: &mut [Run<'_>],
) -> Result<Vec<Vec<f64>>> {
    let mut next = vec![0usize; runs.len()];
    for (run, next) in runs.iter_mut().zip(&mut next) {
        let warm = Instant::now();
        loop {
            std::hint::black_box(run(Step::Run(*next))?);
            *next += BATCH;
            if warm.elapsed() >= Duration::from_secs_f64(seconds * warmup as f64) {
                break;
            }
        }
    }
    let mut samples = vec![Vec::with_capacity(iterations); runs.len()];
    for _ in 0..iterations {
        for i in 0..runs.len() {
            if reset {
                runs[i](Step::Reset)?;
            }
            if compact {
                runs[i](Step::Compact)?;
            }
            // A settled database stays so until written: one pass settles them all.
            for run in runs.iter_mut() {
                run(Step::Settle)?;
            }
            let (run, next) = (&mut runs[i], &mut next[i]);
            let t = Instant::now();
            let mut ops = 0u64;
            // At least one batch, however short `seconds` (as Flink's harness does).
            loop {
                let (counted, sink) = run(Step::Run(*next))?;
                std::hint::black_box(sink);
                ops += counted;
                *next += BATCH;
                if t.elapsed() >= Duration::from_secs_f64(seconds) {
                    break;
                }
            }
            samples[i].push(ops as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// With `reset`, every subject is set up afresh before each of its timed runs (and
    /// only then); with `compact`, it is compacted then, after any reset; without
    /// either, neither; every subject settles before each timed run, after the timed
    /// subject's reset and compaction (and the warm-up runs go unsettled), and each
    /// subject's invocations continue from run to run, one batch after another.
    #[test]
    fn measure_resets_compacts_and_settles_before_each_timed_run() {
        for (reset, compact) in [(false, false), (true, false), (false, true), (true, true)] {
            // Every subject's steps, in the order they came, with the subject's number.
            let log: RefCell<Vec<(usize, Step)>> = RefCell::default();
            let mut runs: Vec<Run<'_>> = (0..3)
                .map(|n| {
                    let log = &log;
                    Box::new(move |step| {
                        log.borrow_mut().push((n, step));
                        Ok((1u64, 0u64))
                    }) as Run<'_>
                })
                .collect();
            let samples = measure(0.001, 1, 4, reset, compact, &mut runs).unwrap();
            drop(runs);
            assert_eq!(samples.len(), 3);
            assert!(samples.iter().all(|s| s.len() == 4));
            let log = log.into_inner();
            // The log as blocks: what came before each unbroken run of one subject's
            // batches, and whose batches they were.
            let mut blocks: Vec<(Vec<(usize, Step)>, usize)> = Vec::new();
            let mut before = Vec::new();
            for (j, (n, step)) in log.iter().enumerate() {
                match step {
                    Step::Run(_) if matches!(log.get(j + 1), Some((m, Step::Run(_))) if m == n) => {
                    }
                    Step::Run(_) => blocks.push((std::mem::take(&mut before), *n)),
                    _ => before.push((*n, *step)),
                }
            }
            assert!(before.is_empty(), "{before:?}");
            // Three warm-ups, then four rounds of three timed runs.
            let whose: Vec<usize> = blocks.iter().map(|(_, n)| *n).collect();
            assert_eq!(whose, [0, 1, 2].repeat(5), "{log:?}");
            for (k, (before, n)) in blocks.iter().enumerate() {
                let mut expected = Vec::new();
                if k >= 3 {
                    if reset {
                        expected.push((*n, Step::Reset));
                    }
                    if compact {
                        expected.push((*n, Step::Compact));
                    }
                    expected.extend((0..3).map(|m| (m, Step::Settle)));
                }
                assert_eq!(before, &expected, "block {k}");
            }
            for n in 0..3 {
                let starts: Vec<usize> = log
                    .iter()
                    .filter_map(|(m, s)| match s {
                        Step::Run(i) if *m == n => Some(*i),
                        _ => None,
                    })
                    .collect();
                assert!(starts.iter().enumerate().all(|(j, i)| *i == j * BATCH));
            }
        }
    }
}

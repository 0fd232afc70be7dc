//! Timing: the subjects of one op (its variants and its baseline) warmed up, then
//! timed in rounds, one run of each per round, so that all see the same load.

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
}

/// One timed subject: a variant of an op, or its baseline.
pub(super) type Run<'a> = Box<dyn FnMut(Step) -> Result<(u64, u64)> + 'a>;

/// A timed subject over `state`, run by `run`; a reset drops the state before `set_up`
/// makes it afresh, so that the two are never in memory at once.
pub(super) fn subject<'a, T: 'a>(
    state: T,
    mut set_up: impl FnMut() -> Result<T> + 'a,
    mut run: impl FnMut(&mut T, usize) -> Result<(u64, u64)> + 'a,
) -> Run<'a> {
    // `None` only after a reset whose set-up failed (the error went to `measure`).
    let mut state = Some(state);
    Box::new(move |step| match (step, state.as_mut()) {
        (Step::Run(start), Some(s)) => run(s, start),
        (Step::Run(_), None) => Err(anyhow::anyhow!("no state: its reset failed")),
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
/// runs, outside the timing.
pub(super) fn measure(
    seconds: f64,
    warmup: usize,
    iterations: usize,
    reset: bool,
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
        for ((run, next), samples) in runs.iter_mut().zip(&mut next).zip(&mut samples) {
            if reset {
                run(Step::Reset)?;
            }
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
            samples.push(ops as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// With `reset`, every subject is set up afresh before each of its timed runs (and
    /// only then); without, never; either way each subject's invocations continue
    /// from run to run, one batch after another.
    #[test]
    fn measure_resets_each_subject_before_each_timed_run_when_asked() {
        for reset in [false, true] {
            let logs: Vec<RefCell<Vec<Step>>> = (0..3).map(|_| RefCell::default()).collect();
            let mut runs: Vec<Run<'_>> = logs
                .iter()
                .map(|log| {
                    Box::new(move |step| {
                        log.borrow_mut().push(step);
                        Ok((1u64, 0u64))
                    }) as Run<'_>
                })
                .collect();
            let samples = measure(0.001, 1, 4, reset, &mut runs).unwrap();
            drop(runs);
            assert_eq!(samples.len(), 3);
            for log in &logs {
                let log = log.borrow();
                let resets = log.iter().filter(|s| **s == Step::Reset).count();
                assert_eq!(resets, if reset { 4 } else { 0 }, "{log:?}");
                // A reset never comes twice in a row or last: a timed run follows.
                assert!(log.windows(2).all(|w| w != [Step::Reset, Step::Reset]));
                assert_ne!(log.last(), Some(&Step::Reset));
                let starts: Vec<usize> = log
                    .iter()
                    .filter_map(|s| match s {
                        Step::Run(i) => Some(*i),
                        Step::Reset => None,
                    })
                    .collect();
                assert!(starts.iter().enumerate().all(|(j, i)| *i == j * BATCH));
            }
        }
    }
}

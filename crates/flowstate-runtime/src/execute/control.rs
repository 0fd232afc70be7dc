//! How a job's processes keep their checkpoint coordinators in step: a worker's turn
//! of coordination (the coordinator triggers what is due, takes the worker's failure,
//! and what it has for the other processes is sent), and the small dataflow of its own
//! that carries those messages between processes.

use std::sync::Arc;

use crate::RuntimeError;
use crate::checkpoint::{Control, Coordinator};

/// One turn of a worker's part in checkpoint coordination, before it steps the
/// dataflow: the coordinator triggers what is due, takes this worker's own failure
/// (`own_error`), and `send` passes what it has for the other processes on (only a
/// process's first worker sends; see [`ControlInput`]). Returns whether the job failed,
/// so that the worker stops.
///
/// The failure is read *before* `send`, never after: the coordinator is shared by the
/// process's workers, and another worker may record a failure at any moment. Read
/// after sending, a failure recorded in between stops this worker with the message
/// that tells the other processes still unsent; its control input then closes and
/// they wait for this process until their checkpoints time out. Read before, the
/// turn that sees the failure sends it.
pub(super) fn coordination_turn(
    coordinator: &Coordinator,
    own_error: Option<&RuntimeError>,
    mut send: impl FnMut(),
) -> bool {
    coordinator.poll();
    if let Some(e) = own_error {
        coordinator.fail_with(e);
    }
    let failed = coordinator.error().is_some();
    send();
    failed
}

/// The input through which a process's first worker sends its coordinator's messages
/// to the other processes' coordinators.
pub(super) struct ControlInput {
    input: timely::dataflow::InputHandle<
        u64,
        timely::container::CapacityContainerBuilder<Vec<(u64, Control)>>,
    >,
    /// This worker sends (the first of its process); the others only close theirs.
    sends: bool,
    /// Threads per process: process `p`'s first worker is `p * threads`.
    threads: u64,
}

impl ControlInput {
    pub(super) fn send(&mut self, coordinator: &Coordinator) {
        if !self.sends {
            return;
        }
        let out = coordinator.take_outbox();
        if out.is_empty() {
            return;
        }
        for (process, msg) in out {
            self.input.send((process as u64 * self.threads, msg));
        }
        // Exchange buffers until the input's time moves (a flush alone keeps it).
        let next = self.input.time() + 1;
        self.input.advance_to(next);
    }
}

/// A dataflow of its own for coordinator messages between processes (only when the
/// job runs as several): each message goes to the first worker of its destination
/// process, which hands it to that process's coordinator.
pub(super) fn control_dataflow(
    worker: &mut timely::worker::Worker,
    coordinator: Arc<Coordinator>,
    threads: usize,
) -> ControlInput {
    use timely::dataflow::channels::pact::Exchange;
    use timely::dataflow::operators::Input;
    use timely::dataflow::operators::generic::Operator;
    let sends = worker.index().is_multiple_of(threads);
    let input = worker.dataflow::<u64, _, _>(|scope| {
        let (input, stream) = scope.new_input::<Vec<(u64, Control)>>();
        stream.sink(
            Exchange::new(|(dest, _): &(u64, Control)| *dest),
            "Control",
            move |(input, _)| {
                input.for_each(|_, data| {
                    for (_, msg) in data.drain(..) {
                        coordinator.receive(msg);
                    }
                });
            },
        );
        input
    });
    ControlInput {
        input,
        sends,
        threads: threads as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CheckpointConfig;
    use crate::checkpoint::ProcessRole;
    use std::time::Duration;

    /// The coordinator of process `process` of `processes`, with `workers` workers,
    /// checkpointing into a directory that lives as long as the returned guard.
    fn coordinator_of(
        process: usize,
        processes: usize,
        workers: usize,
    ) -> (tempfile::TempDir, Coordinator) {
        let dir = tempfile::tempdir().unwrap();
        let config =
            CheckpointConfig::local(dir.path().join("ck"), Duration::from_secs(3600)).unwrap();
        let role = ProcessRole { process, processes };
        let coordinator = Coordinator::new(config, workers, role, 128, 1, 0, None);
        (dir, coordinator)
    }

    /// The second process of two, as its sending worker sees it: the process's other
    /// worker fails restoring its state right after this worker's send (the moment
    /// that once left a cluster waiting 40 minutes on checkpoints that could not
    /// complete). The failure still reaches the leader before this worker stops.
    #[test]
    fn a_failure_recorded_by_another_worker_mid_turn_is_sent_before_the_worker_stops() {
        let (_dir, coordinator) = coordinator_of(1, 2, 2);
        let mut sent = Vec::new();
        let mut turn = 0;
        loop {
            turn += 1;
            assert!(turn <= 3, "the worker never stopped");
            let failed = coordination_turn(&coordinator, None, || {
                sent.extend(coordinator.take_outbox());
                if turn == 1 {
                    coordinator.fail_with(&RuntimeError::Restore(
                        "chk-2/counts-3.kgs: checksum mismatch".to_string(),
                    ));
                }
            });
            if failed {
                break;
            }
        }
        assert!(
            matches!(sent.as_slice(), [(0, Control::Fail { restore: true, .. })]),
            "sent to the other process: {sent:?}"
        );
    }

    /// A worker's own failure is sent in the turn that takes it, and stops it.
    #[test]
    fn a_workers_own_failure_is_sent_in_the_turn_that_stops_it() {
        let (_dir, coordinator) = coordinator_of(0, 3, 1);
        let mut sent = Vec::new();
        let failed = coordination_turn(
            &coordinator,
            Some(&RuntimeError::Checkpoint("disk full".to_string())),
            || sent.extend(coordinator.take_outbox()),
        );
        assert!(failed);
        let to: Vec<usize> = sent
            .iter()
            .filter(|(_, m)| matches!(m, Control::Fail { restore: false, .. }))
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(to, [1, 2], "{sent:?}");
    }
}

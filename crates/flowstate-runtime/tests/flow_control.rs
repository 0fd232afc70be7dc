//! Flow control never holds a job back on a source that is done: a source that has
//! read every split keeps its input open until the final checkpoint, and the other
//! sources must go on past the flow-control bound meanwhile. Here worker 1's source
//! has nothing to read (the input is one unsplit vector on worker 0), checkpoints are
//! an hour apart (so nothing else moves the clocks) and one round may be in flight:
//! the job must finish, with every record counted once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
use flowstate_runtime::{
    CheckpointConfig, FlowControl, JobConfig, KeyedProcessFunction, OpenContext, ProcessContext,
    RuntimeError, WatermarkStrategy, execute, opened,
};

const EVENTS: u64 = 50_000;
const KEYS: u64 = 7;

#[derive(Default)]
struct Count(Option<Rc<dyn ValueState<u64>>>);

impl KeyedProcessFunction<u64, u64, (u64, u64)> for Count {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("count"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        v: u64,
        ctx: &mut ProcessContext<'_, u64, (u64, u64)>,
    ) -> Result<(), RuntimeError> {
        let s = opened(&self.0)?;
        let n = s.value()?.unwrap_or(0) + 1;
        s.update(n)?;
        ctx.collect((v % KEYS, n));
        Ok(())
    }
}

#[test]
fn a_finished_source_does_not_hold_the_others_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = JobConfig::default()
        .workers(2)
        .flow_control(FlowControl::rounds(1).round_bytes(64))
        .checkpointing(
            CheckpointConfig::local(dir.path().join("ck"), Duration::from_secs(3600)).unwrap(),
        );
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let out = execute(config, |job| {
            job.source_vec_unsplit((0..EVENTS).collect(), |_| 0, WatermarkStrategy::None)
                .key_by(|v| v % KEYS)
                .process(Count::default())
                .collect()
        });
        let _ = done.send(out);
    });
    // Liveness, not speed: the job takes well under a second; a job held back by the
    // finished source would never end.
    let out = finished
        .recv_timeout(Duration::from_secs(300))
        .expect("the job is held back by its finished source")
        .unwrap();
    let mut max: Vec<(u64, u64)> = vec![(0, 0); KEYS as usize];
    let mut total = 0;
    for (key, n) in out.into_iter().flatten() {
        max[key as usize] = (key, max[key as usize].1.max(n));
        total += 1;
    }
    assert_eq!(total, EVENTS);
    for (key, n) in max {
        assert_eq!(n, (0..EVENTS).filter(|v| v % KEYS == key).count() as u64);
    }
}

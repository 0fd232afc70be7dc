//! Flink's classic keyed `ValueState` example: for every key, average each two values.
//! Input (1,3),(1,5),(1,7),(1,4),(1,2) prints (1,4) and (1,5).
//!
//!     cargo run --release -p flowstate-runtime --example count_window_average [-- --rocksdb]

use std::rc::Rc;

use anyhow::Result;
use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
use flowstate_rocksdb::RocksDbOptions;
use flowstate_runtime::{
    BackendChoice, JobConfig, KeyedProcessFunction, OpenContext, ProcessContext, RuntimeError,
    WatermarkStrategy, execute, opened,
};

/// Keeps (count, sum) per key; emits the average and resets every two values.
#[derive(Default)]
struct CountWindowAverage {
    sum: Option<Rc<dyn ValueState<(u64, u64)>>>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for CountWindowAverage {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.sum = Some(ctx.value_state(&ValueStateDescriptor::new("average"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (key, value): (u64, u64),
        ctx: &mut ProcessContext<'_, u64, (u64, u64)>,
    ) -> Result<(), RuntimeError> {
        let state = opened(&self.sum)?;
        let (count, sum) = state.value()?.unwrap_or((0, 0));
        let (count, sum) = (count + 1, sum + value);
        if count >= 2 {
            ctx.collect((key, sum / count));
            state.clear()?;
        } else {
            state.update((count, sum))?;
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let rocksdb = std::env::args().any(|a| a == "--rocksdb");
    let dir = tempfile::tempdir()?;
    let backend = if rocksdb {
        BackendChoice::RocksDb(RocksDbOptions::new(dir.path()))
    } else {
        BackendChoice::Heap
    };
    let out = execute(JobConfig::default().backend(backend), |job| {
        let input = vec![(1u64, 3u64), (1, 5), (1, 7), (1, 4), (1, 2)];
        job.source_vec(input, |_| 0, WatermarkStrategy::None)
            .key_by(|(k, _): &(u64, u64)| *k)
            .process(CountWindowAverage::default())
            .collect()
    })?;
    for (key, avg) in out.into_iter().flatten() {
        println!("({key},{avg})");
    }
    Ok(())
}

//! The Nexmark event source ([`Job::source_nexmark`]).

use crate::source::{SeqSource, SeqSplit};
use crate::stream::{DataStream, Job, WatermarkStrategy};

impl<'scope> Job<'scope> {
    /// `events` Nexmark events (Person, Auction, Bid in the benchmark's 1:3:46 mix),
    /// split across workers, with event times from `base_time_ms` and a bounded
    /// out-of-orderness watermark of `max_delay_ms`.
    pub fn source_nexmark(
        &mut self,
        events: u64,
        base_time_ms: u64,
        max_delay_ms: i64,
    ) -> DataStream<'scope, nexmark::event::Event> {
        let (index, peers) = (self.worker_index() as u64, self.workers() as u64);
        let source = SeqSource {
            fresh: Some((index, peers)),
            // The reader bounds the count; the generator is endless.
            len: events,
            element: Box::new(move |split: &SeqSplit| {
                let config = nexmark::config::NexmarkConfig {
                    base_time: base_time_ms,
                    ..Default::default()
                };
                let mut generator = nexmark::EventGenerator::new(config)
                    .with_offset(split.index + split.consumed * split.of)
                    .with_step(split.of);
                Box::new(move |_| generator.next())
            }),
        };
        self.source(
            "nexmark-source",
            source,
            |e: &nexmark::event::Event| i64::try_from(e.timestamp()).unwrap_or(i64::MAX),
            WatermarkStrategy::BoundedOutOfOrderness(max_delay_ms),
        )
    }
}

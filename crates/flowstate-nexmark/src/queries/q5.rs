//! q5, hot items: bids counted per auction in sliding windows (10 s every 2 s), then
//! per window the auctions with the most bids, emitted when the watermark passes the
//! window's end.

use std::rc::Rc;

use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
use flowstate_runtime::nexmark::event::Bid;
use flowstate_runtime::{
    DataStream, KeyedProcessFunction, OpenContext, ProcessContext, RuntimeError, TimeWindow,
    TimerContext, WindowAssigner,
};

use super::Count;
use crate::{Row, SLIDE_MS, WINDOW_MS};

pub(super) fn build<'s>(bids: DataStream<'s, Bid>) -> DataStream<'s, Row> {
    bids.map(|b| b.auction as u64)
        .key_by(|auction| *auction)
        .window(WindowAssigner::sliding(WINDOW_MS, SLIDE_MS))
        .aggregate(Count)
        .uid("q5-bids-per-auction")
        .key_by(|(_, window, _): &(u64, TimeWindow, u64)| window.end)
        .process(HottestPerWindow::default())
        .uid("q5-hottest")
}

/// Per window end: the highest count so far and the auctions that have it.
#[derive(Default)]
struct HottestPerWindow(Option<Rc<dyn ValueState<(u64, Vec<u64>)>>>);

impl KeyedProcessFunction<i64, (u64, TimeWindow, u64), Row> for HottestPerWindow {
    fn open(&mut self, ctx: &OpenContext<'_, i64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("hottest"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (auction, window, bids): (u64, TimeWindow, u64),
        ctx: &mut ProcessContext<'_, i64, Row>,
    ) -> Result<(), RuntimeError> {
        let state = self.0.as_ref().ok_or(RuntimeError::NotOpened)?;
        let next = match state.value()? {
            None => {
                // Window results carry the window's last millisecond; all of them
                // are in once the watermark reaches its end.
                ctx.timer_service().register_event_time_timer(window.end)?;
                (bids, vec![auction])
            }
            Some((max, _)) if bids > max => (bids, vec![auction]),
            Some((max, mut auctions)) if bids == max => {
                auctions.push(auction);
                (max, auctions)
            }
            Some(unchanged) => unchanged,
        };
        Ok(state.update(next)?)
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut TimerContext<'_, i64, Row>,
    ) -> Result<(), RuntimeError> {
        let state = self.0.as_ref().ok_or(RuntimeError::NotOpened)?;
        if let Some((bids, auctions)) = state.value()? {
            let window_start = *ctx.current_key() - WINDOW_MS;
            for auction in auctions {
                ctx.collect_at(
                    timestamp,
                    Row::Q5 {
                        window_start,
                        auction,
                        bids,
                    },
                );
            }
        }
        Ok(state.clear()?)
    }
}

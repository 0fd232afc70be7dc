//! q7, highest bid: per tumbling 10 s window, the bids with the window's highest
//! price. A partial maximum per window and key part (the auction id modulo
//! [`PARTS`]) spreads the work over workers; the maximum of the partial ones per
//! window is emitted when the watermark passes the window's end.

use std::rc::Rc;

use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
use flowstate_runtime::nexmark::event::Bid;
use flowstate_runtime::{
    DataStream, KeyedProcessFunction, OpenContext, ProcessContext, RuntimeError, TimeWindow,
    TimerContext, WindowAssigner,
};
use serde::{Deserialize, Serialize};

use crate::{Row, WINDOW_MS};

/// Key parts of the partial maximum.
const PARTS: u64 = 64;

/// The highest price seen and the bids that have it: (auction, bidder, time).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Top {
    part: u64,
    price: u64,
    bids: Vec<(u64, u64, u64)>,
}

impl Top {
    fn merge(&self, other: &Top) -> Top {
        match self.price.cmp(&other.price) {
            std::cmp::Ordering::Greater => self.clone(),
            std::cmp::Ordering::Less => other.clone(),
            std::cmp::Ordering::Equal => {
                let mut bids = self.bids.clone();
                bids.extend_from_slice(&other.bids);
                Top {
                    part: self.part,
                    price: self.price,
                    bids,
                }
            }
        }
    }
}

pub(super) fn build<'s>(bids: DataStream<'s, Bid>) -> DataStream<'s, Row> {
    bids.map(|b| Top {
        part: b.auction as u64 % PARTS,
        price: b.price as u64,
        bids: vec![(b.auction as u64, b.bidder as u64, b.date_time)],
    })
    .key_by(|t| t.part)
    .window(WindowAssigner::tumbling(WINDOW_MS))
    .reduce(Top::merge)
    .uid("q7-partial-max")
    .key_by(|(_, window, _): &(u64, TimeWindow, Top)| window.end)
    .process(HighestPerWindow::default())
    .uid("q7-max")
}

/// Per window end: the highest bids of the partial maxima so far.
#[derive(Default)]
struct HighestPerWindow(Option<Rc<dyn ValueState<Top>>>);

impl KeyedProcessFunction<i64, (u64, TimeWindow, Top), Row> for HighestPerWindow {
    fn open(&mut self, ctx: &OpenContext<'_, i64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("highest"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (_, window, top): (u64, TimeWindow, Top),
        ctx: &mut ProcessContext<'_, i64, Row>,
    ) -> Result<(), RuntimeError> {
        let state = self.0.as_ref().ok_or(RuntimeError::NotOpened)?;
        let next = match state.value()? {
            None => {
                ctx.timer_service().register_event_time_timer(window.end)?;
                top
            }
            Some(so_far) => so_far.merge(&top),
        };
        Ok(state.update(next)?)
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut TimerContext<'_, i64, Row>,
    ) -> Result<(), RuntimeError> {
        let state = self.0.as_ref().ok_or(RuntimeError::NotOpened)?;
        if let Some(top) = state.value()? {
            let window_start = *ctx.current_key() - WINDOW_MS;
            for (auction, bidder, date_time) in top.bids {
                ctx.collect_at(
                    timestamp,
                    Row::Q7 {
                        window_start,
                        auction,
                        bidder,
                        price: top.price,
                        date_time,
                    },
                );
            }
        }
        Ok(state.clear()?)
    }
}

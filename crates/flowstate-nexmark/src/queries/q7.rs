//! q7, highest bid: per tumbling 10 s window, the bids with the window's highest
//! price. A partial maximum per window and key part (the auction id modulo
//! [`PARTS`]) spreads the work over workers; the maximum of the partial ones per
//! window is emitted when the watermark passes the window's end.

use flowstate_runtime::nexmark::event::Bid;
use flowstate_runtime::{DataStream, TimeWindow, WindowAssigner};
use serde::{Deserialize, Serialize};

use super::window_end::PerWindow;
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
    .process(PerWindow::new(
        "highest",
        |so_far: Option<Top>, _, top| match so_far {
            Some(so_far) => so_far.merge(&top),
            None => top,
        },
        rows,
    ))
    .uid("q7-max")
}

fn rows(window_start: i64, top: Top) -> Vec<Row> {
    top.bids
        .into_iter()
        .map(|(auction, bidder, date_time)| Row::Q7 {
            window_start,
            auction,
            bidder,
            price: top.price,
            date_time,
        })
        .collect()
}

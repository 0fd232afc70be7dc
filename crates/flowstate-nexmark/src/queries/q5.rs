//! q5, hot items: bids counted per auction in sliding windows (10 s every 2 s), then
//! per window the auctions with the most bids, emitted when the watermark passes the
//! window's end.

use flowstate_runtime::nexmark::event::Bid;
use flowstate_runtime::{DataStream, TimeWindow, WindowAssigner};

use super::Count;
use super::window_end::PerWindow;
use crate::{Row, SLIDE_MS, WINDOW_MS};

pub(super) fn build<'s>(bids: DataStream<'s, Bid>) -> DataStream<'s, Row> {
    bids.map(|b| b.auction as u64)
        .key_by(|auction| *auction)
        .window(WindowAssigner::sliding(WINDOW_MS, SLIDE_MS))
        // A count does not depend on the order of bids: a bid updates the one slice
        // of 2 s it falls in, not the five windows it is in (as Flink SQL slices).
        .sliced()
        .aggregate(Count)
        .uid("q5-bids-per-auction")
        .key_by(|(_, window, _): &(u64, TimeWindow, u64)| window.end)
        .process(PerWindow::new("hottest", hottest, rows))
        .uid("q5-hottest")
}

/// The highest count so far and the auctions that have it, with `auction`'s count.
fn hottest(so_far: Option<(u64, Vec<u64>)>, auction: u64, bids: u64) -> (u64, Vec<u64>) {
    match so_far {
        Some((max, _)) if bids > max => (bids, vec![auction]),
        Some((max, mut auctions)) if bids == max => {
            auctions.push(auction);
            (max, auctions)
        }
        Some(unchanged) => unchanged,
        None => (bids, vec![auction]),
    }
}

fn rows(window_start: i64, (bids, auctions): (u64, Vec<u64>)) -> Vec<Row> {
    auctions
        .into_iter()
        .map(|auction| Row::Q5 {
            window_start,
            auction,
            bids,
        })
        .collect()
}

//! q11, user sessions: bids counted per bidder in session windows (gap 10 s).

use flowstate_runtime::nexmark::event::Bid;
use flowstate_runtime::{DataStream, WindowAssigner};

use super::Count;
use crate::{Row, WINDOW_MS};

pub(super) fn build<'s>(bids: DataStream<'s, Bid>) -> DataStream<'s, Row> {
    bids.map(|b| b.bidder as u64)
        .key_by(|bidder| *bidder)
        .window(WindowAssigner::session(WINDOW_MS))
        .aggregate(Count)
        .uid("q11-sessions")
        .map(|(bidder, window, bids)| Row::Q11 {
            bidder,
            bids,
            start: window.start,
            end: window.end,
        })
}

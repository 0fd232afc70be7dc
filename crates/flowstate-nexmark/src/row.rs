//! The result rows of the queries, one variant per query, and their one-line text
//! form (what the example job writes and what tests compare).

use std::fmt;

use serde::{Deserialize, Serialize};

/// One result row of a query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Row {
    /// q0: a bid as it came.
    Q0 {
        /// The auction bid on.
        auction: u64,
        /// Who bid.
        bidder: u64,
        /// The price bid.
        price: u64,
        /// The bid's event time (ms).
        date_time: u64,
    },
    /// q1: a bid with its price in euros.
    Q1 {
        /// The auction bid on.
        auction: u64,
        /// Who bid.
        bidder: u64,
        /// `EURO_RATE * price`.
        price_eur: f64,
        /// The bid's event time (ms).
        date_time: u64,
    },
    /// q2: a bid on an auction whose id is a multiple of 123.
    Q2 {
        /// The auction bid on.
        auction: u64,
        /// The price bid.
        price: u64,
    },
    /// q4: a category's closed auctions so far: their count and the sum of their
    /// closing prices (the average is `sum / count`).
    Q4 {
        /// The category.
        category: u64,
        /// Closed auctions (with at least one bid in their lifetime).
        count: u64,
        /// The sum of their closing prices.
        sum: u64,
    },
    /// q5: an auction with the most bids in the window starting at `window_start`.
    Q5 {
        /// The sliding window's start (ms).
        window_start: i64,
        /// The auction.
        auction: u64,
        /// Its bids in the window.
        bids: u64,
    },
    /// q7: a bid with the highest price in the window starting at `window_start`.
    Q7 {
        /// The tumbling window's start (ms).
        window_start: i64,
        /// The auction bid on.
        auction: u64,
        /// Who bid.
        bidder: u64,
        /// The price bid (the window's highest).
        price: u64,
        /// The bid's event time (ms).
        date_time: u64,
    },
    /// q8: a person who opened an auction in the window they registered in.
    Q8 {
        /// The person's id.
        id: u64,
        /// Their name.
        name: String,
        /// The tumbling window's start (ms).
        window_start: i64,
    },
    /// q11: a bidder's session and its bids.
    Q11 {
        /// The bidder.
        bidder: u64,
        /// Bids in the session.
        bids: u64,
        /// The session's start: its first bid (ms).
        start: i64,
        /// The session's end: its last bid plus the gap (ms).
        end: i64,
    },
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Row::Q0 {
                auction,
                bidder,
                price,
                date_time,
            } => write!(
                f,
                "q0 auction={auction} bidder={bidder} price={price} time={date_time}"
            ),
            Row::Q1 {
                auction,
                bidder,
                price_eur,
                date_time,
            } => write!(
                f,
                "q1 auction={auction} bidder={bidder} price_eur={price_eur:.3} time={date_time}"
            ),
            Row::Q2 { auction, price } => write!(f, "q2 auction={auction} price={price}"),
            Row::Q4 {
                category,
                count,
                sum,
            } => {
                let avg = *sum as f64 / (*count).max(1) as f64;
                write!(
                    f,
                    "q4 category={category} count={count} sum={sum} avg={avg:.2}"
                )
            }
            Row::Q5 {
                window_start,
                auction,
                bids,
            } => write!(f, "q5 window={window_start} auction={auction} bids={bids}"),
            Row::Q7 {
                window_start,
                auction,
                bidder,
                price,
                date_time,
            } => write!(
                f,
                "q7 window={window_start} auction={auction} bidder={bidder} price={price} \
                 time={date_time}"
            ),
            Row::Q8 {
                id,
                name,
                window_start,
            } => write!(f, "q8 window={window_start} id={id} name={name}"),
            Row::Q11 {
                bidder,
                bids,
                start,
                end,
            } => write!(f, "q11 bidder={bidder} start={start} end={end} bids={bids}"),
        }
    }
}

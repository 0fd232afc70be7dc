//! The query pipelines: [`build`] wires one onto the Nexmark source. q0-q2 are
//! stateless and live here; each stateful query has a module of its own.

mod q11;
mod q4;
mod q5;
mod q7;
mod q8;
mod window_end;

use flowstate_runtime::nexmark::event::{Bid, Event};
use flowstate_runtime::{DataStream, Job};

use crate::{EURO_RATE, Params, Q2_MODULUS, Query, Row};

/// Builds `query` on `params.events` Nexmark events and returns its result rows
/// (see the crate docs for what each answers). Stateful operators have uids
/// `qN-...`, so a run restores from its own checkpoints.
pub fn build<'s>(job: &mut Job<'s>, query: Query, params: &Params) -> DataStream<'s, Row> {
    let events = job
        .source_nexmark(
            params.events,
            crate::BASE_TIME_MS,
            params.max_delay_ms.max(0),
        )
        .uid("nexmark-source");
    let events = throttle(events, params.throttle_every);
    match query {
        Query::Q0 => bids(events).map(|b| Row::Q0 {
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price: b.price as u64,
            date_time: b.date_time,
        }),
        Query::Q1 => bids(events).map(|b| Row::Q1 {
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price_eur: EURO_RATE * b.price as f64,
            date_time: b.date_time,
        }),
        Query::Q2 => bids(events).flat_map(|b| {
            (b.auction as u64)
                .is_multiple_of(Q2_MODULUS)
                .then_some(Row::Q2 {
                    auction: b.auction as u64,
                    price: b.price as u64,
                })
        }),
        Query::Q4 => q4::build(events),
        Query::Q5 => q5::build(bids(events)),
        Query::Q7 => q7::build(bids(events)),
        Query::Q8 => q8::build(events),
        Query::Q11 => q11::build(bids(events)),
    }
}

/// The bids among the events.
fn bids<'s>(events: DataStream<'s, Event>) -> DataStream<'s, Bid> {
    events.flat_map(|e| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    })
}

/// Sleeps 1 ms every `every` events of this worker (0: passes them on untouched).
fn throttle<'s>(events: DataStream<'s, Event>, every: u64) -> DataStream<'s, Event> {
    if every == 0 {
        return events;
    }
    let mut seen = 0u64;
    events.map(move |e| {
        seen += 1;
        if seen.is_multiple_of(every) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        e
    })
}

/// Counts the records of a window (q5, q11).
struct Count;

impl<T> flowstate_core::descriptor::AggregateFunction<T, u64, u64> for Count {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _: T, acc: &mut u64) {
        *acc += 1;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
}

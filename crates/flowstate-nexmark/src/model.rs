//! The reference model: each query's answer computed with plain maps over the same
//! events, in one pass or two, with none of the runtime (no windows, timers or
//! state), so a job's output can be checked against it exactly.

use std::collections::{BTreeMap, HashMap, HashSet};

use flowstate_runtime::nexmark::EventGenerator;
use flowstate_runtime::nexmark::config::NexmarkConfig;
use flowstate_runtime::nexmark::event::{Bid, Event};

use crate::{BASE_TIME_MS, EURO_RATE, Q2_MODULUS, Query, Row, SLIDE_MS, WINDOW_MS, event_time};

/// The first `n` events of every run, in generation order (a job's source reads the
/// same events, split across workers).
pub fn events(n: u64) -> impl Iterator<Item = Event> {
    let config = NexmarkConfig {
        base_time: BASE_TIME_MS,
        ..Default::default()
    };
    EventGenerator::new(config).take(usize::try_from(n).unwrap_or(usize::MAX))
}

/// What `query` answers on the first `n` events, in no particular order. For q4 (an
/// updating result) it is the last row of each category.
pub fn expected(query: Query, n: u64) -> Vec<Row> {
    let all: Vec<Event> = events(n).collect();
    let bids = || {
        all.iter().filter_map(|e| match e {
            Event::Bid(b) => Some(b),
            _ => None,
        })
    };
    match query {
        Query::Q0 => bids()
            .map(|b| Row::Q0 {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as u64,
                date_time: b.date_time,
            })
            .collect(),
        Query::Q1 => bids()
            .map(|b| Row::Q1 {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price_eur: EURO_RATE * b.price as f64,
                date_time: b.date_time,
            })
            .collect(),
        Query::Q2 => bids()
            .filter(|b| (b.auction as u64).is_multiple_of(Q2_MODULUS))
            .map(|b| Row::Q2 {
                auction: b.auction as u64,
                price: b.price as u64,
            })
            .collect(),
        Query::Q4 => q4(&all),
        Query::Q5 => q5(bids()),
        Query::Q7 => q7(bids()),
        Query::Q8 => q8(&all),
        Query::Q11 => q11(bids()),
    }
}

fn q4(all: &[Event]) -> Vec<Row> {
    let auctions: HashMap<usize, (u64, u64, u64)> = all
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) => Some((a.id, (a.category as u64, a.date_time, a.expires))),
            _ => None,
        })
        .collect();
    let mut highest: HashMap<usize, u64> = HashMap::new();
    for e in all {
        if let Event::Bid(b) = e
            && let Some((_, start, expires)) = auctions.get(&b.auction)
            && (*start..=*expires).contains(&b.date_time)
        {
            let h = highest.entry(b.auction).or_default();
            *h = (*h).max(b.price as u64);
        }
    }
    let mut per_category: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (auction, price) in highest {
        if let Some((category, _, _)) = auctions.get(&auction) {
            let (count, sum) = per_category.entry(*category).or_default();
            *count += 1;
            *sum += price;
        }
    }
    per_category
        .into_iter()
        .map(|(category, (count, sum))| Row::Q4 {
            category,
            count,
            sum,
        })
        .collect()
}

fn q5<'a>(bids: impl Iterator<Item = &'a Bid>) -> Vec<Row> {
    let mut counts: HashMap<i64, HashMap<u64, u64>> = HashMap::new();
    for b in bids {
        let t = event_time(b.date_time);
        let mut start = t - t.rem_euclid(SLIDE_MS);
        while start > t - WINDOW_MS {
            *counts
                .entry(start)
                .or_default()
                .entry(b.auction as u64)
                .or_default() += 1;
            start -= SLIDE_MS;
        }
    }
    let mut rows = Vec::new();
    for (window_start, per_auction) in counts {
        let max = per_auction.values().copied().max().unwrap_or(0);
        rows.extend(
            per_auction
                .into_iter()
                .filter(|(_, n)| *n == max)
                .map(|(auction, bids)| Row::Q5 {
                    window_start,
                    auction,
                    bids,
                }),
        );
    }
    rows
}

fn q7<'a>(bids: impl Iterator<Item = &'a Bid>) -> Vec<Row> {
    let mut top: HashMap<i64, (u64, Vec<&Bid>)> = HashMap::new();
    for b in bids {
        let t = event_time(b.date_time);
        let (price, with) = top.entry(t - t.rem_euclid(WINDOW_MS)).or_default();
        let p = b.price as u64;
        if p > *price || with.is_empty() {
            *price = p;
            with.clear();
        }
        if p == *price {
            with.push(b);
        }
    }
    top.into_iter()
        .flat_map(|(window_start, (price, with))| {
            with.into_iter().map(move |b| Row::Q7 {
                window_start,
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price,
                date_time: b.date_time,
            })
        })
        .collect()
}

fn q8(all: &[Event]) -> Vec<Row> {
    let window = |ms: u64| event_time(ms) - event_time(ms).rem_euclid(WINDOW_MS);
    let sellers: HashSet<(u64, i64)> = all
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) => Some((a.seller as u64, window(a.date_time))),
            _ => None,
        })
        .collect();
    all.iter()
        .filter_map(|e| match e {
            Event::Person(p) if sellers.contains(&(p.id as u64, window(p.date_time))) => {
                Some(Row::Q8 {
                    id: p.id as u64,
                    name: p.name.clone(),
                    window_start: window(p.date_time),
                })
            }
            _ => None,
        })
        .collect()
}

fn q11<'a>(bids: impl Iterator<Item = &'a Bid>) -> Vec<Row> {
    let mut times: HashMap<u64, Vec<i64>> = HashMap::new();
    for b in bids {
        times
            .entry(b.bidder as u64)
            .or_default()
            .push(event_time(b.date_time));
    }
    let mut rows = Vec::new();
    for (bidder, mut t) in times {
        t.sort_unstable();
        // (start, last bid, bids) per session.
        let mut sessions: Vec<(i64, i64, u64)> = Vec::new();
        for at in t {
            match sessions.last_mut() {
                // Windows [t, t + gap) that overlap or touch merge (Flink's rule).
                Some((_, last, bids)) if at <= *last + WINDOW_MS => {
                    *last = at;
                    *bids += 1;
                }
                _ => sessions.push((at, at, 1)),
            }
        }
        rows.extend(sessions.into_iter().map(|(start, last, bids)| Row::Q11 {
            bidder,
            bids,
            start,
            end: last + WINDOW_MS,
        }));
    }
    rows
}

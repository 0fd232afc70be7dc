//! q4, average price per category: auctions joined with their bids by auction id,
//! each auction closed at its expiry (an event-time timer) with its highest bid
//! between its start and expiry; then a running (sum, count) of closing prices per
//! category.

use std::rc::Rc;

use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
use flowstate_runtime::nexmark::event::Event;
use flowstate_runtime::{
    DataStream, KeyedProcessFunction, OpenContext, ProcessContext, RuntimeError, TimerContext,
    opened,
};
use serde::{Deserialize, Serialize};

use crate::{Row, event_time};

/// An auction's side of the join, or a bid's.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Side {
    Auction {
        category: u64,
        date_time: u64,
        expires: u64,
    },
    Bid {
        price: u64,
        date_time: u64,
    },
}

/// What an auction id holds until the auction closes.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Open {
    /// Bids that came before their auction (a bid may name an auction up to ten ids
    /// ahead, or one from another source split that is behind): (price, time). They
    /// are dropped when the watermark passes them and still no auction came, which
    /// means its auction started after them or closed before.
    Early(Vec<(u64, u64)>),
    /// The auction and its highest bid in its lifetime so far.
    Auction {
        category: u64,
        date_time: u64,
        expires: u64,
        highest: Option<u64>,
    },
}

pub(super) fn build<'s>(events: DataStream<'s, Event>) -> DataStream<'s, Row> {
    events
        .flat_map(|e| match e {
            Event::Auction(a) => Some((
                a.id as u64,
                Side::Auction {
                    category: a.category as u64,
                    date_time: a.date_time,
                    expires: a.expires,
                },
            )),
            Event::Bid(b) => Some((
                b.auction as u64,
                Side::Bid {
                    price: b.price as u64,
                    date_time: b.date_time,
                },
            )),
            Event::Person(_) => None,
        })
        .key_by(|(auction, _)| *auction)
        .process(ClosingPrice::default())
        .uid("q4-closing-price")
        .key_by(|(category, _)| *category)
        .process(CategoryAverage::default())
        .uid("q4-category-average")
}

/// Per auction id: joins the auction with its bids; emits (category, closing
/// price) at expiry when it had a bid.
#[derive(Default)]
struct ClosingPrice(Option<Rc<dyn ValueState<Open>>>);

impl KeyedProcessFunction<u64, (u64, Side), (u64, u64)> for ClosingPrice {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("open"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (_, side): (u64, Side),
        ctx: &mut ProcessContext<'_, u64, (u64, u64)>,
    ) -> Result<(), RuntimeError> {
        let state = opened(&self.0)?;
        let next = match (state.value()?, side) {
            (
                Some(Open::Early(early)),
                Side::Auction {
                    category,
                    date_time,
                    expires,
                },
            ) => {
                let highest = early
                    .iter()
                    .filter(|(_, t)| (date_time..=expires).contains(t))
                    .map(|(p, _)| *p)
                    .max();
                ctx.timer_service()
                    .register_event_time_timer(event_time(expires))?;
                Open::Auction {
                    category,
                    date_time,
                    expires,
                    highest,
                }
            }
            (
                None | Some(Open::Auction { .. }),
                Side::Auction {
                    category,
                    date_time,
                    expires,
                },
            ) => {
                // Auction ids are unique: a second one is not in Nexmark's stream.
                ctx.timer_service()
                    .register_event_time_timer(event_time(expires))?;
                Open::Auction {
                    category,
                    date_time,
                    expires,
                    highest: None,
                }
            }
            (None, Side::Bid { price, date_time }) => {
                ctx.timer_service()
                    .register_event_time_timer(event_time(date_time))?;
                Open::Early(vec![(price, date_time)])
            }
            (Some(Open::Early(mut early)), Side::Bid { price, date_time }) => {
                ctx.timer_service()
                    .register_event_time_timer(event_time(date_time))?;
                early.push((price, date_time));
                Open::Early(early)
            }
            (
                Some(Open::Auction {
                    category,
                    date_time,
                    expires,
                    highest,
                }),
                Side::Bid {
                    price,
                    date_time: at,
                },
            ) => Open::Auction {
                category,
                date_time,
                expires,
                highest: if (date_time..=expires).contains(&at) {
                    highest.max(Some(price))
                } else {
                    highest
                },
            },
        };
        Ok(state.update(next)?)
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut TimerContext<'_, u64, (u64, u64)>,
    ) -> Result<(), RuntimeError> {
        let state = opened(&self.0)?;
        match state.value()? {
            Some(Open::Auction {
                category,
                expires,
                highest,
                ..
            }) if event_time(expires) <= timestamp => {
                if let Some(price) = highest {
                    ctx.collect_at(event_time(expires), (category, price));
                }
                Ok(state.clear()?)
            }
            // Early bids the watermark has passed with no auction: their auction
            // started after them (or closed before), so they can never count.
            Some(Open::Early(mut early)) => {
                early.retain(|(_, t)| event_time(*t) > timestamp);
                if early.is_empty() {
                    Ok(state.clear()?)
                } else {
                    Ok(state.update(Open::Early(early))?)
                }
            }
            _ => Ok(()),
        }
    }
}

/// Per category: the running (count, sum) of closing prices.
#[derive(Default)]
struct CategoryAverage(Option<Rc<dyn ValueState<(u64, u64)>>>);

impl KeyedProcessFunction<u64, (u64, u64), Row> for CategoryAverage {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("count-sum"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (category, price): (u64, u64),
        ctx: &mut ProcessContext<'_, u64, Row>,
    ) -> Result<(), RuntimeError> {
        let state = opened(&self.0)?;
        let (count, sum) = state.value()?.unwrap_or((0, 0));
        let (count, sum) = (count + 1, sum + price);
        state.update((count, sum))?;
        ctx.collect(Row::Q4 {
            category,
            count,
            sum,
        });
        Ok(())
    }
}

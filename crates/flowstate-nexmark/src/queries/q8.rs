//! q8, monitor new users: people and auctions keyed by person id (an auction by its
//! seller) in tumbling 10 s windows; a window that saw the person register and open
//! an auction emits the person.

use flowstate_runtime::nexmark::event::Event;
use flowstate_runtime::{DataStream, WindowAssigner};
use serde::{Deserialize, Serialize};

use crate::{Row, WINDOW_MS};

/// What a person id's window saw: the person's name if they registered in it, and
/// whether they opened an auction.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Seen {
    id: u64,
    name: Option<String>,
    auction: bool,
}

impl Seen {
    fn merge(&self, other: &Seen) -> Seen {
        Seen {
            id: self.id,
            name: self.name.clone().or_else(|| other.name.clone()),
            auction: self.auction || other.auction,
        }
    }
}

pub(super) fn build<'s>(events: DataStream<'s, Event>) -> DataStream<'s, Row> {
    events
        .flat_map(|e| match e {
            Event::Person(p) => Some(Seen {
                id: p.id as u64,
                name: Some(p.name),
                auction: false,
            }),
            Event::Auction(a) => Some(Seen {
                id: a.seller as u64,
                name: None,
                auction: true,
            }),
            Event::Bid(_) => None,
        })
        .key_by(|s| s.id)
        .window(WindowAssigner::tumbling(WINDOW_MS))
        .reduce(Seen::merge)
        .uid("q8-people-and-auctions")
        .flat_map(|(id, window, seen)| match seen {
            Seen {
                name: Some(name),
                auction: true,
                ..
            } => Some(Row::Q8 {
                id,
                name,
                window_start: window.start,
            }),
            _ => None,
        })
}

//! Sessionize Nexmark bids with session windows: bids keyed by bidder, a session
//! closes after 10 s without a bid from that bidder; each session reports its bid
//! count and total price. Late bids (beyond the 2 s out-of-orderness) go to a side
//! output and are counted.
//!
//!     cargo run --release -p flowstate-runtime --example sessionize -- [EVENTS] [--workers N] [--rocksdb]

use anyhow::{Context, Result, bail};
use flowstate_rocksdb::RocksDbOptions;
use flowstate_runtime::nexmark::event::{Bid, Event};
use flowstate_runtime::{BackendChoice, JobConfig, OutputTag, TimeWindow, WindowAssigner, execute};

fn main() -> Result<()> {
    let mut events = 200_000u64;
    let mut workers = 1;
    let mut rocksdb = false;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--workers" => workers = it.next().context("--workers N")?.parse()?,
            "--rocksdb" => rocksdb = true,
            other if other.starts_with("--") => bail!("unknown option {other}"),
            n => events = n.parse().context("EVENTS must be a number")?,
        }
    }
    let dir = tempfile::tempdir()?;
    let backend = if rocksdb {
        BackendChoice::RocksDb(RocksDbOptions::new(dir.path()))
    } else {
        BackendChoice::Heap
    };
    let out = execute(
        JobConfig::default().workers(workers).backend(backend),
        move |job| {
            let late = OutputTag::<Bid>::new("late-bids");
            let sessions = job
                .source_nexmark(events, 0, 2_000)
                .flat_map(|e: Event| match e {
                    Event::Bid(b) => Some(b),
                    _ => None,
                })
                .key_by(|b: &Bid| b.bidder)
                .window(WindowAssigner::session(10_000))
                .side_output_late_data(&late)
                .process(|bidder: &usize, w: &TimeWindow, bids: Vec<Bid>, out| {
                    let total: usize = bids.iter().map(|b| b.price).sum();
                    out.push((*bidder, *w, bids.len(), total));
                    Ok(())
                });
            let late_bids = sessions.side_output(&late).collect();
            (sessions.collect(), late_bids)
        },
    )?;
    let (sessions, late): (Vec<_>, Vec<_>) = out.into_iter().unzip();
    let mut sessions = sessions.concat();
    sessions.sort_by_key(|s| (s.1.start, s.0));
    let bids: usize = sessions.iter().map(|s| s.2).sum();
    println!(
        "{events} events: {} sessions over {bids} bids, {} late bids",
        sessions.len(),
        late.concat().len()
    );
    println!("first sessions (bidder, [start, end) ms, bids, total price):");
    for (bidder, w, n, total) in sessions.iter().take(10) {
        println!("  {bidder:>6}  [{}, {})  {n:>3}  {total}", w.start, w.end);
    }
    Ok(())
}

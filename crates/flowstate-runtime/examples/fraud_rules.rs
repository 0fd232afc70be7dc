//! Fraud rules with the broadcast state pattern: a rules stream is broadcast to every
//! worker and kept in broadcast state; transactions, keyed by account, are checked
//! against the current rules and against the account's own history (keyed state).
//! Rules change mid-stream: the change applies from its watermark epoch on, on every
//! worker alike.
//!
//!     cargo run --release -p flowstate-runtime --example fraud_rules -- [--workers N] [--rocksdb]

use std::rc::Rc;

use anyhow::{Context, Result, bail};
use flowstate_core::descriptor::{MapStateDescriptor, ValueStateDescriptor};
use flowstate_core::state::{MapState, ValueState};
use flowstate_rocksdb::RocksDbOptions;
use flowstate_runtime::{
    BackendChoice, BroadcastContext, JobConfig, KeyedBroadcastProcessFunction, OpenContext,
    ReadOnlyContext, RuntimeError, WatermarkStrategy, execute, opened,
};

/// A rule: alert when one amount exceeds `max_amount`, or when an amount is more than
/// `max_jump` times the account's previous one. At event time `ts`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Rule {
    name: String,
    max_amount: u64,
    max_jump: u64,
    ts: i64,
}

/// A transaction of an account at event time `ts`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Tx {
    account: u32,
    amount: u64,
    ts: i64,
}

fn rules() -> MapStateDescriptor<String, Rule> {
    MapStateDescriptor::new("rules")
}

#[derive(Default)]
struct Detector {
    last: Option<Rc<dyn ValueState<u64>>>,
}

impl KeyedBroadcastProcessFunction<u32, Tx, Rule, String> for Detector {
    fn open(&mut self, ctx: &OpenContext<'_, u32>) -> Result<(), RuntimeError> {
        self.last = Some(ctx.value_state(&ValueStateDescriptor::new("last-amount"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        tx: Tx,
        ctx: &mut ReadOnlyContext<'_, u32, String>,
    ) -> Result<(), RuntimeError> {
        let last = opened(&self.last)?;
        let previous = last.value()?;
        let mut active = ctx.broadcast_state(&rules())?.entries()?;
        active.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, rule) in active {
            let jump = previous.is_some_and(|p| tx.amount > p.saturating_mul(rule.max_jump));
            if tx.amount > rule.max_amount || jump {
                ctx.collect(format!(
                    "t={:>5} account {:>3}: {} (previous {:?}) breaks rule {name}",
                    tx.ts, tx.account, tx.amount, previous
                ));
            }
        }
        last.update(tx.amount)?;
        Ok(())
    }
    fn process_broadcast_element(
        &mut self,
        rule: Rule,
        ctx: &mut BroadcastContext<'_, String>,
    ) -> Result<(), RuntimeError> {
        ctx.broadcast_state(&rules())?
            .put(rule.name.clone(), rule)?;
        Ok(())
    }
}

fn main() -> Result<()> {
    let mut workers = 2;
    let mut rocksdb = false;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--workers" => workers = it.next().context("--workers N")?.parse()?,
            "--rocksdb" => rocksdb = true,
            other => bail!("unknown option {other}"),
        }
    }
    let dir = tempfile::tempdir()?;
    let backend = if rocksdb {
        BackendChoice::RocksDb(RocksDbOptions::new(dir.path()))
    } else {
        BackendChoice::Heap
    };
    let rule_updates = vec![
        Rule {
            name: "large".into(),
            max_amount: 9_000,
            max_jump: u64::MAX,
            ts: 0,
        },
        Rule {
            name: "spike".into(),
            max_amount: u64::MAX,
            max_jump: 20,
            ts: 1,
        },
        // Tightened at t=5000: amounts over 5000 alert from then on.
        Rule {
            name: "large".into(),
            max_amount: 5_000,
            max_jump: u64::MAX,
            ts: 5_000,
        },
    ];
    // 10,000 transactions of 100 accounts, one per ms; deterministic amounts.
    let txs: Vec<Tx> = (0..10_000u64)
        .map(|i| Tx {
            account: (i % 100) as u32,
            amount: 10 + (i * 7_919 % 10_007),
            ts: i as i64,
        })
        .collect();
    let out = execute(
        JobConfig::default().workers(workers).backend(backend),
        move |job| {
            // Rules are read by one worker, in order (Flink: rules source parallelism 1).
            let rules = job
                .source_vec_unsplit(
                    rule_updates.clone(),
                    |r: &Rule| r.ts,
                    WatermarkStrategy::BoundedOutOfOrderness(0),
                )
                .broadcast();
            job.source_vec_unsplit(
                txs.clone(),
                |t: &Tx| t.ts,
                WatermarkStrategy::BoundedOutOfOrderness(0),
            )
            .key_by(|t: &Tx| t.account)
            .connect(rules)
            .process(Detector::default())
            .collect()
        },
    )?;
    let mut alerts = out.concat();
    alerts.sort();
    println!("{} alerts; first and last five:", alerts.len());
    for a in alerts
        .iter()
        .take(5)
        .chain(alerts.iter().rev().take(5).rev())
    {
        println!("  {a}");
    }
    Ok(())
}

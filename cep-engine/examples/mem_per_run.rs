//! Memory per open partial match: opens 1,000,000 runs (one per key, a second
//! step that never matches) and divides the growth of the resident set by the
//! number of runs. Includes the run, its bound event and the per-key state.
//!
//! Run: `cargo run --release -p cep-engine --example mem_per_run`

mod common;

use cep_engine::{Engine, EngineConfig, Event, Value};
use std::sync::Arc;

fn main() {
    const RUNS: usize = 1_000_000;
    let rules = Arc::new(
        rule_lang::compile_str(
            "m.vgl",
            "event Txn { card_id: string, amount: float }\nrule m { key card_id pattern a: Txn -> b: Txn[amount < 0] within 1h }",
        )
        .expect("compiles"),
    );
    let keys: Vec<Arc<str>> = (0..RUNS).map(|i| Arc::from(format!("card-{i}"))).collect();
    let ids: Vec<Arc<str>> = (0..RUNS).map(|i| Arc::from(format!("e{i}"))).collect();
    let mut engine = Engine::new(
        rules,
        EngineConfig {
            max_runs_total: usize::MAX,
            ..Default::default()
        },
    );
    let before = common::rss_kb();
    for i in 0..RUNS {
        engine.push(Event {
            ty: 0,
            ts: i as i64,
            id: ids[i].clone(),
            fields: vec![Value::Str(keys[i].clone()), Value::Float(10.0)].into_boxed_slice(),
            seq: 0,
        });
    }
    let after = common::rss_kb();
    assert_eq!(engine.active_runs(), RUNS);
    println!(
        "{} open runs: {:.0} bytes per run (RSS {} kB -> {} kB; key and id strings allocated beforehand)",
        RUNS,
        (after.saturating_sub(before) * 1024) as f64 / RUNS as f64,
        before,
        after
    );
}

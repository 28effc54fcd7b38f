//! State of a Kleene pattern under a long window (issue 17's case): every
//! small event on one card opens a run that collects all later ones, so
//! without caps state grows with the square of the key's events. With the
//! default caps (`max_run_events` 1,000, `max_runs_per_key` 10,000) it must
//! grow linearly at most. Prints, after 1,000 / 2,000 / 3,000 events 1 s
//! apart: open runs, events held by them, the engine snapshot's size and
//! the process's peak resident set.
//!
//! Run: `cargo run --release -p cep-engine --example kleene_state`

mod common;

use cep_engine::{Engine, EngineConfig, Event, Value};
use std::sync::Arc;

const RULES: &str = "event Txn { card_id: string, amount: float }\n\
rule kleene {\n  key card_id\n  pattern a: Txn+ -> b: Txn[amount > 1e12]\n  within 1000d\n}\n";

fn main() {
    let rules = Arc::new(rule_lang::compile_str("kleene.vgl", RULES).expect("compiles"));
    let card: Arc<str> = Arc::from("card-1");
    let mut engine = Engine::new(rules, EngineConfig::default());
    let mut sizes = vec![];
    for i in 0..3_000u32 {
        engine.push(Event {
            ty: 0,
            ts: 1_767_225_600_000 + i64::from(i) * 1_000,
            id: Arc::from(format!("e{i}")),
            fields: vec![Value::Str(card.clone()), Value::Float(1.0)].into_boxed_slice(),
            seq: 0,
        });
        let n = i + 1;
        if n % 1_000 == 0 {
            let snapshot = engine.snapshot().to_bytes().len();
            println!(
                "kleene {n} events: {} open runs, snapshot {snapshot} bytes, peak RSS {} kB, dropped at the event cap {}",
                engine.active_runs(),
                common::peak_rss_kb(),
                engine.metrics().runs_dropped_events_cap
            );
            sizes.push(snapshot);
        }
    }
    if let (Some(first), Some(last)) = (sizes.first(), sizes.last()) {
        println!(
            "kleene snapshot at 3,000 events / at 1,000: {:.2} (the target is <= 3.5)",
            *last as f64 / (*first).max(1) as f64
        );
    }
}

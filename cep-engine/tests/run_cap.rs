//! The per-run event cap (`EngineConfig::max_run_events`): a run that reaches
//! it without completing is dropped and counted, so an unbounded Kleene step
//! under a long `within` costs state linear in a key's events, not quadratic.

use cep_engine::{Engine, EngineConfig, Event, Value};
use std::sync::Arc;

fn ev(i: i64, amount: f64) -> Event {
    Event {
        ty: 0,
        ts: i * 1_000,
        id: Arc::from(format!("e{i}")),
        fields: vec![Value::Str(Arc::from("card-1")), Value::Float(amount)].into_boxed_slice(),
        seq: 0,
    }
}

/// Snapshot bytes after `n` events on one key, with the default caps.
fn snapshot_bytes(n: i64) -> (usize, u64) {
    let rs = Arc::new(
        rule_lang::compile_str(
            "kleene.vgl",
            "event Txn { card_id: string, amount: float }\n\
             rule r { key card_id pattern a: Txn+ -> b: Txn[amount > 1000000000000.0] within 1000d }",
        )
        .expect("compiles"),
    );
    let mut e = Engine::new(rs, EngineConfig::default());
    for i in 0..n {
        e.push(ev(i, 10.0));
    }
    (
        e.snapshot().to_bytes().len(),
        e.metrics().runs_dropped_events_cap,
    )
}

/// Issue 15 item 5: 1,000 / 2,000 / 3,000 events on one card gave checkpoints
/// of 30 / 124 / 279 MB (quadratic). Under the default caps, doubling the
/// events at most doubles the state (here it stays flat once runs hit the cap).
#[test]
fn kleene_state_grows_at_most_linearly_under_the_caps() {
    let (s1, d1) = snapshot_bytes(1_000);
    let (s2, _) = snapshot_bytes(2_000);
    let (s4, d4) = snapshot_bytes(4_000);
    eprintln!("snapshot bytes: 1000 -> {s1}, 2000 -> {s2}, 4000 -> {s4}");
    assert!(
        s2 as f64 <= 2.2 * s1 as f64,
        "2,000 events: {s2} bytes vs {s1} for 1,000"
    );
    assert!(
        s4 as f64 <= 4.4 * s1 as f64,
        "4,000 events: {s4} bytes vs {s1} for 1,000"
    );
    // The run started by the first event reaches 1,000 events at the last one.
    assert_eq!(d1, 1);
    // Runs started by events 0..3000 reach 1,000 events and are dropped.
    assert_eq!(d4, 3_001);
}

#[test]
fn a_run_reaching_the_cap_is_dropped_and_counted_and_later_runs_still_match() {
    let rs = Arc::new(
        rule_lang::compile_str(
            "cap.vgl",
            "event Txn { card_id: string, amount: float }\n\
             rule r { key card_id pattern a: Txn[amount < 100.0]+ -> b: Txn[amount >= 100.0] within 1h }",
        )
        .expect("compiles"),
    );
    let mut e = Engine::new(
        rs,
        EngineConfig {
            max_run_events: 3,
            ..EngineConfig::default()
        },
    );
    for i in 1..=4 {
        e.push(ev(i, 1.0));
    }
    // e1's run reached 3 events at e3, e2's at e4: both dropped.
    assert_eq!(e.metrics().runs_dropped_events_cap, 2);
    assert_eq!(e.active_runs(), 2);
    e.push(ev(5, 500.0));
    e.finish(false);
    let alerts = e.drain_alerts();
    assert_eq!(alerts.len(), 1);
    let matched: Vec<(String, Vec<String>)> = alerts[0]
        .matched
        .iter()
        .map(|(b, ids)| (b.clone(), ids.iter().map(|i| i.to_string()).collect()))
        .collect();
    // A run may complete holding exactly the cap.
    assert_eq!(
        matched,
        vec![
            ("a".to_string(), vec!["e3".to_string(), "e4".to_string()]),
            ("b".to_string(), vec!["e5".to_string()]),
        ]
    );
}

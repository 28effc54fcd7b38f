//! Property tests of [`cep_engine::Parallel`]: the same alerts as one engine,
//! in one order that does not depend on the number of workers.

use cep_engine::{Alert, Engine, EngineConfig, Event, Parallel, Program, Value};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Keyed patterns (with absence, negation, strict contiguity), aggregates,
/// a rule keyed by another field (two copies of a `Txn`) and a global rule.
const RULES: &str = r#"
event Txn { card: string, amount: float, country: string }
event Ping { card: string }

rule tiny_then_big {
  key card
  pattern s: Txn[amount < 5]{2,} -> b: Txn[amount > 50]
  within 30s
  where b.country != last(s).country
}
rule strict_pair {
  key card
  pattern a: Txn[amount > 80] ->> b: Txn[amount > 80]
  within 20s
  after match no skip
}
rule no_ping {
  key card
  pattern t: Txn[amount > 90] -> not Ping
  within 15s
  suppress 10s
}
rule burst {
  key card
  aggregate t: Txn over 10s
  having count(t) >= 3 and sum(t.amount) > 60
  suppress 5s
}
rule by_country {
  key country
  pattern a: Txn[amount > 70] -> b: Txn[amount > 70]
  within 10s
}
rule everyone {
  aggregate t: Txn over 5s
  having count(t) >= 4
  suppress 3s
}
"#;

fn program() -> Arc<Program> {
    Program::new(Arc::new(
        rule_lang::compile_str("parallel.vgl", RULES).expect("rules compile"),
    ))
}

/// (ping, card, amount, country, gap in ms: 0 gives equal timestamps).
type Raw = (bool, u8, f64, u8, u16);

fn events() -> impl Strategy<Value = Vec<Raw>> {
    prop::collection::vec(
        (
            prop::bool::weighted(0.15),
            0u8..6,
            prop_oneof![0.5f64..5.0, 5.0f64..100.0],
            0u8..3,
            prop_oneof![Just(0u16), 0u16..4000],
        ),
        1..160,
    )
}

fn stamp(raw: &[Raw]) -> Vec<Event> {
    let mut ts = 1_700_000_000_000i64;
    raw.iter()
        .enumerate()
        .map(|(i, &(ping, card, amount, country, gap))| {
            ts += i64::from(gap);
            let card = Value::Str(Arc::from(format!("c{card}")));
            let (ty, fields) = if ping {
                (1, vec![card])
            } else {
                let country = ["US", "FR", "XX"][country as usize];
                (
                    0,
                    vec![card, Value::Float(amount), Value::Str(Arc::from(country))],
                )
            };
            Event {
                ty,
                ts,
                id: Arc::from(format!("e{i}")),
                fields: fields.into_boxed_slice(),
                seq: 0,
            }
        })
        .collect()
}

/// Moves some events back by up to `lateness`, as an out-of-order source
/// would (some end up late, beyond it).
fn disorder(evs: &mut [Event], seed: u64, lateness: i64) {
    let mut s = seed | 1;
    for i in (1..evs.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        if s.is_multiple_of(4) {
            let j = i - 1;
            if evs[i].ts - evs[j].ts <= lateness {
                evs.swap(i, j);
            }
        }
    }
}

fn text(a: &Alert) -> String {
    let mut v = serde_json::to_value(a).expect("alert json");
    v.as_object_mut().map(|o| o.remove("detected_at"));
    v.to_string()
}

fn config(lateness: i64) -> EngineConfig {
    EngineConfig {
        lateness_ms: lateness,
        ..EngineConfig::default()
    }
}

/// Alerts of `workers` workers, in the order they are handed out, with the
/// stream cut into rounds every `round` events.
fn parallel(
    evs: &[Event],
    workers: usize,
    round: usize,
    lateness: i64,
    flush: bool,
) -> (Vec<String>, cep_engine::Metrics) {
    let mut p = Parallel::new(program(), config(lateness), workers);
    let mut out = vec![];
    for (i, ev) in evs.iter().enumerate() {
        p.push(ev.clone());
        if (i + 1) % round == 0 {
            out.extend(p.run().iter().map(text));
        }
    }
    out.extend(p.finish(flush).iter().map(text));
    (out, p.metrics())
}

fn single(evs: &[Event], lateness: i64, flush: bool) -> (Vec<String>, cep_engine::Metrics) {
    let mut e = Engine::with_program(
        program(),
        config(lateness),
        &[cep_engine::Deployment::default(); 6],
    );
    let mut out = vec![];
    for ev in evs {
        e.push(ev.clone());
        out.extend(e.drain_alerts().iter().map(text));
    }
    e.finish(flush);
    out.extend(e.drain_alerts().iter().map(text));
    (out, e.metrics().clone())
}

fn multiset(v: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for s in v {
        *m.entry(s.as_str()).or_default() += 1;
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any number of workers and any cut into rounds: the same alerts in the
    /// same order; and the alerts of one engine, with its counts.
    #[test]
    fn workers_and_rounds_change_nothing(
        raw in events(),
        workers in 2usize..6,
        round in 1usize..40,
        lateness in prop_oneof![Just(0i64), 0i64..5000],
        seed in any::<u64>(),
        flush in any::<bool>(),
    ) {
        let mut evs = stamp(&raw);
        disorder(&mut evs, seed, lateness);
        let (one, m1) = parallel(&evs, 1, usize::MAX, lateness, flush);
        let (many, mn) = parallel(&evs, workers, round, lateness, flush);
        prop_assert_eq!(&many, &one, "{} workers, rounds of {}", workers, round);
        let (reference, m) = single(&evs, lateness, flush);
        prop_assert_eq!(multiset(&one), multiset(&reference));
        for (what, a, b) in [("matches", &m1.matches, &m.matches), ("alerts", &m1.alerts, &m.alerts), ("suppressed", &m1.suppressed, &m.suppressed)] {
            prop_assert_eq!(a, b, "{}", what);
        }
        prop_assert_eq!((m1.events_in, m1.late, m1.events_processed), (m.events_in, m.late, m.events_processed));
        prop_assert_eq!(&mn.alerts, &m.alerts);
        prop_assert_eq!(mn.late, m.late);
    }
}

/// Handed-out alerts are final: nothing handed out later sorts before them.
#[test]
fn alerts_come_out_in_order_of_time() {
    let raw: Vec<Raw> = (0..400)
        .map(|i| {
            (
                i % 7 == 0,
                (i % 5) as u8,
                f64::from(i % 97),
                (i % 3) as u8,
                700,
            )
        })
        .collect();
    let evs = stamp(&raw);
    let mut p = Parallel::new(program(), config(0), 3);
    let mut ats = vec![];
    for (i, ev) in evs.into_iter().enumerate() {
        p.push(ev);
        if i % 13 == 0 {
            ats.extend(p.run().iter().map(|a| a.at));
        }
    }
    ats.extend(p.finish(true).iter().map(|a| a.at));
    assert!(ats.len() > 20, "the case raises alerts: {}", ats.len());
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{ats:?}");
}

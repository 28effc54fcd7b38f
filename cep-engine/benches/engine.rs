//! The two peer workloads on pre-decoded events, plus JSON decoding alone.
//!
//! 2,000,000 `Txn` events over 100,000 cards (`card-<n>`), amount uniform in
//! [1, 100), event time +1 ms per event, fixed seed (the same data as
//! `vigil-replay gen`). W1: `a: Txn -> b: Txn[amount > a.amount * 5] within 60s`
//! with `after match no skip`; W2: `aggregate t: Txn over 60s having count(t) > 5`.
//!
//! Run: `cargo bench -p cep-engine --bench engine`

use cep_engine::{Decoder, Engine, EngineConfig, Event, Value};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

const N: u64 = 2_000_000;
const CARDS: u64 = 100_000;

pub const W1: &str = "event Txn { card_id: string, amount: float }
rule w1 { key card_id pattern a: Txn -> b: Txn[amount > a.amount * 5] within 60s after match no skip }";
pub const W2: &str = "event Txn { card_id: string, amount: float }
rule w2 { key card_id aggregate t: Txn over 60s having count(t) > 5 }";

struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn lines() -> Vec<String> {
    let mut rng = SplitMix(42);
    (0..N)
        .map(|i| {
            let card = rng.next() % CARDS;
            let cents = 100 + rng.next() % 9900;
            format!(
                "{{\"id\":\"e{i}\",\"type\":\"Txn\",\"ts\":{},\"card_id\":\"card-{card}\",\"amount\":{}.{:02}}}",
                1_767_571_200_000i64 + i as i64,
                cents / 100,
                cents % 100
            )
        })
        .collect()
}

fn decoded(rules: &rule_lang::RuleSet, lines: &[String]) -> Vec<Event> {
    let d = Decoder::new(rules);
    // Interned card keys, as the node's decoder would share them.
    let mut cards: std::collections::HashMap<Arc<str>, Arc<str>> = Default::default();
    lines
        .iter()
        .map(|l| {
            let mut e = d
                .decode(l.as_bytes(), || unreachable!())
                .expect("valid event");
            if let Value::Str(s) = &e.fields[0] {
                let s = cards.entry(s.clone()).or_insert_with(|| s.clone()).clone();
                e.fields[0] = Value::Str(s);
            }
            e
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let lines = lines();
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    for (name, text) in [("w1_pattern", W1), ("w2_aggregate", W2)] {
        let rules = Arc::new(rule_lang::compile_str("w.vgl", text).expect("compiles"));
        let events = decoded(&rules, &lines);
        g.bench_function(name, |b| {
            b.iter_batched(
                || events.clone(),
                |evs| {
                    let mut e = Engine::new(rules.clone(), EngineConfig::default());
                    for ev in evs {
                        e.push(ev);
                    }
                    e.finish(false);
                    e.drain_alerts().len()
                },
                BatchSize::PerIteration,
            )
        });
    }
    let rules = rule_lang::compile_str("w.vgl", W1).expect("compiles");
    let d = Decoder::new(&rules);
    g.bench_function("decode_json", |b| {
        b.iter(|| {
            lines
                .iter()
                .filter(|l| d.decode(l.as_bytes(), String::new).is_ok())
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

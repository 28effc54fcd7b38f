//! Property tests: the engine's output does not depend on how the input is cut
//! into batches, on a snapshot/restore in the middle, or on arrival order within
//! the allowed lateness.

use cep_engine::{Alert, Engine, EngineConfig, Event, Value};
use proptest::prelude::*;
use std::sync::Arc;

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
rule guarded {
  key card
  pattern a: Txn -> not Txn[country == "XX"] -> b: Txn[amount > a.amount * 3]
  within 25s
  after match skip to next
}
rule burst {
  key card
  aggregate t: Txn over 10s
  having count(t) >= 3 and sum(t.amount) > 60
  suppress 5s
}
"#;

fn rules() -> Arc<rule_lang::RuleSet> {
    Arc::new(rule_lang::compile_str("props.vgl", RULES).expect("rules compile"))
}

#[derive(Debug, Clone)]
struct Ev {
    ping: bool,
    card: u8,
    amount: f64,
    country: u8,
}

fn events() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec(
        (
            prop::bool::weighted(0.15),
            0u8..3,
            prop_oneof![0.5f64..5.0, 5.0f64..100.0],
            0u8..3,
        )
            .prop_map(|(ping, card, amount, country)| Ev {
                ping,
                card,
                amount,
                country,
            }),
        1..120,
    )
}

/// Distinct, increasing timestamps: 0.2s to 3s apart.
fn stamp(evs: &[Ev], gaps: &[u16]) -> Vec<Event> {
    let mut ts = 1_700_000_000_000i64;
    evs.iter()
        .enumerate()
        .map(|(i, e)| {
            ts += 200 + i64::from(gaps[i % gaps.len()] % 2800);
            let card = Value::Str(Arc::from(format!("c{}", e.card)));
            let (ty, fields) = if e.ping {
                (1, vec![card])
            } else {
                let country = ["US", "FR", "XX"][e.country as usize];
                (
                    0,
                    vec![card, Value::Float(e.amount), Value::Str(Arc::from(country))],
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

fn key(a: &Alert) -> String {
    let mut v = serde_json::to_value(a).expect("alert json");
    v.as_object_mut().map(|o| o.remove("detected_at"));
    v.to_string()
}

fn run(evs: &[Event], lateness: i64) -> Vec<String> {
    let mut e = Engine::new(
        rules(),
        EngineConfig {
            lateness_ms: lateness,
            ..Default::default()
        },
    );
    for ev in evs {
        e.push(ev.clone());
    }
    e.finish(false);
    e.drain_alerts().iter().map(key).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn batch_boundaries_do_not_matter(evs in events(), gaps in prop::collection::vec(any::<u16>(), 1..8), cuts in prop::collection::vec(1usize..20, 1..10)) {
        let evs = stamp(&evs, &gaps);
        let whole = run(&evs, 0);
        let mut e = Engine::new(rules(), EngineConfig::default());
        let mut out = vec![];
        let mut i = 0;
        let mut c = 0;
        while i < evs.len() {
            let n = cuts[c % cuts.len()];
            c += 1;
            for ev in &evs[i..(i + n).min(evs.len())] {
                e.push(ev.clone());
            }
            i += n;
            out.extend(e.drain_alerts().iter().map(key));
        }
        e.finish(false);
        out.extend(e.drain_alerts().iter().map(key));
        prop_assert_eq!(whole, out);
    }

    #[test]
    fn snapshot_restore_anywhere(evs in events(), gaps in prop::collection::vec(any::<u16>(), 1..8), at in any::<prop::sample::Index>()) {
        let evs = stamp(&evs, &gaps);
        let whole = run(&evs, 0);
        let cut = at.index(evs.len() + 1);
        let mut e = Engine::new(rules(), EngineConfig::default());
        let mut out = vec![];
        for ev in &evs[..cut] {
            e.push(ev.clone());
        }
        out.extend(e.drain_alerts().iter().map(key));
        // The checkpoint byte format, as nodes store it.
        let snap = e.snapshot().to_bytes();
        drop(e);
        let snap = cep_engine::Snapshot::from_bytes(&snap).expect("snapshot deserialises");
        let mut e = Engine::restore(rules(), EngineConfig::default(), &[], snap);
        for ev in &evs[cut..] {
            e.push(ev.clone());
        }
        e.finish(false);
        out.extend(e.drain_alerts().iter().map(key));
        prop_assert_eq!(whole, out);
    }

    #[test]
    fn shuffling_within_lateness_changes_nothing(evs in events(), gaps in prop::collection::vec(any::<u16>(), 1..8), seed in any::<u64>()) {
        let evs = stamp(&evs, &gaps);
        let lateness = 5_000;
        let mut sorted_alerts = run(&evs, 0);
        // Shuffle inside blocks whose time span is within the lateness.
        let mut shuffled = vec![];
        let mut block: Vec<Event> = vec![];
        let mut s = seed | 1;
        for ev in &evs {
            if block.first().is_some_and(|f| ev.ts - f.ts > lateness) {
                shuffle(&mut block, &mut s);
                shuffled.append(&mut block);
            }
            block.push(ev.clone());
        }
        shuffle(&mut block, &mut s);
        shuffled.append(&mut block);
        let mut e = Engine::new(rules(), EngineConfig { lateness_ms: lateness, ..Default::default() });
        for ev in &shuffled {
            e.push(ev.clone());
        }
        e.finish(false);
        prop_assert_eq!(e.metrics().late, 0);
        let mut got: Vec<String> = e.drain_alerts().iter().map(key).collect();
        sorted_alerts.sort();
        got.sort();
        prop_assert_eq!(sorted_alerts, got);
    }
}

fn shuffle(v: &mut [Event], s: &mut u64) {
    for i in (1..v.len()).rev() {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        let j = (*s % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[test]
fn late_events_are_counted_not_matched() {
    let mut e = Engine::new(
        rules(),
        EngineConfig {
            lateness_ms: 1_000,
            ..Default::default()
        },
    );
    let mk = |i: i64, ts: i64| Event {
        ty: 0,
        ts,
        id: Arc::from(format!("x{i}")),
        fields: vec![
            Value::Str(Arc::from("c")),
            Value::Float(95.0),
            Value::Str(Arc::from("US")),
        ]
        .into_boxed_slice(),
        seq: 0,
    };
    e.push(mk(1, 10_000));
    e.push(mk(2, 9_500)); // within lateness: reordered
    e.push(mk(3, 8_000)); // older than watermark 9_000: late
    e.finish(false);
    assert_eq!(e.metrics().late, 1);
    assert_eq!(e.metrics().events_processed, 2);
}

#[test]
fn per_key_run_cap_drops_oldest() {
    let rs = Arc::new(rule_lang::compile_str("cap.vgl", "event T { k: string }\nrule r { key k pattern a: T -> b: T[false] within 1h after match no skip }").expect("compiles"));
    let mut e = Engine::new(
        rs,
        EngineConfig {
            max_runs_per_key: 5,
            ..Default::default()
        },
    );
    for i in 0..20 {
        e.push(Event {
            ty: 0,
            ts: i,
            id: Arc::from(format!("e{i}")),
            fields: vec![Value::Str(Arc::from("k"))].into_boxed_slice(),
            seq: 0,
        });
    }
    assert_eq!(e.active_runs(), 5);
    assert_eq!(e.metrics().runs_dropped_cap, 15);
}

#[test]
fn quiet_keys_release_their_state() {
    let rs = rules();
    let mut e = Engine::new(rs, EngineConfig::default());
    for i in 0..50i64 {
        e.push(Event {
            ty: 0,
            ts: 1_000 + i,
            id: Arc::from(format!("q{i}")),
            fields: vec![
                Value::Str(Arc::from(format!("k{i}"))),
                Value::Float(3.0),
                Value::Str(Arc::from("US")),
            ]
            .into_boxed_slice(),
            seq: 0,
        });
    }
    assert!(e.active_keys() > 0);
    // One hour later, a single event on another key moves the watermark.
    e.push(Event {
        ty: 1,
        ts: 3_700_000,
        id: Arc::from("late-ping"),
        fields: vec![Value::Str(Arc::from("other"))].into_boxed_slice(),
        seq: 0,
    });
    assert_eq!(e.active_runs(), 0);
    assert_eq!(e.active_keys(), 0, "state of quiet keys must be released");
}

fn txn(i: i64, ts: i64, card: &str, amount: f64) -> Event {
    // Big amounts come from another country, so `tiny_then_big`'s `where` holds.
    let country = if amount > 50.0 { "FR" } else { "US" };
    Event {
        ty: 0,
        ts,
        id: Arc::from(format!("r{i}")),
        fields: vec![
            Value::Str(Arc::from(card)),
            Value::Float(amount),
            Value::Str(Arc::from(country)),
        ]
        .into_boxed_slice(),
        seq: 0,
    }
}

#[test]
fn replacing_one_rule_keeps_the_other_rules_partial_matches() {
    let mut e = Engine::new(rules(), EngineConfig::default());
    // Two tiny charges open runs of `tiny_then_big`; a big one would complete them.
    e.push(txn(1, 1_000, "c", 1.0));
    e.push(txn(2, 2_000, "c", 1.5));
    let runs_before = e.active_runs();
    assert!(runs_before > 0);
    // Change only `strict_pair` (a different threshold).
    let changed = RULES.replace(
        "a: Txn[amount > 80] ->> b: Txn[amount > 80]",
        "a: Txn[amount > 70] ->> b: Txn[amount > 70]",
    );
    let new_rules = Arc::new(rule_lang::compile_str("props.vgl", &changed).expect("compiles"));
    e.replace_rules(new_rules, &[]);
    e.push(txn(3, 3_000, "c", 60.0));
    e.finish(false);
    let alerts = e.drain_alerts();
    let tiny: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.rule == "tiny_then_big")
        .collect();
    assert_eq!(
        tiny.len(),
        1,
        "the unchanged rule kept its runs across the replacement"
    );
    assert_eq!(tiny[0].matched[0].1.len(), 2);
}

#[test]
fn replacing_a_rule_starts_it_fresh() {
    let mut e = Engine::new(rules(), EngineConfig::default());
    e.push(txn(1, 1_000, "c", 1.0));
    e.push(txn(2, 2_000, "c", 1.5));
    let changed = RULES.replace(
        "pattern s: Txn[amount < 5]{2,}",
        "pattern s: Txn[amount < 6]{2,}",
    );
    e.replace_rules(
        Arc::new(rule_lang::compile_str("props.vgl", &changed).expect("compiles")),
        &[],
    );
    e.push(txn(3, 3_000, "c", 60.0));
    e.finish(false);
    assert!(
        e.drain_alerts().iter().all(|a| a.rule != "tiny_then_big"),
        "a changed rule must not inherit runs"
    );
    // Control: without the replacement the same events do alert.
    let mut e = Engine::new(rules(), EngineConfig::default());
    for ev in [
        txn(1, 1_000, "c", 1.0),
        txn(2, 2_000, "c", 1.5),
        txn(3, 3_000, "c", 60.0),
    ] {
        e.push(ev);
    }
    e.finish(false);
    assert!(e.drain_alerts().iter().any(|a| a.rule == "tiny_then_big"));
}

#[test]
fn idle_stream_advances_event_time_with_the_wall_clock() {
    let mut e = Engine::new(
        rules(),
        EngineConfig {
            idle_ms: 1_000,
            ..Default::default()
        },
    );
    e.set_wall_clock(50_000);
    e.push(txn(1, 10_000, "c", 95.0)); // opens `no_ping` (absence, within 15s)
    e.tick(50_500);
    assert!(e.drain_alerts().is_empty(), "not idle yet");
    e.tick(70_000); // 20s of silence: event time follows the wall clock
    let alerts = e.drain_alerts();
    assert!(
        alerts.iter().any(|a| a.rule == "no_ping" && a.at == 25_000),
        "{alerts:?}"
    );
}

#[test]
fn reference_lists_can_be_replaced_while_running() {
    let rs = Arc::new(
        rule_lang::compile_str("l.vgl", "event T { k: string, m: string }\nrule blocked { key k pattern a: T[m in list \"bad\"] within 1m }")
            .expect("compiles"),
    );
    let mut e = Engine::new(rs, EngineConfig::default());
    let ev = |i: i64| Event {
        ty: 0,
        ts: i * 1000,
        id: Arc::from(format!("l{i}")),
        fields: vec![Value::Str(Arc::from("k")), Value::Str(Arc::from("m1"))].into_boxed_slice(),
        seq: 0,
    };
    e.push(ev(1));
    assert!(e.drain_alerts().is_empty());
    e.set_list("bad", ["m1".to_string()]);
    e.push(ev(2));
    assert_eq!(e.drain_alerts().len(), 1);
    e.set_list("bad", Vec::<String>::new());
    e.push(ev(3));
    assert!(e.drain_alerts().is_empty());
}

proptest! {
    /// The same property as `fuzz/fuzz_targets/wire_decode.rs`, run in CI.
    #[test]
    fn wire_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        use cep_engine::wire::{VERSION, decode, encode};
        let mut framed = vec![b'V', b'G', VERSION];
        framed.extend_from_slice(&bytes);
        for input in [&bytes[..], &framed[..]] {
            if let Ok(msg) = decode(input) {
                let again = encode(&msg);
                let back = decode(&again).expect("re-encoded message decodes");
                prop_assert_eq!(encode(&back), again);
            }
        }
    }
}

/// Feeds `evs` the way a node does with several inputs: events arrive
/// partition by partition in the order `picks` interleaves them, each pushed
/// held behind the gateway clock (the minimum over partitions of their newest
/// `ts`), so events of the partitions ahead wait in the reorder buffer. With
/// `cut`, the engine is snapshotted to bytes and restored after that many
/// events.
fn run_partitioned(evs: &[Event], picks: &[u8], cut: Option<usize>) -> Vec<String> {
    const P: usize = 3;
    let mut queues: Vec<std::collections::VecDeque<Event>> = vec![Default::default(); P];
    for (i, ev) in evs.iter().enumerate() {
        queues[(i * 7 + ev.fields.len()) % P].push_back(ev.clone());
    }
    let mut newest = [i64::MIN; P];
    let clock = |newest: &[i64; P]| newest.iter().copied().min().unwrap_or(i64::MIN);
    let mut e = Engine::new(rules(), EngineConfig::default());
    let mut out = vec![];
    let mut n = 0;
    let mut k = 0;
    while queues.iter().any(|q| !q.is_empty()) {
        let mut p = picks[k % picks.len()] as usize % P;
        k += 1;
        while queues[p].is_empty() {
            p = (p + 1) % P;
        }
        let Some(ev) = queues[p].pop_front() else {
            break;
        };
        let before = clock(&newest);
        if before != i64::MIN {
            e.advance_to(before);
        }
        newest[p] = newest[p].max(ev.ts);
        e.push_held(ev, cep_engine::Route::All);
        let after = clock(&newest);
        if after != i64::MIN {
            e.advance_to(after);
        }
        out.extend(e.drain_alerts().iter().map(key));
        n += 1;
        if cut == Some(n) {
            let bytes = e.snapshot().to_bytes();
            let snap = cep_engine::Snapshot::from_bytes(&bytes).expect("snapshot deserialises");
            e = Engine::restore(rules(), EngineConfig::default(), &[], snap);
        }
    }
    e.advance_to(i64::MAX);
    out.extend(e.drain_alerts().iter().map(key));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn snapshot_restore_with_a_full_reorder_buffer(evs in events(), gaps in prop::collection::vec(any::<u16>(), 1..8), picks in prop::collection::vec(any::<u8>(), 1..16), at in any::<prop::sample::Index>()) {
        let evs = stamp(&evs, &gaps);
        let whole = run_partitioned(&evs, &picks, None);
        let cut = at.index(evs.len() + 1);
        prop_assert_eq!(whole, run_partitioned(&evs, &picks, Some(cut)));
    }
}

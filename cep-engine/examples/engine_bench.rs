//! Engine throughput on pre-decoded events: the figure `benches/engine.sh`
//! sets against the hand-written floor.
//!
//! Usage: `engine_bench EVENTS.jsonl RULES.vgl [RULES.vgl…]` (events from
//! `vigil-replay gen`). Decoding happens before timing; each rule file runs
//! three times on a fresh engine over a fresh copy of the events, and the
//! best time is printed with the number of matches (which must equal the
//! floor's result for W1, the alerts for W2).
//!
//! Run: `cargo run --release -p cep-engine --example engine_bench -- gen.jsonl benches/w1.vgl`

mod common;

use cep_engine::{Engine, EngineConfig};

/// The allocator the shipped binaries use (gateway, vigil-node, vigil-replay).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

fn main() {
    let (events, files) = common::events_and_rules("engine_bench");
    for file in &files {
        let rules = common::rules(file);
        let evs = common::decoded(&rules, &events);
        let mut best = f64::MAX;
        let (mut matches, mut alerts) = (0, 0);
        for _ in 0..3 {
            let batch = evs.clone();
            let t = Instant::now();
            let mut e = Engine::new(rules.clone(), EngineConfig::default());
            for ev in batch {
                e.push(ev);
            }
            e.finish(false);
            best = best.min(t.elapsed().as_secs_f64());
            matches = e.metrics().matches.values().sum::<u64>();
            alerts = e.metrics().alerts.values().sum::<u64>();
            drop(e);
        }
        println!(
            "engine {file}: {} events, best of 3 {best:.3} s, {:.0} events/s, matches {matches}, alerts {alerts}",
            evs.len(),
            evs.len() as f64 / best
        );
    }
}

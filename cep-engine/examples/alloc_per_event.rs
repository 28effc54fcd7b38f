//! Heap allocations per event in steady state: the engine runs the first
//! half of the events (warm-up: keys seen, tables grown), then the
//! allocations of the second half are counted and divided by its events.
//! Counted by an instrumented system allocator (`stats_alloc`), so this is
//! its own binary and `engine_bench` times an uninstrumented one.
//!
//! Usage: `alloc_per_event EVENTS.jsonl RULES.vgl [RULES.vgl…]`

mod common;

use cep_engine::{Engine, EngineConfig};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    let (events, files) = common::events_and_rules("alloc_per_event");
    for file in &files {
        let rules = common::rules(file);
        let mut evs = common::decoded(&rules, &events);
        let second = evs.split_off(evs.len() / 2);
        let mut e = Engine::new(rules.clone(), EngineConfig::default());
        for ev in evs {
            e.push(ev);
        }
        e.drain_alerts();
        let n = second.len();
        let region = Region::new(GLOBAL);
        for ev in second {
            e.push(ev);
        }
        let stats = region.change();
        drop(e.drain_alerts());
        println!(
            "allocations {file}: {:.2} per event in steady state ({} allocations, {} reallocations over {n} events)",
            (stats.allocations + stats.reallocations) as f64 / n as f64,
            stats.allocations,
            stats.reallocations
        );
    }
}

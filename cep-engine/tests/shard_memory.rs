//! A node's memory for per-deploy data does not grow with its live shards:
//! the prepared program (rules, type tables, compiled regexes, identities) is
//! built once per deploy and shared by every shard's engine. Measured in
//! heap bytes (an instrumented allocator), so the figure is exact, not a
//! timing.

use cep_engine::node::{Node, NodeOptions, NodeStatus};
use cep_engine::shard::{SHARDS, shard_of};
use cep_engine::wire::{Batch, Deploy, Hello, Msg, Routed};
use cep_engine::{Event, Key, Route, Value};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// 40 rules, each with its own regex, over one event type.
fn rules(within_s: u32) -> String {
    let mut t = String::from("event A { k: string, x: int, note: string }\n");
    for i in 0..40 {
        t.push_str(&format!(
            "rule r{i} {{\n  key k\n  pattern a: A[note =~ \"^(alpha|beta|gamma){i}[a-z]{{2,8}}$\"] -> b: A[x > a.x + {i}]\n  within {within_s}s\n}}\n"
        ));
    }
    t
}

fn deploy(n: &mut Node, version: u64, text: &str) {
    let r = n.handle(
        b"gw",
        Msg::Deploy(Deploy {
            version,
            files: vec![("r.vgl".into(), text.into())],
            rules: (0..40).map(|i| (format!("r{i}"), 1, false)).collect(),
        }),
    );
    assert!(
        matches!(&r[..], [Msg::DeployAck(a)] if a.error.is_none()),
        "{r:?}"
    );
}

/// One event (one key with one open run) on each of `shards` shards.
fn fill(n: &mut Node, shards: usize) {
    let mut seen = std::collections::HashSet::new();
    let mut events = vec![];
    let mut i = 0u64;
    while seen.len() < shards {
        let k = format!("k{i}");
        i += 1;
        let shard = shard_of(&Key::Str(Arc::from(k.as_str())));
        if !seen.insert(shard) {
            continue;
        }
        let seq = events.len() as u64 + 1;
        events.push(Routed {
            seq,
            shard,
            route: Route::Key(0),
            clock: seq as i64,
            event: Event {
                ty: 0,
                ts: seq as i64,
                id: Arc::from(format!("e{seq}").as_str()),
                fields: vec![
                    Value::Str(Arc::from(k.as_str())),
                    Value::Int(1),
                    Value::Str(Arc::from("alpha0xyz")),
                ]
                .into_boxed_slice(),
                seq: 0,
            },
        });
    }
    let clock = events.len() as i64;
    n.handle(
        b"gw",
        Msg::Events(Batch {
            rules_version: 1,
            events,
            clock,
        }),
    );
}

/// Heap bytes a node holds once `shards` shards went live, and again after
/// a redeploy of changed rules (every shard switches program and its rules
/// start fresh).
fn node_bytes(shards: usize) -> (i64, i64) {
    let held = |r: &Region<System>| {
        let s = r.change();
        s.bytes_allocated as i64 + s.bytes_reallocated as i64 - s.bytes_deallocated as i64
    };
    let region = Region::new(GLOBAL);
    let mut n = Node::new(NodeOptions::default(), Arc::new(NodeStatus::default()));
    n.handle(
        b"gw",
        Msg::Hello(Hello {
            gateway: 1,
            node_index: 0,
            shards: (0..SHARDS).collect(),
            lateness_ms: 0,
            max_runs_per_key: 100,
        }),
    );
    deploy(&mut n, 1, &rules(60));
    fill(&mut n, shards);
    let live = held(&region);
    deploy(&mut n, 2, &rules(61));
    let redeployed = held(&region);
    drop(n);
    (live, redeployed)
}

#[test]
fn a_node_with_1024_live_shards_holds_at_most_twice_the_memory_of_one_with_16() {
    let (few, few_after) = node_bytes(16);
    let (many, many_after) = node_bytes(SHARDS as usize);
    eprintln!(
        "node heap with 16 / 1024 live shards: {few} / {many} bytes; after a redeploy {few_after} / {many_after}"
    );
    for (what, few, many) in [
        ("shards live", few, many),
        ("after a redeploy", few_after, many_after),
    ] {
        assert!(
            many <= 2 * few,
            "{what}: 1024 live shards hold {many} bytes, 16 hold {few}: per-deploy data grows with the shards"
        );
    }
}

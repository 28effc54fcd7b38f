//! What a deploy costs a node with few and with many live shards: the time
//! of a redeploy (every shard engine switches to the new rule set) and the
//! node's heap (exact bytes from an instrumented allocator: a resident set
//! measured twice in one process mostly shows the allocator reusing the
//! first node's memory), with 16 and with 1,024 live shards. Per-deploy
//! data (type tables, compiled regexes, rule identities) is shared by all
//! shards, so neither should grow with the shard count beyond the shards'
//! own state.
//!
//! Run: `cargo run --release -p cep-engine --example deploy_cost`

mod common;

use cep_engine::node::{Node, NodeOptions, NodeStatus};
use cep_engine::shard::{SHARDS, shard_of};
use cep_engine::wire::{Batch, Deploy, Hello, Msg, Routed};
use cep_engine::{Event, Key, Route, Value};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::sync::Arc;
use std::time::Instant;

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

fn deploy(n: &mut Node, version: u64, text: &str) -> f64 {
    let t = Instant::now();
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
    t.elapsed().as_secs_f64() * 1e3
}

/// One event on each of `shards` distinct shards.
fn fill(n: &mut Node, shards: usize) {
    let mut seen = std::collections::HashSet::new();
    let mut events = vec![];
    let mut i = 0u64;
    while seen.len() < shards {
        let k = format!("k{i}");
        let shard = shard_of(&Key::Str(Arc::from(k.as_str())));
        i += 1;
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

fn main() {
    for shards in [16, SHARDS as usize] {
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
        let s = region.change();
        let live_kb = (s.bytes_allocated as i64 + s.bytes_reallocated as i64
            - s.bytes_deallocated as i64)
            / 1024;
        // Best of 5 redeploys, alternating two texts so each one changes.
        let best = (0..5)
            .map(|v| deploy(&mut n, 2 + v, &rules(61 + v as u32)))
            .fold(f64::MAX, f64::min);
        println!(
            "{shards} live shards: redeploy of 40 rules {best:.2} ms; node heap {live_kb} kB after the shards went live"
        );
    }
}

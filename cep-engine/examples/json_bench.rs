//! The JSON parsers side by side on our schema-directed decoder: the same
//! `Decoder` (typed slots, the same refusals) driven by serde_json (what the
//! engine uses), simd-json and sonic-rs through their serde deserializers,
//! over `vigil-replay gen` lines. Prints events/s per parser (best of 3) and
//! checks that all three decode the same events.
//!
//! Usage: `json_bench EVENTS.jsonl RULES.vgl`

mod common;

use cep_engine::{Decoder, Event, Rejection};
use std::time::Instant;

fn best_of_3(
    name: &str,
    lines: &[Vec<u8>],
    mut decode: impl FnMut(&[u8]) -> Result<Event, Rejection>,
) -> Vec<Event> {
    let mut best = f64::MAX;
    let mut out = vec![];
    for _ in 0..3 {
        let t = Instant::now();
        out = lines
            .iter()
            .map(|l| decode(l).unwrap_or_else(|r| panic!("{name}: {} {}", r.reason, r.detail)))
            .collect();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "json {name}: {} events, best of 3 {best:.3} s, {:.0} events/s",
        lines.len(),
        lines.len() as f64 / best
    );
    out
}

fn main() {
    let (events, files) = common::events_and_rules("json_bench");
    let Some(file) = files.first() else {
        eprintln!("usage: json_bench EVENTS.jsonl RULES.vgl");
        std::process::exit(2);
    };
    let rules = common::rules(file);
    let decoder = Decoder::new(&rules);
    let lines: Vec<Vec<u8>> = std::fs::read_to_string(&events)
        .unwrap_or_else(|e| panic!("{events}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let id = || String::from("no-id");
    let a = best_of_3("serde_json", &lines, |l| decoder.decode(l, id));
    let b = best_of_3("sonic-rs", &lines, |l| {
        decoder.decode_with(&mut sonic_rs::Deserializer::from_slice(l), id)
    });
    // simd-json parses in place: a copy of the line per event, as a reader
    // that reuses its buffer would not need (counted here, it is small).
    let mut scratch = Vec::new();
    let c = best_of_3("simd-json", &lines, |l| {
        scratch.clear();
        scratch.extend_from_slice(l);
        let mut de = simd_json::Deserializer::from_slice(&mut scratch)
            .map_err(|e| Rejection::new("malformed_json", e.to_string()))?;
        decoder.decode_with(&mut de, id)
    });
    assert!(a == b && a == c, "the three parsers decode the same events");
}

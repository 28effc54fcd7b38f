//! Shared by the engine benchmark examples: their command line, reading
//! `vigil-replay gen` output and decoding it before anything is timed, and
//! the process's resident set. Each example uses part of it.
#![allow(dead_code)]

use cep_engine::{Decoder, Event, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The rule set in `path`, compiled.
pub fn rules(path: &str) -> Arc<rule_lang::RuleSet> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    Arc::new(rule_lang::compile_str(path, &text).unwrap_or_else(|e| panic!("{path}: {e:?}")))
}

/// Every line of `path` decoded for `rules`, the key strings interned (one
/// shared copy per card, as the node's decoder keeps them).
pub fn decoded(rules: &rule_lang::RuleSet, path: &str) -> Vec<Event> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let d = Decoder::new(rules);
    let mut keys: HashMap<Arc<str>, Arc<str>> = HashMap::new();
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let mut e = d
                .decode(l.as_bytes(), || format!("line-{i}"))
                .unwrap_or_else(|r| panic!("line {}: {r:?}", i + 1));
            for f in e.fields.iter_mut() {
                if let Value::Str(s) = f {
                    *s = keys.entry(s.clone()).or_insert_with(|| s.clone()).clone();
                }
            }
            e
        })
        .collect()
}

/// `EXAMPLE EVENTS.jsonl RULES.vgl [RULES.vgl…]`: the events file and the
/// rule files; exits with the usage line otherwise.
pub fn events_and_rules(example: &str) -> (String, Vec<String>) {
    let mut args = std::env::args().skip(1);
    match (args.next(), args.collect::<Vec<_>>()) {
        (Some(events), files) if !files.is_empty() => (events, files),
        _ => {
            eprintln!("usage: {example} EVENTS.jsonl RULES.vgl [RULES.vgl...]");
            std::process::exit(2);
        }
    }
}

/// The resident set of this process, in kB (0 if unknown).
pub fn rss_kb() -> u64 {
    status_kb("VmRSS:")
}

/// The peak resident set of this process, in kB (0 if unknown).
pub fn peak_rss_kb() -> u64 {
    status_kb("VmHWM:")
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

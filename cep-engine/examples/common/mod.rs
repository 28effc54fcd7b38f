//! Shared by the engine benchmark examples: reading `vigil-replay gen`
//! output and decoding it before anything is timed.

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

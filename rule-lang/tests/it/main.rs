//! Integration tests of the rule language: one test binary, one module per area.
//!
//! Test inputs live in `tests/data/` (rule files, one per case) and expected
//! outputs in `tests/it/snapshots/` (insta). To re-record snapshots after a
//! deliberate change: `INSTA_UPDATE=always cargo test -p rule-lang --test it`,
//! then review the diff before committing.

mod common;
mod constructs;
mod diagnostics;
mod five_mistakes;
mod outline;
mod parsing;
mod robustness;
mod rule_library;
mod spec_examples;

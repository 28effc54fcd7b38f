//! Compiles arbitrary UTF-8 text as a rule set: it must return a program or
//! diagnostics, never panic, overflow the stack or hang.
//!
//! Run from the workspace root (needs a nightly toolchain and cargo-fuzz):
//!
//! ```sh
//! cargo +nightly fuzz run parse_rules fuzz/seeds/parse_rules
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match rule_lang::compile_str("fuzz.vgl", text) {
        Ok(set) => {
            for rule in &set.rules {
                let _ = set.dump_rule(rule);
            }
            // The program is plain data: it survives serialisation.
            let _ = serde_json::to_string(&set);
        }
        Err(diagnostics) => {
            assert!(diagnostics.has_errors());
            let _ = diagnostics.render(false);
            let _ = diagnostics.to_json();
        }
    }
});

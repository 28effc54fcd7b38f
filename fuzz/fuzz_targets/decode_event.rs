//! Decodes arbitrary bytes as a JSON event against the rule library's schemas
//! (`rules/events.vgl`): it must return an event or a rejection with a stable
//! reason, never panic; an accepted event has one slot per declared field of
//! its type, and decoding is deterministic.
//!
//! ```sh
//! cargo fuzz run -s none -O --debug-assertions decode_event fuzz/corpus/decode_event
//! ```
#![no_main]

use cep_engine::Decoder;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn decoder() -> &'static Decoder {
    static DECODER: OnceLock<Decoder> = OnceLock::new();
    DECODER.get_or_init(|| {
        let set = rule_lang::compile_str("events.vgl", include_str!("../../rules/events.vgl"))
            .expect("the library's schemas compile");
        Decoder::new(&set)
    })
}

fuzz_target!(|bytes: &[u8]| {
    let dec = decoder();
    match dec.decode(bytes, || "fuzz:1".to_string()) {
        Ok(ev) => {
            let schema = &dec.schemas()[ev.ty as usize];
            assert_eq!(ev.fields.len(), schema.fields.len(), "one slot per field");
            let again = dec.decode(bytes, || "fuzz:1".to_string());
            assert_eq!(again.map(|e| (e.ty, e.ts)).ok(), Some((ev.ty, ev.ts)));
        }
        Err(r) => {
            assert!(!r.reason.is_empty());
            // Stable snake_case reasons (`invalid_utf8` has a digit).
            assert!(
                r.reason
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
        }
    }
});

//! Decodes arbitrary bytes as a gateway ↔ node wire message: it must return a
//! message or an error, never panic or allocate beyond the input; and whatever
//! decodes must encode back to bytes that decode to the same message.
//!
//! ```sh
//! cargo +nightly fuzz run wire_decode
//! ```
#![no_main]

use cep_engine::wire::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(msg) = decode(bytes) {
        let again = encode(&msg);
        let back = decode(&again).expect("re-encoded message decodes");
        // Compare encodings: NaN floats are not equal to themselves.
        assert_eq!(encode(&back), again);
    }
});

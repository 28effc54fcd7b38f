//! The Vigil gateway as a library: the router thread, the rule registry, the
//! status shared with HTTP, the store and the HTTP API. `main.rs` wires them
//! into the `vigil-gateway` binary; tests drive them directly.
#![forbid(unsafe_code)]

pub mod api;
pub mod backtest;
pub mod catalog;
pub mod clock;
pub mod http;
pub mod kafka;
pub mod router;
pub mod rules;
pub mod sample;
pub mod ssrf;
pub mod status;
pub mod store;
pub mod system;
pub mod webhooks;
pub mod zmq_ingest;

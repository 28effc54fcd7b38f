//! The Vigil matching engine: compiled rules ([`rule_lang::RuleSet`]) run over
//! typed events per (rule, key), in event time, producing alerts.
//!
//! No I/O, no async, no wall clock: see [`engine::Engine`]. Events are decoded
//! once at the edge by [`decode::Decoder`].
#![forbid(unsafe_code)]

pub mod alert;
pub mod decode;
pub mod engine;
pub mod eval;
#[cfg(feature = "node")]
pub mod node;
pub mod parallel;
pub mod pattern;
pub mod shard;
pub mod time;
pub mod value;
pub mod window;
pub mod wire;

pub use alert::Alert;
pub use decode::{Decoder, Rejection};
pub use engine::{Deployment, Engine, EngineConfig, Metrics, Program, Route, Snapshot};
pub use parallel::Parallel;
pub use value::{Event, Key, Value};

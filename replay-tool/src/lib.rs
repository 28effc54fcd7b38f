//! The library behind `vigil-replay`: replay recorded events through the same
//! engine the nodes run. The binary (`main.rs`) is a thin clap front end.
#![forbid(unsafe_code)]

pub mod library;
pub mod load;
pub mod produce;
pub mod replay;

pub use replay::{Replay, ReplayOpts, replay};

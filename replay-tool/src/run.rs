//! Replay commands (filled in with the engine).
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct RunArgs {}
#[derive(Args)]
pub struct ScoreArgs {}
#[derive(Args)]
pub struct DiffArgs {}
#[derive(Args)]
pub struct GenArgs {}

pub fn run(_: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
pub fn score(_: ScoreArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
pub fn diff(_: DiffArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
pub fn gen_events(_: GenArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}

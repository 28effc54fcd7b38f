//! `vigil-gateway`: the HTTP API, ingestion, shard router and alert fan-out.
//!
//! Today it loads and checks the rule set it would serve; the cluster (engine
//! nodes over ZeroMQ, HTTP API) is the next milestone — see README.md.
#![forbid(unsafe_code)]

use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// The Vigil gateway.
#[derive(Parser)]
#[command(name = "vigil-gateway", version, about)]
struct Cli {
    /// Rule files or directory to load.
    #[arg(long, default_value = "rules/")]
    rules: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let compiled = match rule_lang::load_paths(std::slice::from_ref(&cli.rules)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    eprint!(
        "{}",
        compiled.diagnostics.render(std::io::stderr().is_terminal())
    );
    let Some(program) = compiled.program else {
        return ExitCode::from(1);
    };
    println!(
        "vigil-gateway: {} rules over {} event types loaded from {}",
        program.rules.len(),
        program.schemas.len(),
        cli.rules.display()
    );
    println!(
        "engine coming: the running cluster (HTTP, ZeroMQ, nodes) lands with the next milestone."
    );
    println!(
        "Meanwhile, replay events offline: cargo run --release -p vigil-replay -- run --rules rules/ --events <file.jsonl>"
    );
    ExitCode::SUCCESS
}

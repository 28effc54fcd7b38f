//! `vigil-replay`: check rules, explain their compiled form, replay recorded
//! events through the engine, score and diff rule sets.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use vigil_replay::replay as run;

/// Decoded events live for a round and are freed on other threads: glibc
/// malloc spends a fifth of a replay consolidating its free lists there.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Check, explain and replay Vigil rules over recorded events.
#[derive(Parser)]
#[command(name = "vigil-replay", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile rule files or directories and print every diagnostic.
    ///
    /// Exits 1 when there is at least one error, 0 otherwise (warnings allowed).
    Check {
        /// `.vgl` files or directories (searched recursively), loaded as one rule set.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the compiled NFA program of one rule, one point per line.
    Explain {
        /// A `.vgl` file or directory holding the rule and its event types.
        path: PathBuf,
        /// The rule's name.
        rule: String,
        /// Print the program as JSON instead of the text dump.
        #[arg(long)]
        json: bool,
    },
    /// Replay recorded events through the rules and print the alerts as JSONL.
    Run(run::RunArgs),
    /// Precision, recall and F1 per rule against labelled events or keys.
    Score(run::ScoreArgs),
    /// Alerts only in one rule set, only in the other, and in both.
    Diff(run::DiffArgs),
    /// Write a deterministic synthetic workload (JSONL) for benchmarks.
    Gen(run::GenArgs),
    /// Push events at a running gateway over ZeroMQ at a target rate; report
    /// throughput and ingest-to-alert latency percentiles.
    Load(vigil_replay::load::LoadArgs),
    /// Write events to a Kafka topic (keyed by card_id, else device_id) and
    /// report messages/s.
    Produce(vigil_replay::produce::ProduceArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { paths, format } => check(&paths, format),
        Command::Explain { path, rule, json } => explain(path, &rule, json),
        Command::Run(a) => run::run(a),
        Command::Score(a) => run::score(a),
        Command::Diff(a) => run::diff(a),
        Command::Gen(a) => run::gen_events(a),
        Command::Load(a) => vigil_replay::load::load(a),
        Command::Produce(a) => vigil_replay::produce::produce(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check(paths: &[PathBuf], format: Format) -> anyhow::Result<ExitCode> {
    let compiled = rule_lang::load_paths(paths)?;
    let d = &compiled.diagnostics;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&d.to_json())?),
        Format::Text => {
            eprint!("{}", d.render(std::io::stderr().is_terminal()));
            let errors = d.errors().count();
            let warnings = d.items.len() - errors;
            match &compiled.program {
                Some(p) => eprintln!(
                    "ok: {} rule(s), {} event type(s), {warnings} warning(s)",
                    p.rules.len(),
                    p.schemas.len()
                ),
                None => eprintln!("{errors} error(s), {warnings} warning(s)"),
            }
        }
    }
    Ok(if d.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn explain(path: PathBuf, rule: &str, json: bool) -> anyhow::Result<ExitCode> {
    let compiled = rule_lang::load_paths(&[path])?;
    let Some(program) = compiled.program else {
        eprint!(
            "{}",
            compiled.diagnostics.render(std::io::stderr().is_terminal())
        );
        return Ok(ExitCode::from(1));
    };
    let Some(r) = program.rule(rule) else {
        let names: Vec<&str> = program.rules.iter().map(|r| r.name.as_str()).collect();
        anyhow::bail!("no rule `{rule}` here (rules: {})", names.join(", "));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print!("{}", program.dump_rule(r));
    }
    Ok(ExitCode::SUCCESS)
}

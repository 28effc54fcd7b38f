//! `vigil-node`: one engine node. A gateway connects to it, tells it which
//! virtual shards it owns, deploys rules and streams events; the node matches
//! them and sends alerts back. See `docs/protocol.md` and `docs/operations.md`.
//!
//! Settings are layered: built-in defaults, then `--config FILE` (TOML), then
//! `VIGIL_NODE_*` environment variables, then flags.
#![forbid(unsafe_code)]

use anyhow::Context;

/// Events are freed on the node's thread in bulk as runs and windows end:
/// mimalloc, as the other binaries (see `gateway/src/main.rs`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use cep_engine::node::{NodeOptions, NodeStatus, serve};
use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::info;

#[derive(Parser, Debug)]
#[command(name = "vigil-node", version, about = "A Vigil engine node")]
struct Cli {
    /// TOML file with any of the settings below (flags and env win over it).
    #[arg(long, env = "VIGIL_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// Endpoint the gateway connects to (tcp://HOST:PORT or ipc://PATH).
    #[arg(long, env = "VIGIL_NODE_BIND")]
    bind: Option<String>,
    /// Name used in logs and metrics.
    #[arg(long, env = "VIGIL_NODE_NAME")]
    name: Option<String>,
    /// Address of the node's own HTTP endpoint (/healthz, /metrics); "off" disables.
    #[arg(long, env = "VIGIL_NODE_HTTP")]
    http: Option<String>,
    /// Event copies the gateway may have in flight to this node.
    #[arg(long, env = "VIGIL_NODE_CREDIT_WINDOW")]
    credit_window: Option<u32>,
    /// Partial matches the node may hold across all its shards.
    #[arg(long, env = "VIGIL_NODE_MAX_RUNS")]
    max_runs: Option<usize>,
    /// Events one partial match may hold; a run that reaches it without
    /// completing is dropped and counted (default 1000).
    #[arg(long, env = "VIGIL_NODE_MAX_RUN_EVENTS")]
    max_run_events: Option<usize>,
    /// Largest message accepted from the gateway, bytes.
    #[arg(long, env = "VIGIL_NODE_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<i64>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `cep_engine=debug`.
    #[arg(long, env = "VIGIL_NODE_LOG")]
    log: Option<String>,
}

/// The same settings, as read from `--config`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<String>,
    name: Option<String>,
    http: Option<String>,
    credit_window: Option<u32>,
    max_runs: Option<usize>,
    max_run_events: Option<usize>,
    max_message_bytes: Option<i64>,
    log: Option<String>,
}

struct Settings {
    node: NodeOptions,
    http: Option<SocketAddr>,
    log: String,
}

fn settings(cli: Cli) -> anyhow::Result<Settings> {
    let file: FileConfig = match &cli.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let d = NodeOptions::default();
    let node = NodeOptions {
        name: cli.name.or(file.name).unwrap_or(d.name),
        bind: cli.bind.or(file.bind).unwrap_or(d.bind),
        credit_window: cli
            .credit_window
            .or(file.credit_window)
            .unwrap_or(d.credit_window),
        max_runs: cli.max_runs.or(file.max_runs).unwrap_or(d.max_runs),
        max_run_events: cli
            .max_run_events
            .or(file.max_run_events)
            .unwrap_or(d.max_run_events)
            .max(1),
        max_message_bytes: cli
            .max_message_bytes
            .or(file.max_message_bytes)
            .unwrap_or(d.max_message_bytes),
        advance_every: d.advance_every,
    };
    let http = match cli
        .http
        .or(file.http)
        .unwrap_or_else(|| "127.0.0.1:7720".into())
    {
        s if s == "off" => None,
        s => Some(
            s.parse()
                .with_context(|| format!("--http {s}: expected HOST:PORT or off"))?,
        ),
    };
    Ok(Settings {
        node,
        http,
        log: cli.log.or(file.log).unwrap_or_else(|| "info".into()),
    })
}

fn main() -> anyhow::Result<()> {
    let s = settings(Cli::parse())?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&s.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let status = Arc::new(NodeStatus::default());
    let shutdown = Arc::new(AtomicBool::new(false));

    // Signals and the HTTP endpoint run on a small runtime beside the engine loop.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("node-io")
        .enable_all()
        .build()?;
    let name = s.node.name.clone();
    if let Some(addr) = s.http {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("binding HTTP {addr}"))?;
        let app = http_app(status.clone(), name.clone());
        info!(node = %name, %addr, "node HTTP: /healthz /metrics");
        rt.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "node HTTP server stopped");
            }
        });
    }
    {
        let shutdown = shutdown.clone();
        rt.spawn(async move {
            wait_for_signal().await;
            info!("signal received: draining");
            shutdown.store(true, Ordering::Relaxed);
        });
    }
    let ctx = zmq::Context::new();
    let result = serve(&ctx, s.node, status, shutdown);
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn http_app(status: Arc<NodeStatus>, name: String) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    let health = status.clone();
    axum::Router::new()
        .route(
            "/healthz",
            get(move || {
                let st = health.clone();
                async move {
                    if st.connected.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ok: gateway connected\n")
                    } else {
                        (StatusCode::OK, "ok: waiting for a gateway\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let st = status.clone();
                let name = name.clone();
                async move { st.prometheus(&name) }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() -> anyhow::Result<()> {
        let file = std::env::temp_dir().join(format!("vigil-node-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            "bind = \"tcp://127.0.0.1:9999\"\nname = \"from-file\"\ncredit_window = 7\n",
        )?;
        let cli = Cli::parse_from([
            "vigil-node",
            "--config",
            file.to_str().unwrap_or_default(),
            "--name",
            "from-flag",
            "--http",
            "off",
        ]);
        let s = settings(cli)?;
        assert_eq!(s.node.name, "from-flag");
        assert_eq!(s.node.bind, "tcp://127.0.0.1:9999");
        assert_eq!(s.node.credit_window, 7);
        assert_eq!(s.node.max_runs, NodeOptions::default().max_runs);
        assert!(s.http.is_none());
        std::fs::write(&file, "bogus = 1\n")?;
        let cli = Cli::parse_from(["vigil-node", "--config", file.to_str().unwrap_or_default()]);
        assert!(settings(cli).is_err(), "unknown settings are refused");
        std::fs::remove_file(&file)?;
        Ok(())
    }

    #[test]
    fn max_run_events_from_file_and_flag() -> anyhow::Result<()> {
        let cli = Cli::parse_from(["vigil-node", "--http", "off"]);
        assert_eq!(settings(cli)?.node.max_run_events, 1_000);
        let file = std::env::temp_dir().join(format!("vigil-node-mre-{}.toml", std::process::id()));
        std::fs::write(&file, "max_run_events = 200\n")?;
        let path = file.to_str().unwrap_or_default();
        let cli = Cli::parse_from(["vigil-node", "--config", path]);
        assert_eq!(settings(cli)?.node.max_run_events, 200);
        let cli = Cli::parse_from(["vigil-node", "--config", path, "--max-run-events", "50"]);
        assert_eq!(settings(cli)?.node.max_run_events, 50);
        std::fs::remove_file(&file)?;
        Ok(())
    }
}

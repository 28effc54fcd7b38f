//! `vigil-gateway`: ingestion, the shard router, alert fan-out and the
//! operations endpoints. With no flags it runs the whole system in one process:
//! the gateway plus two engine nodes, connected over ZeroMQ (inproc).
//!
//! Threads: the router (every ZeroMQ socket, see `router.rs`), one per
//! in-process node, and a small tokio runtime for HTTP and signals.
#![forbid(unsafe_code)]

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use cep_engine::node::{NodeOptions, NodeStatus};
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;
use tracing::{error, info};
use vigil_gateway::router::{Command, Router, RouterConfig};
use vigil_gateway::rules::Registry;
use vigil_gateway::status::Status;

/// The Vigil gateway.
#[derive(Parser, Debug)]
#[command(name = "vigil-gateway", version, about)]
struct Cli {
    /// Rule files or directory to load (SIGHUP reloads them).
    #[arg(long, default_value = "rules/", env = "VIGIL_RULES")]
    rules: PathBuf,
    /// Where the embedded store keeps its files (used by the HTTP API milestone).
    #[arg(long, default_value = "./vigil-data", env = "VIGIL_DATA_DIR")]
    data_dir: PathBuf,
    /// HTTP address: /healthz, /readyz, /metrics, /v1/cluster.
    #[arg(long, default_value = "127.0.0.1:7700", env = "VIGIL_HTTP")]
    http: String,
    /// ZeroMQ PULL ingest (one JSON event per frame, or a multipart batch).
    #[arg(long, default_value = "tcp://127.0.0.1:7701", env = "VIGIL_ZMQ_PULL")]
    zmq_pull: String,
    /// ZeroMQ ROUTER ingest: every batch is acknowledged.
    #[arg(long, default_value = "tcp://127.0.0.1:7702", env = "VIGIL_ZMQ_ROUTER")]
    zmq_router: String,
    /// ZeroMQ PUB for alerts, topic `alert.<severity>.<rule>`.
    #[arg(long, default_value = "tcp://127.0.0.1:7703", env = "VIGIL_ZMQ_PUB")]
    zmq_pub: String,
    /// In-process engine nodes (ignored when --node is given).
    #[arg(long, default_value_t = 2, env = "VIGIL_NODES")]
    nodes: usize,
    /// External `vigil-node` endpoint (repeatable); replaces in-process nodes.
    #[arg(long = "node")]
    node: Vec<String>,
    /// Allowed lateness: events up to this much older than the newest are reordered.
    #[arg(long, default_value = "0s", value_parser = duration_ms)]
    lateness: i64,
    /// Live mode: after this long without events, event time follows the wall clock ("0s" disables).
    #[arg(long, default_value = "5s", value_parser = duration_ms)]
    idle: i64,
    /// Event copies per batch message to a node.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Event copies queued at the gateway per node before ingest pauses (live node) or copies are shed (dead node).
    #[arg(long, default_value_t = 65_536)]
    pending_cap: usize,
    /// A node silent for this long is marked down.
    #[arg(long, default_value = "3s", value_parser = duration_ms)]
    node_timeout: i64,
    /// Partial matches per (rule, key) before the oldest is dropped.
    #[arg(long, default_value_t = 10_000)]
    max_runs_per_key: u32,
    /// Largest single event accepted, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_event_bytes: usize,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, default_value = "info", env = "VIGIL_LOG")]
    log: String,
}

fn duration_ms(s: &str) -> Result<i64, String> {
    rule_lang::parse_duration(s)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut registry = Registry::new(vec![cli.rules.clone()]);
    let bundle = registry.reload()?.context("the rule set is empty")?;
    let ctx = zmq::Context::new();

    // In-process nodes unless external ones are named.
    let node_stop = Arc::new(AtomicBool::new(false));
    let mut node_threads = vec![];
    let endpoints: Vec<String> = if cli.node.is_empty() {
        (0..cli.nodes.max(1))
            .map(|i| {
                let opts = NodeOptions {
                    name: format!("embedded-{i}"),
                    bind: format!("inproc://vigil-node-{i}"),
                    ..NodeOptions::default()
                };
                let bind = opts.bind.clone();
                let (ctx, stop) = (ctx.clone(), node_stop.clone());
                node_threads.push(std::thread::Builder::new().name(format!("node-{i}")).spawn(
                    move || {
                        if let Err(e) = cep_engine::node::serve(
                            &ctx,
                            opts,
                            Arc::new(NodeStatus::default()),
                            stop,
                        ) {
                            error!(error = %e, "in-process node failed");
                        }
                    },
                ));
                bind
            })
            .collect()
    } else {
        cli.node.clone()
    };
    // Let in-process nodes bind before the router connects.
    std::thread::sleep(Duration::from_millis(20));

    let status = Arc::new(Status::default());
    let router = Router::new(
        ctx.clone(),
        RouterConfig {
            nodes: endpoints.clone(),
            pull: Some(cli.zmq_pull.clone()),
            router: Some(cli.zmq_router.clone()),
            publish: Some(cli.zmq_pub.clone()),
            lateness_ms: cli.lateness,
            max_runs_per_key: cli.max_runs_per_key,
            batch_max: cli.batch.max(1),
            pending_cap: cli.pending_cap.max(cli.batch),
            node_timeout: Duration::from_millis(cli.node_timeout.max(100) as u64),
            idle_ms: cli.idle,
            max_event_bytes: cli.max_event_bytes,
            ..RouterConfig::default()
        },
        status.clone(),
    )?;
    let (tx, rx) = mpsc::channel();
    let rule_count = bundle.rules.len();
    let version = bundle.version;
    let _ = tx.send(Command::Deploy(bundle));
    let router_thread = std::thread::Builder::new()
        .name("router".into())
        .spawn(move || router.run(rx))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("gateway-io")
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&cli.http))
        .with_context(|| format!("binding HTTP {}", cli.http))?;
    let app = http_app(status.clone());
    rt.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "HTTP server stopped");
        }
    });

    println!(
        "Vigil gateway: {rule_count} rules (rule set v{version}) from {}",
        cli.rules.display()
    );
    if cli.node.is_empty() {
        println!(
            "  engine nodes: {} in-process (ZeroMQ inproc)",
            endpoints.len()
        );
    } else {
        println!("  engine nodes: {}", endpoints.join(", "));
    }
    println!(
        "  send events:  ZeroMQ PUSH   -> {}  (one JSON event per frame)",
        cli.zmq_pull
    );
    println!(
        "                ZeroMQ DEALER -> {}  (batches, each acknowledged)",
        cli.zmq_router
    );
    println!(
        "  alerts:       ZeroMQ SUB    <- {}  (topics alert.<severity>.<rule>)",
        cli.zmq_pub
    );
    println!(
        "  status:       http://{}/healthz  /readyz  /metrics  /v1/cluster",
        cli.http
    );
    println!(
        "  try it:       cargo run --release -p vigil-gateway --example zmq_client -- rules/tests/lib_card_testing/events.jsonl"
    );

    // Signals: SIGHUP reloads the rules, SIGINT/SIGTERM drain and stop.
    rt.block_on(async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut hup), Ok(mut term)) = (
                signal(SignalKind::hangup()),
                signal(SignalKind::terminate()),
            ) else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                    _ = hup.recv() => match registry.reload() {
                        Ok(Some(b)) => {
                            info!(version = b.version, "rules changed: deploying");
                            let _ = tx.send(Command::Deploy(b));
                        }
                        Ok(None) => info!("rules reloaded: nothing changed"),
                        Err(e) => error!("{e:#}"),
                    },
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    });
    info!("shutting down: draining queued events");
    let _ = tx.send(Command::Shutdown);
    let _ = router_thread.join();
    node_stop.store(true, Ordering::Relaxed);
    for t in node_threads.into_iter().flatten() {
        let _ = t.join();
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    info!("stopped");
    Ok(())
}

fn http_app(status: Arc<Status>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster))
        .with_state(status)
}

/// Liveness: 200 while the gateway runs; the body says which nodes are down.
async fn healthz(State(st): State<Arc<Status>>) -> impl IntoResponse {
    let nodes = st.nodes();
    let down: Vec<&str> = nodes
        .iter()
        .filter(|n| n.state != "up")
        .map(|n| n.name.as_str())
        .collect();
    Json(serde_json::json!({
        "status": if down.is_empty() { "ok" } else { "degraded" },
        "nodes_up": nodes.len() - down.len(),
        "nodes_not_up": down,
    }))
}

/// Readiness: 200 when every node is up on the current rule-set version.
async fn readyz(State(st): State<Arc<Status>>) -> impl IntoResponse {
    match st.ready() {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({"ready": true}))),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "reason": why})),
        ),
    }
}

async fn metrics(State(st): State<Arc<Status>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        st.prometheus(),
    )
}

async fn cluster(State(st): State<Arc<Status>>) -> impl IntoResponse {
    Json(st.cluster())
}

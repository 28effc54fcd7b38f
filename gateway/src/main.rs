//! `vigil-gateway`: the HTTP API, ingestion, the shard router, alert fan-out.
//! With no flags it runs the whole system in one process: the gateway plus two
//! engine nodes connected over ZeroMQ (inproc), rules and alerts in an embedded
//! store under `./vigil-data`.
//!
//! `vigil-gateway keys create|list|revoke` manages API keys offline.
#![forbid(unsafe_code)]

use anyhow::Context;

/// The router thread decodes events and the node threads free them: glibc
/// malloc handles that cross-thread pattern poorly (consolidation, arena
/// locks); mimalloc frees to the owning thread's list.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use tracing::{error, info};
use vigil_gateway::api::ApiConfig;
use vigil_gateway::router::RouterConfig;
use vigil_gateway::store::Role;
use vigil_gateway::system::{StoreConfig, System, SystemConfig};
use vigil_gateway::webhooks::{WebhookConfig, parse_schedule};

/// The Vigil gateway.
#[derive(Parser, Debug)]
#[command(name = "vigil-gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Manage API keys (the store must not be open by a running embedded gateway).
    Keys {
        #[command(subcommand)]
        action: KeyCmd,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Create a key; prints the secret, alone, on stdout.
    Create {
        #[arg(long)]
        name: String,
        /// viewer, analyst or admin.
        #[arg(long)]
        role: String,
    },
    /// List keys (name, role, created, revoked).
    List,
    /// Revoke a key by name.
    Revoke { name: String },
}

#[derive(Args, Debug)]
struct StoreArgs {
    /// Embedded store directory (the default store).
    #[arg(
        long,
        default_value = "./vigil-data",
        env = "VIGIL_DATA_DIR",
        global = true
    )]
    data_dir: PathBuf,
    /// Use Redis instead of the embedded store (rules, lists, keys, alerts shared by gateways).
    #[arg(long, env = "VIGIL_REDIS", global = true)]
    redis: Option<String>,
    /// Key prefix in Redis.
    #[arg(
        long,
        default_value = "vigil",
        env = "VIGIL_REDIS_NAMESPACE",
        global = true
    )]
    redis_namespace: String,
}

impl StoreArgs {
    fn config(&self) -> StoreConfig {
        match &self.redis {
            Some(url) => StoreConfig::Redis {
                url: url.clone(),
                namespace: self.redis_namespace.clone(),
            },
            None => StoreConfig::Embedded(self.data_dir.clone()),
        }
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Rule files imported into an empty store; SIGHUP re-imports changed rules.
    #[arg(long, default_value = "rules/", env = "VIGIL_RULES")]
    rules: PathBuf,
    /// HTTP address: the API under /v1, /healthz, /readyz, /metrics.
    #[arg(long, default_value = "127.0.0.1:7700", env = "VIGIL_HTTP")]
    http: String,
    /// Operations listener: `/metrics`, `/v1/cluster`, `/healthz` and `/readyz`
    /// without an API key, for a Prometheus scraper on a private interface.
    /// Without it `/metrics` and `/v1/cluster` are served on --http to viewer keys.
    #[arg(long, env = "VIGIL_METRICS_ADDR")]
    metrics_addr: Option<String>,
    /// Time a client has to send a request's headers before its connection is closed.
    #[arg(long, default_value = "10s", value_parser = duration_ms)]
    header_read_timeout: i64,
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
    /// Refuse events whose `ts` is more than this far ahead of this machine's
    /// clock (reason `ts_in_future`); past times are always fine.
    #[arg(long, default_value = "5m", value_parser = duration_ms)]
    max_future: i64,
    /// Event copies per batch message to a node.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Event copies queued at the gateway per node before ingest pauses (live node) or copies are shed (dead node).
    #[arg(long, default_value_t = 65_536)]
    pending_cap: usize,
    /// A node silent for this long is marked down.
    #[arg(long, default_value = "3s", value_parser = duration_ms)]
    node_timeout: i64,
    /// Time between checkpoints of engine state with the input position ("0s": off;
    /// then a node that dies loses its shards' state and copies for it are shed).
    #[arg(long, default_value = "2s", value_parser = duration_ms)]
    checkpoint_every: i64,
    /// Skip a due checkpoint when nothing changed since the last durable one
    /// (`--skip-unchanged-checkpoints false` rewrites it anyway; see
    /// docs/operations.md).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    skip_unchanged_checkpoints: bool,
    /// Bytes of events kept for replay since the last checkpoint; ingest pauses at this size.
    #[arg(long, default_value_t = 256 << 20)]
    replay_log_bytes: usize,
    /// Alert ids remembered to drop alerts emitted again during recovery.
    #[arg(long, default_value_t = 1_000_000)]
    dedup_window: usize,
    /// Partial matches per (rule, key) before the oldest is dropped.
    #[arg(long, default_value_t = 10_000)]
    max_runs_per_key: u32,
    /// Events one partial match may hold (in-process nodes); a run that reaches
    /// it without completing is dropped and counted.
    #[arg(long, default_value_t = cep_engine::engine::DEFAULT_MAX_RUN_EVENTS)]
    max_run_events: usize,
    /// Largest single event accepted, bytes (ZeroMQ frames far over it close the producer's connection).
    #[arg(long, default_value_t = 1 << 20)]
    max_event_bytes: usize,
    /// Frames in one ZeroMQ ingest message; a larger message is refused whole (too_many_frames).
    #[arg(long, default_value_t = 1_000)]
    max_frames: usize,
    /// Bytes of recent events kept for rule diffs (at most 10,000 events).
    #[arg(long, default_value_t = 16 << 20)]
    sample_bytes: usize,
    /// Largest HTTP request body, bytes (413 beyond).
    #[arg(long, default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// Distinct entries per reference list (413 `list_too_large` beyond).
    #[arg(long, default_value_t = 1_000_000)]
    max_list_entries: usize,
    /// Bytes of all entries of one reference list (413 `list_too_large` beyond).
    #[arg(long, default_value_t = 64 << 20)]
    max_list_bytes: usize,
    /// Bytes of one reference-list entry (400 `list_entry_too_long` beyond).
    #[arg(long, default_value_t = 1 << 20)]
    max_list_entry_bytes: usize,
    /// Kafka brokers: consume events from --topic in consumer group --group.
    #[arg(long, env = "VIGIL_KAFKA")]
    kafka: Option<String>,
    /// Kafka topic of events (with --kafka).
    #[arg(long, env = "VIGIL_KAFKA_TOPIC")]
    topic: Option<String>,
    /// Kafka consumer group.
    #[arg(long, default_value = "vigil", env = "VIGIL_KAFKA_GROUP")]
    group: String,
    /// When a partition's next offset is outside what the broker holds (the
    /// topic was recreated, or retention deleted unread events): read on
    /// from the `earliest` or `latest` offset it holds, or `fail` (stop
    /// consuming). Each is logged, counted and shown in /healthz.
    #[arg(long, default_value = "earliest", value_parser = ["earliest", "latest", "fail"])]
    kafka_offset_reset: String,
    /// Also publish alerts to this Kafka topic (key = alert key, payload = alert JSON).
    #[arg(long, env = "VIGIL_ALERTS_TOPIC")]
    alerts_topic: Option<String>,
    /// Webhook retry delays, comma-separated (after the last, dead letter).
    #[arg(long, default_value = "5s,5m,30m,2h,5h,10h,10h")]
    webhook_schedule: String,
    /// Time limit of one webhook attempt.
    #[arg(long, default_value = "10s", value_parser = duration_ms)]
    webhook_timeout: i64,
    /// An alert id is delivered once per endpoint within this window.
    #[arg(long, default_value = "24h", value_parser = duration_ms)]
    webhook_dedup_window: i64,
    /// Attempts in flight per webhook endpoint.
    #[arg(long, default_value_t = 4)]
    webhook_concurrency: usize,
    /// Allow webhook endpoints on loopback addresses.
    #[arg(long)]
    webhook_allow_loopback: bool,
    /// Allow webhook endpoints on private and link-local addresses.
    #[arg(long)]
    webhook_allow_private: bool,
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
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.run.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gateway-io")
        .enable_all()
        .build()?;
    match cli.command {
        Some(Cmd::Keys { action }) => rt.block_on(keys(action, &cli.run.store)),
        None => rt.block_on(run(cli.run)),
    }
}

async fn keys(action: KeyCmd, args: &StoreArgs) -> anyhow::Result<()> {
    let store = match args.config().open().await {
        Ok(s) => s,
        Err(e) => {
            // One line a person can act on; the usual cause is a running
            // gateway holding the embedded store's lock.
            let why = format!("{e:#}");
            let hint = if why.contains("already open") || why.contains("lock") {
                " (is a gateway running on it? stop it, or create the key through POST /v1/keys with an admin key)"
            } else {
                ""
            };
            eprintln!("vigil-gateway keys: cannot open the store: {why}{hint}");
            std::process::exit(1);
        }
    };
    match action {
        KeyCmd::Create { name, role } => {
            let role = Role::parse(&role)
                .with_context(|| format!("unknown role `{role}`: viewer, analyst or admin"))?;
            let secret = vigil_gateway::api::create_key(&store, &name, role)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            println!("{secret}");
        }
        KeyCmd::List => {
            for k in store.keys().await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    k.name,
                    k.role.as_str(),
                    cep_engine::time::format_ms(k.created_at),
                    if k.revoked { "revoked" } else { "active" }
                );
            }
        }
        KeyCmd::Revoke { name } => {
            if !store.revoke_key(&name).await? {
                anyhow::bail!("no key named `{name}`");
            }
            eprintln!("revoked {name}");
        }
    }
    Ok(())
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let system = System::start(SystemConfig {
        rules: a.rules.clone(),
        store: a.store.config(),
        nodes: a.node.clone(),
        embedded_nodes: a.nodes,
        router: RouterConfig {
            pull: Some(a.zmq_pull.clone()),
            router: Some(a.zmq_router.clone()),
            publish: Some(a.zmq_pub.clone()),
            lateness_ms: a.lateness,
            max_runs_per_key: a.max_runs_per_key,
            max_run_events: a.max_run_events.max(1),
            batch_max: a.batch.max(1),
            pending_cap: a.pending_cap.max(a.batch),
            node_timeout: Duration::from_millis(a.node_timeout.max(100) as u64),
            idle_ms: a.idle,
            max_event_bytes: a.max_event_bytes,
            max_future_ms: a.max_future,
            max_frames: a.max_frames,
            sample_bytes: a.sample_bytes,
            checkpoint_every: Duration::from_millis(a.checkpoint_every.max(0) as u64),
            skip_unchanged_checkpoints: a.skip_unchanged_checkpoints,
            replay_log_bytes: a.replay_log_bytes.max(1 << 20),
            dedup_window: a.dedup_window,
            ..RouterConfig::default()
        },
        api: ApiConfig {
            max_body_bytes: a.max_body_bytes,
            samples_dir: Some(a.store.data_dir.join("samples")),
            lists: vigil_gateway::api::ListLimits {
                max_entries: a.max_list_entries,
                max_bytes: a.max_list_bytes,
                max_entry_bytes: a.max_list_entry_bytes,
            },
        },
        webhooks: WebhookConfig {
            schedule: parse_schedule(&a.webhook_schedule)
                .map_err(|e| anyhow::anyhow!("--webhook-schedule: {e}"))?,
            timeout: Duration::from_millis(a.webhook_timeout.max(1) as u64),
            dedup_window: Duration::from_millis(a.webhook_dedup_window.max(0) as u64),
            concurrency: a.webhook_concurrency.max(1),
            allow_loopback: a.webhook_allow_loopback,
            allow_private: a.webhook_allow_private,
            ..WebhookConfig::default()
        },
        kafka: match (&a.kafka, &a.topic) {
            (Some(b), Some(t)) => Some(vigil_gateway::kafka::KafkaSource {
                brokers: b.clone(),
                topic: t.clone(),
                group: a.group.clone(),
                reset: a.kafka_offset_reset.parse()?,
            }),
            (Some(_), None) => anyhow::bail!("--kafka needs --topic"),
            _ => None,
        },
        alerts_topic: match (&a.kafka, &a.alerts_topic) {
            (Some(b), Some(t)) => Some((b.clone(), t.clone())),
            (None, Some(_)) => anyhow::bail!("--alerts-topic needs --kafka"),
            _ => None,
        },
    })
    .await?;
    let listener = tokio::net::TcpListener::bind(&a.http)
        .await
        .with_context(|| format!("binding HTTP {}", a.http))?;
    let app = system.app();
    let header_timeout = Duration::from_millis(a.header_read_timeout.max(1) as u64);
    let server = tokio::spawn(vigil_gateway::http::serve(listener, app, header_timeout));
    let ops_server = match &a.metrics_addr {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-addr {addr}"))?;
            let ops = vigil_gateway::api::ops_app(system.state.clone());
            Some(tokio::spawn(vigil_gateway::http::serve(
                l,
                ops,
                header_timeout,
            )))
        }
        None => None,
    };

    let bundle = system.state.catalog.current();
    println!(
        "Vigil gateway: {} rules running (rule set v{}), store: {}",
        bundle.as_ref().map_or(0, |b| b.rules.len()),
        bundle.as_ref().map_or(0, |b| b.version),
        match &a.store.redis {
            Some(url) => format!("redis {url}"),
            None => format!("embedded {}", a.store.data_dir.display()),
        }
    );
    if a.node.is_empty() {
        println!(
            "  engine nodes: {} in-process (ZeroMQ inproc)",
            a.nodes.max(1)
        );
    } else {
        println!("  engine nodes: {}", a.node.join(", "));
    }
    println!(
        "  send events:  ZeroMQ PUSH   -> {}  (one JSON event per frame)",
        a.zmq_pull
    );
    println!(
        "                ZeroMQ DEALER -> {}  (batches, each acknowledged)",
        a.zmq_router
    );
    println!(
        "                HTTP POST http://{}/v1/events  (JSON or NDJSON, API key)",
        a.http
    );
    println!(
        "  alerts:       ZeroMQ SUB    <- {}  (topics alert.<severity>.<rule>)",
        a.zmq_pub
    );
    println!(
        "                HTTP GET  http://{}/v1/alerts, /v1/alerts/stream (SSE)",
        a.http
    );
    println!(
        "  API:          http://{}/v1/openapi.json   status: /healthz /readyz /metrics",
        a.http
    );
    if let Some(m) = &a.metrics_addr {
        println!("  operations:   http://{m}/metrics /v1/cluster  (no API key)");
    }
    println!(
        "  try it:       cargo run --release -p vigil-gateway --example zmq_client -- rules/tests/lib_card_testing/events.jsonl"
    );
    if let Some(k) = &system.first_admin_key {
        println!();
        println!("  First start: an admin API key was created. It is shown only this once:");
        println!("    {k}");
    }

    wait_for_stop(&system).await;
    info!("shutting down: draining queued events");
    server.abort();
    if let Some(s) = ops_server {
        s.abort();
    }
    system.shutdown().await;
    info!("stopped");
    Ok(())
}

/// SIGHUP re-imports the rule files; SIGINT/SIGTERM return.
async fn wait_for_stop(system: &System) {
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
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => match system.reimport().await {
                    Ok(n) => info!(changes = n, "rule files re-imported"),
                    Err(e) => error!("{e:#}"),
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

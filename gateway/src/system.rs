//! Assembly: the store, the router thread, in-process nodes, the catalog, the
//! alert writer and the watchers, wired into an [`AppState`]. `main.rs` runs it
//! behind an HTTP listener; tests run it in-process.

use crate::api::{self, ApiConfig, AppState, Inner};
use crate::catalog::Catalog;
use crate::router::{
    AlertOut, Channels, Checkpoints, Command, NodeAlive, Router, RouterConfig, ToWriter,
};
use crate::status::Status;
use crate::store::{AlertFilter, Mode, Role, Store, StoredAlert};
use cep_engine::node::{NodeOptions, NodeStatus};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tracing::{error, info, warn};

/// Where the store lives.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Embedded(PathBuf),
    Redis { url: String, namespace: String },
}

impl StoreConfig {
    pub async fn open(&self) -> anyhow::Result<Store> {
        Ok(match self {
            StoreConfig::Embedded(dir) => Store::open_embedded(dir).await?,
            StoreConfig::Redis { url, namespace } => Store::open_redis(url, namespace).await?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// Rule files imported into an empty store (and on [`System::reimport`]).
    pub rules: PathBuf,
    pub store: StoreConfig,
    /// External nodes; empty: `embedded_nodes` in-process nodes.
    pub nodes: Vec<String>,
    pub embedded_nodes: usize,
    pub router: RouterConfig,
    pub api: ApiConfig,
    pub webhooks: crate::webhooks::WebhookConfig,
    /// Consume events from a Kafka topic.
    pub kafka: Option<crate::kafka::KafkaSource>,
    /// Publish alerts to a Kafka topic: (brokers, topic).
    pub alerts_topic: Option<(String, String)>,
}

/// A running gateway (without its HTTP listener).
pub struct System {
    pub state: AppState,
    /// The admin key created on a first start, to print once.
    pub first_admin_key: Option<String>,
    commands: std::sync::mpsc::Sender<Command>,
    router_thread: Option<std::thread::JoinHandle<()>>,
    node_stop: Arc<AtomicBool>,
    node_threads: Vec<std::thread::JoinHandle<()>>,
    rules: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Ends by itself once the router (its only sender) has stopped.
    alert_task: Option<tokio::task::JoinHandle<()>>,
}

/// Unique inproc names when several systems share a process (tests).
static EMBEDDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl System {
    /// Starts everything. Must be called inside a tokio runtime.
    pub async fn start(cfg: SystemConfig) -> anyhow::Result<System> {
        let store = cfg.store.open().await?;
        let ctx = zmq::Context::new();
        let node_stop = Arc::new(AtomicBool::new(false));
        let mut node_threads = vec![];
        let mut in_process = vec![];
        let endpoints: Vec<String> = if cfg.nodes.is_empty() {
            let id = EMBEDDED.fetch_add(1, Ordering::Relaxed);
            let mut eps = vec![];
            for i in 0..cfg.embedded_nodes.max(1) {
                let opts = NodeOptions {
                    name: format!("embedded-{i}"),
                    bind: format!("inproc://vigil-{}-{id}-node-{i}", std::process::id()),
                    max_run_events: cfg.router.max_run_events,
                    ..NodeOptions::default()
                };
                eps.push(opts.bind.clone());
                let alive = NodeAlive::new();
                in_process.push(alive.clone());
                let (ctx, stop) = (ctx.clone(), node_stop.clone());
                node_threads.push(
                    std::thread::Builder::new()
                        .name(format!("node-{i}"))
                        .spawn(move || {
                            let _alive = alive.guard();
                            if let Err(e) = cep_engine::node::serve(
                                &ctx,
                                opts,
                                Arc::new(NodeStatus::default()),
                                stop,
                            ) {
                                error!(error = %e, "in-process node failed");
                            }
                        })?,
                );
            }
            // Let in-process nodes bind before the router connects.
            tokio::time::sleep(Duration::from_millis(20)).await;
            eps
        } else {
            cfg.nodes.clone()
        };

        let status = Arc::new(Status::default());
        let (ingest_tx, ingest_rx) = mpsc::channel(64);
        let (alert_tx, alert_rx) = mpsc::channel::<ToWriter>(ALERT_QUEUE);
        let (commands, commands_rx) = std::sync::mpsc::channel();
        let mut router = Router::new(
            ctx,
            RouterConfig {
                nodes: endpoints,
                in_process,
                ..cfg.router.clone()
            },
            status.clone(),
        )?
        .with_channels(Channels {
            http: Some(ingest_rx),
            alerts: Some(alert_tx),
        })
        .with_seen_alerts(&recent_alert_ids(&store).await?);
        let checkpoints = !cfg.router.checkpoint_every.is_zero();
        let (commit_tx, commit_rx) = tokio::sync::watch::channel(BTreeMap::new());
        let mut kafka_start = BTreeMap::new();
        let mut tasks = vec![];
        if checkpoints {
            let resume = store.checkpoint().await?;
            if let Some(m) = &resume {
                kafka_start = m.offsets.clone();
            }
            if let Ok(mut v) = status.checkpoint.lock() {
                v.enabled = true;
                if let Some(m) = &resume {
                    v.id = m.id;
                    v.seq = m.seq;
                    v.shards = m.shards.len();
                    v.bytes = m.bytes;
                    v.offsets = m.offsets.clone();
                }
            }
            let (st, rt) = (store.clone(), tokio::runtime::Handle::current());
            router = router.with_checkpoints(Checkpoints {
                resume,
                // The router thread is not a runtime thread: it may block on
                // the store (restores are rare and pause ingest anyway).
                loader: Box::new(move |id, shards| rt.block_on(read_shards(&st, id, shards))),
                committed: Some(commit_tx),
            });
        }
        let router_thread = std::thread::Builder::new()
            .name("router".into())
            .spawn(move || router.run(commands_rx))?;

        let catalog = Arc::new(Catalog::new(store.clone(), commands.clone()));
        let dispatcher = crate::webhooks::Dispatcher::new(store.clone(), cfg.webhooks.clone())?;
        let (alerts, _) = broadcast::channel(4096);
        let state: AppState = Arc::new(Inner {
            catalog: catalog.clone(),
            store: store.clone(),
            status: status.clone(),
            ingest: ingest_tx,
            router: std::sync::Mutex::new(commands.clone()),
            alerts: alerts.clone(),
            config: cfg.api.clone(),
            list_lock: tokio::sync::Mutex::new(()),
            dispatcher: dispatcher.clone(),
            backtests: Default::default(),
            hourly: Default::default(),
        });

        let first_admin_key = bootstrap(&store, &catalog, &cfg.rules).await?;
        // Lists, then the rules, reach the nodes before any event.
        for name in store.list_names().await? {
            if let Some(entries) = store.get_list(&name).await? {
                let _ = commands.send(Command::SetList { name, entries });
            }
        }
        if let Err(e) = catalog.deploy().await {
            anyhow::bail!("the stored rules do not compile: {e}");
        }

        dispatcher.start().await?;
        let sink = match &cfg.alerts_topic {
            Some((brokers, topic)) => Some(crate::kafka::AlertSink::new(brokers, topic)?),
            None => None,
        };
        let alert_task = Some(tokio::spawn(alert_writer(
            alert_rx,
            store.clone(),
            alerts,
            status,
            catalog.clone(),
            dispatcher,
            sink,
            commands.clone(),
        )));
        // Only a shared store can change under us (or lose its data).
        if matches!(cfg.store, StoreConfig::Redis { .. }) {
            tasks.push(tokio::spawn(watch_shared_changes(
                state.clone(),
                cfg.rules.clone(),
            )));
        }
        if let Some(src) = cfg.kafka.clone() {
            let (ingest, status) = (state.ingest.clone(), state.status.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) =
                    crate::kafka::consume(src, ingest, status.clone(), kafka_start, commit_rx).await
                {
                    error!(error = %e, "the Kafka source stopped");
                    status.failing("kafka", format!("the Kafka source stopped: {e}"));
                }
            }));
        }
        Ok(System {
            state,
            first_admin_key,
            commands,
            router_thread: Some(router_thread),
            node_stop,
            node_threads,
            rules: cfg.rules,
            tasks,
            alert_task,
        })
    }

    pub fn app(&self) -> axum::Router {
        api::app(self.state.clone())
    }

    /// Re-reads the rule files: changed rules become new active versions,
    /// deployed together.
    pub async fn reimport(&self) -> anyhow::Result<usize> {
        let n = self
            .state
            .catalog
            .import(std::slice::from_ref(&self.rules), "import")
            .await?;
        if n > 0 {
            self.state
                .catalog
                .deploy()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(n)
    }

    /// Stops ingest, delivers what is queued, stops the nodes.
    pub async fn shutdown(mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.router_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        self.node_stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut self.node_threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        // The router is gone, so the alert channel is closed: the writer
        // stores and fans out what it still holds, then ends (bounded wait:
        // a dead Kafka sink must not hold the shutdown forever).
        if let Some(mut t) = self.alert_task.take() {
            // A failing store gets a short grace: its alerts are not lost
            // by stopping (see the warning), and waiting on a full disk
            // would hold the shutdown for good.
            let started = std::time::Instant::now();
            loop {
                if tokio::time::timeout(Duration::from_secs(1), &mut t)
                    .await
                    .is_ok()
                {
                    break;
                }
                let failing = self.state.status.store_failing.load(Ordering::Relaxed);
                let limit = if failing {
                    WRITER_STOP_LIMIT_FAILING
                } else {
                    WRITER_STOP_LIMIT
                };
                if started.elapsed() >= limit {
                    warn!(
                        ?limit,
                        store_failing = failing,
                        "alert writer still busy; stopping anyway (the alerts it did not store are emitted again after a restart: the last checkpoint it stored precedes them)"
                    );
                    t.abort();
                    break;
                }
            }
        }
        for t in std::mem::take(&mut self.tasks) {
            t.abort();
            let _ = t.await;
        }
        self.state.dispatcher.stop().await;
    }
}

/// Alerts (and checkpoints) waiting for the alert writer. When it is full
/// the router waits, and so ingest slows down; it also bounds how much a
/// shutdown has to drain.
const ALERT_QUEUE: usize = 16_384;

/// How long a shutdown waits for the alert writer to empty its queue.
const WRITER_STOP_LIMIT: Duration = Duration::from_secs(60);

/// The same while the store is failing.
const WRITER_STOP_LIMIT_FAILING: Duration = Duration::from_secs(5);

/// Alert ids the router starts knowing (newest first): after a restart, the
/// alerts emitted again from the checkpoint on are recognised.
const DEDUP_SEED: usize = 20_000;

async fn recent_alert_ids(store: &Store) -> anyhow::Result<Vec<String>> {
    let mut ids = vec![];
    let mut cursor: Option<String> = None;
    while ids.len() < DEDUP_SEED {
        let page = store
            .query_alerts(&AlertFilter::default(), cursor.as_deref(), 1_000)
            .await?;
        ids.extend(page.alerts.into_iter().map(|a| a.id));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(ids)
}

/// Reads shards of checkpoint `id`, several at a time.
async fn read_shards(
    store: &Store,
    id: u64,
    shards: &[u16],
) -> Vec<Result<Option<Vec<u8>>, String>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, &shard) in shards.iter().enumerate() {
        let st = store.clone();
        set.spawn(async move {
            (
                i,
                st.checkpoint_shard(id, shard)
                    .await
                    .map_err(|e| e.to_string()),
            )
        });
    }
    let mut out: Vec<Result<Option<Vec<u8>>, String>> =
        (0..shards.len()).map(|_| Err("not read".into())).collect();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, v)) => out[i] = v,
            Err(e) => warn!(error = %e, "a checkpoint read task failed"),
        }
    }
    out
}

/// Stores every alert (once per id), then fans it out: webhooks, the Kafka
/// alerts topic, SSE subscribers. A failing store is retried: alerts wait in
/// the bounded channel, and the router (then ingest) slows down rather than
/// lose one. Checkpoints come through the same channel and are stored once
/// every alert before them is handled.
#[allow(clippy::too_many_arguments)]
async fn alert_writer(
    mut rx: mpsc::Receiver<ToWriter>,
    store: Store,
    tx: broadcast::Sender<Arc<StoredAlert>>,
    status: Arc<Status>,
    catalog: Arc<Catalog>,
    dispatcher: Arc<crate::webhooks::Dispatcher>,
    sink: Option<crate::kafka::AlertSink>,
    router: std::sync::mpsc::Sender<Command>,
) {
    let mut next = rx.recv().await;
    while let Some(item) = next.take() {
        let first = match item {
            ToWriter::Alert(a) => a,
            ToWriter::Checkpoint(job) => {
                let id = job.manifest.id;
                let result = store.put_checkpoint(job.manifest, job.shards).await;
                match &result {
                    Ok(_) => status.recovered("store"),
                    Err(e @ crate::store::StoreError::Unavailable(_)) => {
                        status.failing("store", format!("storing a checkpoint failed: {e}"));
                    }
                    Err(_) => {}
                }
                let result = result.map_err(|e| e.to_string());
                if router
                    .send(Command::CheckpointStored { id, result })
                    .is_err()
                {
                    return;
                }
                next = rx.recv().await;
                continue;
            }
        };
        // Take the alerts that have queued up (up to a checkpoint): one store
        // write for the whole batch.
        let mut batch = vec![stored_alert(first)];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(ToWriter::Alert(a)) => batch.push(stored_alert(a)),
                Ok(checkpoint) => {
                    next = Some(checkpoint);
                    break;
                }
                Err(_) => break,
            }
        }
        handle_alerts(
            batch,
            &store,
            &tx,
            &status,
            &catalog,
            &dispatcher,
            sink.as_ref(),
        )
        .await;
        if next.is_none() {
            next = rx.recv().await;
        }
    }
}

/// Fans out the alerts of a batch that are new to the store (webhook queue,
/// the Kafka alerts topic), then stores them, then tells SSE subscribers.
///
/// The store write comes last on purpose: a stored alert is one that was
/// delivered. If the gateway stops between the fan-out and the store write,
/// the alerts are emitted again after the restart (the checkpoint it resumes
/// from precedes them), are not yet stored, and go out again: at worst a
/// duplicate on the Kafka topic (webhook deliveries are deduplicated by
/// alert id), never a lost alert.
async fn handle_alerts(
    batch: Vec<StoredAlert>,
    store: &Store,
    tx: &broadcast::Sender<Arc<StoredAlert>>,
    status: &Status,
    catalog: &Catalog,
    dispatcher: &Arc<crate::webhooks::Dispatcher>,
    sink: Option<&crate::kafka::AlertSink>,
) {
    let ids: Vec<String> = batch.iter().map(|a| a.id.clone()).collect();
    let known = until_ok(status, "store", "reading stored alert ids", || {
        store.alerts_known(&ids)
    })
    .await;
    let mut in_batch = HashSet::with_capacity(batch.len());
    let fresh: Vec<StoredAlert> = batch
        .into_iter()
        .zip(known)
        .filter_map(|(a, known)| (!known && in_batch.insert(a.id.clone())).then_some(a))
        .collect();
    if fresh.is_empty() {
        return;
    }
    for stored in &fresh {
        // Deliveries are queued in the store (they survive a restart from
        // here on; the same alert queued twice is one delivery).
        let tags = catalog.rule_tags(&stored.rule);
        until_ok(status, "store", "queueing webhook deliveries", || {
            dispatcher.on_alert(stored, &tags)
        })
        .await;
    }
    if let Some(sink) = sink {
        let records: Vec<(String, String)> = fresh
            .iter()
            .map(|a| (a.key.clone(), a.alert.to_string()))
            .collect();
        until_ok(status, "kafka", "publishing alerts to Kafka", || {
            sink.send_all(&records)
        })
        .await;
    }
    let mut attempts = 0;
    let new = until_ok(status, "store", "storing alerts", || {
        attempts += 1;
        store.put_alerts(&fresh)
    })
    .await;
    // After a failed attempt (a Redis timeout) the write may have happened
    // anyway, and the retry then finds the alerts stored: they are still
    // ours to count and announce (they were not stored when checked above).
    let new = if attempts > 1 {
        vec![true; fresh.len()]
    } else {
        new
    };
    for (stored, new) in fresh.into_iter().zip(new) {
        // Only another gateway on the same shared store can have stored it
        // in between; it counts and announces its own copy.
        if new {
            status.alert_stored(&stored.rule, stored.mode == Mode::Shadow, stored.at);
            let _ = tx.send(Arc::new(stored));
        }
    }
}

/// An alert from the router in the store's form.
fn stored_alert(a: AlertOut) -> StoredAlert {
    let alert: serde_json::Value = serde_json::from_str(&a.json).unwrap_or_default();
    let events: serde_json::Value = serde_json::from_str(&a.events).unwrap_or_default();
    let at = alert["at"]
        .as_str()
        .and_then(cep_engine::time::parse_rfc3339_ms)
        .unwrap_or(0);
    let key = match &alert["key"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    StoredAlert {
        id: a.id,
        rule: alert["rule"].as_str().unwrap_or_default().to_string(),
        key,
        severity: alert["severity"].as_str().unwrap_or_default().to_string(),
        mode: if a.shadow { Mode::Shadow } else { Mode::Active },
        at,
        alert,
        events,
    }
}

/// Runs `f` until it succeeds, backing off from 50 ms to 5 s between tries.
/// Alerts wait rather than get lost; meanwhile `component` is reported
/// failing (health, `vigil_dependency_failures_total`), which for the store
/// pauses ingest, and the bounded channel upstream slows the router.
async fn until_ok<T, E: std::fmt::Display, Fut: std::future::Future<Output = Result<T, E>>>(
    status: &Status,
    component: &'static str,
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    let mut delay = Duration::from_millis(50);
    loop {
        match f().await {
            Ok(v) => {
                status.recovered(component);
                return v;
            }
            Err(e) => {
                status.failing(component, format!("{what} failed: {e}"));
                warn!(error = %e, component, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A store's first start (or a store found empty again): import the rule
/// files, create the first admin key (returned, to be shown once), and write
/// the store's marker.
async fn bootstrap(
    store: &Store,
    catalog: &Catalog,
    rules: &std::path::Path,
) -> anyhow::Result<Option<String>> {
    if store.schema().await?.is_none() && store.rule_states().await?.is_empty() {
        let n = catalog
            .import(std::slice::from_ref(&rules.to_path_buf()), "import")
            .await?;
        info!(changes = n, rules = %rules.display(), "imported the rule files into an empty store");
    }
    let key = if store.keys().await?.is_empty() {
        Some(
            api::create_key(store, "admin", Role::Admin)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?,
        )
    } else {
        None
    };
    if store.marker().await?.is_none() {
        let id = format!("{:016x}", cep_engine::node::random_u64());
        store.put_marker(&id).await?;
    }
    Ok(key)
}

/// How long `/healthz` names a store found empty again.
const DATA_LOSS_ALARM: Duration = Duration::from_secs(15 * 60);

/// The shared store answers but its marker is gone: it lost its data (a
/// Redis restarted without persistence). Say so loudly, then run the
/// first-start bootstrap again, so the gateway serves again with the rule
/// files and a new admin key (printed once) instead of answering 401 to
/// everyone. What only the lost store held (other API keys, rule versions
/// made through the API, lists, webhooks, stored alerts, the checkpoint)
/// is gone: docs/operations.md says what to do.
async fn store_lost_its_data(st: &AppState, rules: &std::path::Path) {
    error!(
        "the store answers but has lost its data (its marker is gone: a Redis restarted empty?); running the first-start bootstrap again"
    );
    st.status.alarm(
        "store_data",
        "the store lost its data (restarted empty): rules re-imported from the rule files, a new admin key printed in the log; API keys, lists and webhooks made since must be made again".into(),
        DATA_LOSS_ALARM,
    );
    match bootstrap(&st.store, &st.catalog, rules).await {
        Ok(key) => {
            if let Some(k) = key {
                println!();
                println!(
                    "  The store lost its data: a new admin API key was created. It is shown only this once:"
                );
                println!("    {k}");
            }
            if let Err(e) = st.catalog.deploy().await {
                error!(error = %e, "deploying the re-imported rules failed");
            }
        }
        Err(e) => error!(error = %e, "the bootstrap after a data loss failed; retrying"),
    }
}

/// Several gateways can share one Redis store: poll for changes made elsewhere
/// (list revisions, audit entries about rules) and push them to our nodes;
/// and notice a store that lost its data.
async fn watch_shared_changes(st: AppState, rules: PathBuf) {
    let mut lists_rev = st.store.lists_revision().await.unwrap_or(0);
    let mut audit_seq = 0;
    while let Ok(page) = st.store.audit(audit_seq, 1000).await {
        match page.last() {
            Some(e) => audit_seq = e.seq,
            None => break,
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if let Ok(None) = st.store.marker().await {
            store_lost_its_data(&st, &rules).await;
            audit_seq = 0;
        }
        if let Ok(rev) = st.store.lists_revision().await
            && rev != lists_rev
        {
            lists_rev = rev;
            if let Ok(names) = st.store.list_names().await {
                for n in names {
                    let _ = api::publish_list(&st, &n).await;
                }
            }
        }
        if let Ok(entries) = st.store.audit(audit_seq, 1000).await
            && let Some(last) = entries.last()
        {
            audit_seq = last.seq;
            if entries
                .iter()
                .any(|e| e.action.starts_with("rule.") || e.action.starts_with("schema."))
                && let Some(cur) = st.catalog.current()
            {
                // Redeploy only if the composed set differs from what runs.
                if let Err(e) = st.catalog.redeploy_if_changed(&cur).await {
                    warn!(error = %e, "redeploy after a shared change failed");
                }
            }
        }
    }
}

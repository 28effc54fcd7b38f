//! What the router thread reports to the HTTP side: counters (atomics, written
//! on the hot path) and a view of every node link (refreshed a few times a
//! second), rendered as `/healthz`, `/readyz`, `/v1/cluster` and `/metrics`.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A per-node gauge: name, help, how to read it.
type Gauge = (&'static str, &'static str, fn(&NodeView) -> u64);

#[derive(Debug, Default)]
pub struct Counters {
    pub events_accepted: AtomicU64,
    pub event_copies_routed: AtomicU64,
    pub batches_sent: AtomicU64,
    pub alerts_published: AtomicU64,
    pub shadow_alerts_published: AtomicU64,
    /// Event copies dropped because their node was down and its queue full.
    pub copies_shed: AtomicU64,
    /// Times ingest paused because a live node's queue was full.
    pub ingest_pauses: AtomicU64,
    /// Microseconds ingest spent paused.
    pub ingest_paused_us: AtomicU64,
    /// Producer connections closed on the ZeroMQ ingest sockets (by the
    /// producer, or by the gateway for a frame over the transport limit).
    pub ingest_disconnects: AtomicU64,
    pub deploys: AtomicU64,
    pub node_errors: AtomicU64,
    /// Kafka partitions whose next offset was outside what the broker holds
    /// (topic recreated, events deleted unread).
    pub kafka_offset_resets: AtomicU64,
    /// Kafka consumer clients replaced because one stopped delivering.
    pub kafka_client_restarts: AtomicU64,
    /// Times an in-process node was silent past the node timeout while its
    /// thread ran (busy, so not failed over).
    pub nodes_busy: AtomicU64,
    /// Alerts a node emitted again (during recovery) and the router dropped.
    pub alerts_deduplicated: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Checkpoints due but not taken: nothing changed since the last one.
    pub checkpoints_skipped: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    /// Shards moved to another node (failover or move back).
    pub shards_moved: AtomicU64,
    /// Shards restored from a checkpoint on a node (moves and node restarts).
    pub shards_restored: AtomicU64,
}

/// The last durable checkpoint and the recovery figures (`/v1/cluster`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointView {
    /// Checkpoints on: false when `--checkpoint-every 0`.
    pub enabled: bool,
    pub id: u64,
    /// Gateway sequence number it covers.
    pub seq: u64,
    pub shards: usize,
    pub bytes: u64,
    /// Barrier sent to manifest durable, ms.
    pub duration_ms: u64,
    /// Of which: nodes snapshotting and sending their shards, ms.
    pub snapshot_ms: u64,
    /// Kafka offsets it covers, per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// Events accepted since it (kept for replay), and their bytes.
    pub replay_log_events: usize,
    pub replay_log_bytes: usize,
    /// Last recovery (failover, move back, restart): from the decision to
    /// the node having processed everything accepted until then, ms.
    pub last_recovery_ms: Option<u64>,
}

/// One node link, as the router sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeView {
    pub name: String,
    pub endpoint: String,
    /// `connecting`, `syncing` (rules being deployed), `up`, `down`, `stopped`.
    pub state: String,
    pub instance: Option<String>,
    pub shards: usize,
    pub rules_version: u64,
    pub credits: u64,
    pub queued_copies: u64,
    pub sent_seq: u64,
    pub processed_seq: u64,
    /// Events (gateway sequence numbers) sent but not yet processed.
    pub lag_events: u64,
    pub last_heard_ms_ago: u64,
    pub events: u64,
    pub late: u64,
    pub alerts: u64,
    pub active_runs: u64,
    pub active_keys: u64,
    pub buffered: u64,
    pub shards_active: u32,
    pub rejected_batches: u64,
    /// Partial matches dropped on reaching `--max-run-events`.
    pub runs_dropped_events_cap: u64,
    /// The gateway clock all of the node's shards have reached (timers
    /// fired), epoch ms; `None` before any. Equal to the gateway's
    /// `clock_ms` once the node has caught up with event time.
    pub clock_ms: Option<i64>,
}

/// What the router publishes in one piece (every 100 ms and on stop): its
/// nodes and the accepted count and clock they are measured against, taken
/// at the same instant, so "every node caught up with every accepted event"
/// can be read off one snapshot (the live counters run ahead of the nodes'
/// figures between two publications).
#[derive(Debug, Default, Clone)]
pub struct RouterView {
    pub events_accepted: u64,
    /// The event clock, `None` before the first event.
    pub clock_ms: Option<i64>,
    pub nodes: Vec<NodeView>,
}

#[derive(Debug, Default)]
pub struct Status {
    pub counters: Counters,
    pub rejected: Mutex<BTreeMap<String, u64>>,
    /// The recent-events sample: events and bytes held.
    pub sample_events: AtomicU64,
    pub sample_bytes: AtomicU64,
    /// The router's view of its nodes, published as one piece.
    pub view: Mutex<RouterView>,
    pub rules_version: AtomicU64,
    pub rules: AtomicU64,
    /// The router's event-time clock (highest accepted `ts`), epoch ms.
    pub clock_ms: std::sync::atomic::AtomicI64,
    /// How far the event clock is ahead of the wall clock when that is more
    /// than `--max-future` (else 0): not ready then.
    pub clock_ahead_ms: std::sync::atomic::AtomicI64,
    /// Stored alerts per (rule, mode).
    pub rule_alerts: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Alert latency: wall clock when stored minus the alert's event time.
    pub alert_latency: Histogram,
    /// Kafka consumer lag per (topic, partition).
    pub kafka_lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Dependencies failing now, by component ("store", "kafka", …): named
    /// in `/healthz`.
    pub problems: Mutex<BTreeMap<&'static str, Problem>>,
    /// Failed calls to a dependency, by component.
    pub dependency_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// The store cannot take alerts now: ingest pauses, not ready.
    pub store_failing: std::sync::atomic::AtomicBool,
    pub checkpoint: Mutex<CheckpointView>,
}

/// A dependency failing now.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub component: &'static str,
    pub message: String,
    /// Since when (epoch ms).
    pub since_ms: i64,
    /// An alarm about something that happened (not a state that lasts) is
    /// shown until then (epoch ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
}

/// Bucket bounds of [`Histogram`], seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 60.0,
];

/// A fixed-bucket Prometheus histogram (cumulative on output).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 13],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        let secs = secs.max(0.0);
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, o: &mut String) {
        let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            o,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "{name}_count {}", self.count.load(Ordering::Relaxed));
    }
}

#[derive(Serialize)]
pub struct ClusterView {
    /// Highest event time accepted (epoch ms), null before the first event.
    pub clock_ms: Option<i64>,
    pub rules_version: u64,
    pub rules: u64,
    /// Events accepted when the nodes' figures below were taken (the live
    /// total is `vigil_events_accepted_total`).
    pub events_accepted: u64,
    pub events_rejected: BTreeMap<String, u64>,
    pub alerts_published: u64,
    pub copies_shed: u64,
    pub alerts_deduplicated: u64,
    pub checkpoint: CheckpointView,
    pub nodes: Vec<NodeView>,
}

impl Status {
    pub fn reject(&self, reason: &str) {
        self.reject_many(reason, 1);
    }

    /// `n` events refused for one reason (a whole message of them).
    pub fn reject_many(&self, reason: &str, n: u64) {
        if let Ok(mut m) = self.rejected.lock() {
            *m.entry(reason.to_string()).or_default() += n;
        }
    }

    /// An alert reached the store for the first time.
    /// Alerts this gateway stored for `rule`, both modes (a cheap "has
    /// anything changed" for caches of per-rule figures).
    pub fn rule_alert_count(&self, rule: &str) -> u64 {
        self.rule_alerts.lock().map_or(0, |m| {
            m.iter()
                .filter(|((r, _), _)| r == rule)
                .map(|(_, n)| *n)
                .sum()
        })
    }

    pub fn alert_stored(&self, rule: &str, shadow: bool, at_ms: i64) {
        let mode = if shadow { "shadow" } else { "active" };
        if let Ok(mut m) = self.rule_alerts.lock() {
            *m.entry((rule.to_string(), mode)).or_default() += 1;
        }
        let now = chrono::Utc::now().timestamp_millis();
        self.alert_latency.observe((now - at_ms) as f64 / 1000.0);
    }

    pub fn checkpoint_view(&self) -> CheckpointView {
        self.checkpoint
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    pub fn nodes(&self) -> Vec<NodeView> {
        self.view
            .lock()
            .map(|v| v.nodes.clone())
            .unwrap_or_default()
    }

    pub fn cluster(&self) -> ClusterView {
        let c = &self.counters;
        let view = self.view.lock().map(|v| v.clone()).unwrap_or_default();
        ClusterView {
            clock_ms: view.clock_ms,
            rules_version: self.rules_version.load(Ordering::Relaxed),
            rules: self.rules.load(Ordering::Relaxed),
            events_accepted: view.events_accepted,
            events_rejected: self.rejected.lock().map(|m| m.clone()).unwrap_or_default(),
            alerts_published: c.alerts_published.load(Ordering::Relaxed),
            copies_shed: c.copies_shed.load(Ordering::Relaxed),
            alerts_deduplicated: c.alerts_deduplicated.load(Ordering::Relaxed),
            checkpoint: self.checkpoint_view(),
            nodes: view.nodes,
        }
    }

    /// A call to `component` failed: counted; the problem is named in
    /// health until [`Status::recovered`]. The store's failures also pause
    /// ingest (the router reads `store_failing`).
    pub fn failing(&self, component: &'static str, message: String) {
        if let Ok(mut m) = self.dependency_failures.lock() {
            *m.entry(component).or_default() += 1;
        }
        if component == "store" {
            self.store_failing.store(true, Ordering::Relaxed);
        }
        if let Ok(mut p) = self.problems.lock() {
            let since_ms = p
                .get(component)
                .map_or_else(|| chrono::Utc::now().timestamp_millis(), |x| x.since_ms);
            p.insert(
                component,
                Problem {
                    component,
                    message,
                    since_ms,
                    until_ms: None,
                },
            );
        }
    }

    /// Something went wrong in `component` that is over once handled (a
    /// Kafka offset reset): counted, and named in health for `hold`.
    pub fn alarm(&self, component: &'static str, message: String, hold: std::time::Duration) {
        if let Ok(mut m) = self.dependency_failures.lock() {
            *m.entry(component).or_default() += 1;
        }
        let now = chrono::Utc::now().timestamp_millis();
        if let Ok(mut p) = self.problems.lock() {
            p.insert(
                component,
                Problem {
                    component,
                    message,
                    since_ms: now,
                    until_ms: Some(now.saturating_add(hold.as_millis() as i64)),
                },
            );
        }
    }

    /// Drops alarms whose time is up.
    pub fn expire_alarms(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        if let Ok(mut p) = self.problems.lock() {
            p.retain(|_, x| x.until_ms.is_none_or(|u| u > now));
        }
    }

    /// A call to `component` succeeded: its problem, if any, is over.
    pub fn recovered(&self, component: &'static str) {
        if component == "store" {
            self.store_failing.store(false, Ordering::Relaxed);
        }
        if let Ok(mut p) = self.problems.lock()
            && let Some(was) = p.remove(component)
        {
            let ms = chrono::Utc::now().timestamp_millis() - was.since_ms;
            tracing::info!(component, failing_ms = ms, "{component} works again");
        }
    }

    /// The problems now (alarms whose time is up left out).
    pub fn problems(&self) -> Vec<Problem> {
        let now = chrono::Utc::now().timestamp_millis();
        self.problems
            .lock()
            .map(|p| {
                p.values()
                    .filter(|x| x.until_ms.is_none_or(|u| u > now))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ready: every node up and running the current rule-set version.
    pub fn ready(&self) -> Result<(), String> {
        let version = self.rules_version.load(Ordering::Relaxed);
        let nodes = self.nodes();
        if nodes.is_empty() {
            return Err("no nodes configured".into());
        }
        if self.store_failing.load(Ordering::Relaxed) {
            let why = self
                .problems()
                .into_iter()
                .find(|p| p.component == "store")
                .map_or_else(String::new, |p| p.message);
            return Err(format!("the store is failing, ingest is paused: {why}"));
        }
        let ahead = self.clock_ahead_ms.load(Ordering::Relaxed);
        if ahead > 0 {
            return Err(format!(
                "the event clock is {ahead} ms ahead of the wall clock (more than --max-future): events are late until the wall clock catches up"
            ));
        }
        let bad: Vec<String> = nodes
            .iter()
            .filter(|n| n.state != "up" || n.rules_version != version)
            .map(|n| {
                format!(
                    "{} is {} on rules v{} (want v{version})",
                    n.name, n.state, n.rules_version
                )
            })
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("; "))
        }
    }

    /// Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let c = &self.counters;
        let mut o = String::new();
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = write!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            "vigil_events_accepted_total",
            "events validated and routed",
            &c.events_accepted,
        );
        counter(
            "vigil_event_copies_routed_total",
            "routed copies (one per distinct key field)",
            &c.event_copies_routed,
        );
        counter(
            "vigil_batches_sent_total",
            "event batches sent to nodes",
            &c.batches_sent,
        );
        counter(
            "vigil_alerts_published_total",
            "alerts published on the ZeroMQ PUB socket",
            &c.alerts_published,
        );
        counter(
            "vigil_shadow_alerts_published_total",
            "shadow alerts published (topic prefix shadow.)",
            &c.shadow_alerts_published,
        );
        counter(
            "vigil_event_copies_shed_total",
            "copies dropped: node down and its bounded queue full",
            &c.copies_shed,
        );
        counter(
            "vigil_ingest_pauses_total",
            "times ingest paused for back-pressure",
            &c.ingest_pauses,
        );
        counter(
            "vigil_ingest_paused_microseconds_total",
            "time ingest spent paused for back-pressure",
            &c.ingest_paused_us,
        );
        counter(
            "vigil_ingest_disconnects_total",
            "producer connections closed on the ZeroMQ ingest sockets (by the producer, or by the gateway for a frame over the transport limit)",
            &c.ingest_disconnects,
        );
        counter("vigil_deploys_total", "rule-set deploys", &c.deploys);
        counter(
            "vigil_node_errors_total",
            "error messages received from nodes",
            &c.node_errors,
        );
        counter(
            "vigil_kafka_offset_resets_total",
            "Kafka partitions found resuming outside the broker's offsets (topic recreated, events deleted unread)",
            &c.kafka_offset_resets,
        );
        counter(
            "vigil_kafka_client_restarts_total",
            "Kafka consumer clients replaced because a partition holding more delivered nothing through repeated re-reads",
            &c.kafka_client_restarts,
        );
        counter(
            "vigil_nodes_busy_total",
            "times an in-process node was silent past the node timeout while its thread ran (not failed over)",
            &c.nodes_busy,
        );
        counter(
            "vigil_alerts_deduplicated_total",
            "alerts emitted again during recovery and dropped by id",
            &c.alerts_deduplicated,
        );
        counter(
            "vigil_checkpoints_total",
            "checkpoints made durable",
            &c.checkpoints,
        );
        counter(
            "vigil_checkpoints_skipped_total",
            "checkpoints due but not taken: nothing changed since the last durable one",
            &c.checkpoints_skipped,
        );
        counter(
            "vigil_checkpoint_failures_total",
            "checkpoints abandoned (a node went down) or not stored",
            &c.checkpoint_failures,
        );
        counter(
            "vigil_shards_moved_total",
            "virtual shards moved between nodes",
            &c.shards_moved,
        );
        counter(
            "vigil_shards_restored_total",
            "virtual shards restored from a checkpoint on a node",
            &c.shards_restored,
        );
        let ck = self.checkpoint_view();
        for (name, help, v) in [
            (
                "vigil_checkpoint_last_id",
                "id of the last durable checkpoint",
                ck.id,
            ),
            (
                "vigil_checkpoint_last_bytes",
                "engine state bytes in the last checkpoint",
                ck.bytes,
            ),
            (
                "vigil_checkpoint_last_duration_milliseconds",
                "barrier to durable manifest, last checkpoint",
                ck.duration_ms,
            ),
            (
                "vigil_replay_log_bytes",
                "accepted events kept since the last checkpoint, bytes",
                ck.replay_log_bytes as u64,
            ),
            (
                "vigil_replay_log_events",
                "accepted events kept since the last checkpoint",
                ck.replay_log_events as u64,
            ),
            (
                "vigil_sample_events",
                "recent events kept for rule diffs",
                self.sample_events.load(Ordering::Relaxed),
            ),
            (
                "vigil_sample_bytes",
                "recent events kept for rule diffs, bytes (bounded by --sample-bytes)",
                self.sample_bytes.load(Ordering::Relaxed),
            ),
        ] {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        }
        o.push_str("# HELP vigil_dependency_failures_total failed calls to a dependency (store, kafka), by component\n# TYPE vigil_dependency_failures_total counter\n");
        let failures = self
            .dependency_failures
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        for component in ["store", "kafka"] {
            let n = failures.get(component).copied().unwrap_or(0);
            let _ = writeln!(
                o,
                "vigil_dependency_failures_total{{component=\"{component}\"}} {n}"
            );
        }
        let problems = self.problems();
        o.push_str("# HELP vigil_dependency_up 0 while a dependency is failing (named in /healthz), else 1\n# TYPE vigil_dependency_up gauge\n");
        for component in ["store", "kafka"] {
            let up = u8::from(!problems.iter().any(|p| p.component == component));
            let _ = writeln!(o, "vigil_dependency_up{{component=\"{component}\"}} {up}");
        }
        o.push_str("# HELP vigil_events_rejected_total events refused, by reason\n# TYPE vigil_events_rejected_total counter\n");
        for (reason, n) in self.rejected.lock().map(|m| m.clone()).unwrap_or_default() {
            let _ = writeln!(o, "vigil_events_rejected_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = write!(
            o,
            "# HELP vigil_rules_version deployed rule-set version\n# TYPE vigil_rules_version gauge\nvigil_rules_version {}\n",
            self.rules_version.load(Ordering::Relaxed)
        );
        o.push_str("# HELP vigil_rule_alerts_total alerts stored, per rule and mode\n# TYPE vigil_rule_alerts_total counter\n");
        for ((rule, mode), n) in self
            .rule_alerts
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
        {
            let _ = writeln!(
                o,
                "vigil_rule_alerts_total{{rule=\"{rule}\",mode=\"{mode}\"}} {n}"
            );
        }
        let lag = self.kafka_lag.lock().map(|m| m.clone()).unwrap_or_default();
        if !lag.is_empty() {
            o.push_str("# HELP vigil_kafka_consumer_lag messages not yet consumed, per partition\n# TYPE vigil_kafka_consumer_lag gauge\n");
            for ((t, p), n) in lag {
                let _ = writeln!(
                    o,
                    "vigil_kafka_consumer_lag{{topic=\"{t}\",partition=\"{p}\"}} {n}"
                );
            }
        }
        self.alert_latency.render(
            "vigil_alert_latency_seconds",
            "wall clock when an alert is stored minus its event time (at)",
            &mut o,
        );
        let nodes = self.nodes();
        let gauges: [Gauge; 9] = [
            ("vigil_node_up", "1 when the node is up and in sync", |n| {
                u64::from(n.state == "up")
            }),
            (
                "vigil_node_rules_version",
                "rule-set version the node acknowledged",
                |n| n.rules_version,
            ),
            (
                "vigil_node_lag_events",
                "events sent but not yet processed",
                |n| n.lag_events,
            ),
            (
                "vigil_node_queued_copies",
                "event copies waiting at the gateway",
                |n| n.queued_copies,
            ),
            (
                "vigil_node_credits",
                "copies the gateway may still send",
                |n| n.credits,
            ),
            ("vigil_node_active_runs", "partial matches held", |n| {
                n.active_runs
            }),
            ("vigil_node_active_keys", "(rule, key) states held", |n| {
                n.active_keys
            }),
            ("vigil_node_late_events", "late events on the node", |n| {
                n.late
            }),
            (
                "vigil_node_last_heard_milliseconds",
                "since the node last answered",
                |n| n.last_heard_ms_ago,
            ),
        ];
        for (name, help, f) in gauges {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n");
            for n in &nodes {
                let _ = writeln!(o, "{name}{{node=\"{}\"}} {}", n.name, f(n));
            }
        }
        let name = "vigil_node_runs_dropped_events_cap_total";
        let _ = write!(
            o,
            "# HELP {name} partial matches dropped on reaching --max-run-events\n# TYPE {name} counter\n"
        );
        for n in &nodes {
            let _ = writeln!(
                o,
                "{name}{{node=\"{}\"}} {}",
                n.name, n.runs_dropped_events_cap
            );
        }
        o
    }
}

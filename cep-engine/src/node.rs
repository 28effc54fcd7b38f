//! An engine node: the server loop behind the `vigil-node` binary, also run
//! in-process by the gateway's embedded mode (feature `node`; the rest of the
//! crate has no I/O).
//!
//! The node binds a ZeroMQ ROUTER socket; one gateway connects a DEALER to it
//! and speaks [`crate::wire`]. The node runs one [`Engine`] per virtual shard it
//! owns (created on a shard's first event), grants the gateway credits for the
//! event copies it has processed, and sends alerts back on the same socket.
//! `docs/protocol.md` describes the conversation.

use crate::engine::{Deployment, Engine, EngineConfig, Program, Route};
use crate::eval::{List, Lists};
use crate::shard::SHARDS;
use crate::wire::{self, Credit, DeployAck, Msg, Stats, Welcome, WireAlert};
use rule_lang::program::RuleSet;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Node settings (the binary layers defaults, file, env and flags into these).
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub name: String,
    /// Endpoint the ROUTER binds (`tcp://…`, `ipc://…`, `inproc://…`).
    pub bind: String,
    /// Event copies the gateway may have in flight to this node.
    pub credit_window: u32,
    /// Partial matches held by the whole node (split across its shards).
    pub max_runs: usize,
    /// Events one partial match may hold ([`EngineConfig::max_run_events`]).
    pub max_run_events: usize,
    /// Largest message accepted from the gateway, bytes.
    pub max_message_bytes: i64,
    /// How often idle shards catch up with the gateway clock (fire timers).
    pub advance_every: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            name: "node".into(),
            bind: "tcp://127.0.0.1:7710".into(),
            credit_window: 65_536,
            max_runs: 5_000_000,
            max_run_events: EngineConfig::default().max_run_events,
            max_message_bytes: 64 << 20,
            advance_every: Duration::from_millis(5),
        }
    }
}

/// Live figures, shared with the node's HTTP endpoint.
#[derive(Debug, Default)]
pub struct NodeStatus {
    pub connected: AtomicBool,
    pub rules_version: AtomicU64,
    pub events: AtomicU64,
    pub late: AtomicU64,
    pub alerts: AtomicU64,
    pub active_runs: AtomicU64,
    pub active_keys: AtomicU64,
    pub buffered: AtomicU64,
    pub shards_active: AtomicU64,
    pub processed_seq: AtomicU64,
    pub rejected_batches: AtomicU64,
    pub misrouted: AtomicU64,
    /// Partial matches dropped at `max_run_events`.
    pub runs_dropped_events_cap: AtomicU64,
    /// Event copies refused for an event time outside the accepted range
    /// (a gateway that decodes events checks it first; see
    /// [`crate::decode::check_ts_range`]).
    pub bad_ts: AtomicU64,
    /// Last error told to the gateway (for logs and `/healthz`).
    pub last_error: Mutex<Option<String>>,
}

impl NodeStatus {
    /// Prometheus text exposition of the node's figures.
    pub fn prometheus(&self, name: &str) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut line = |metric: &str, kind: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {metric} {help}\n# TYPE {metric} {kind}\n{metric}{{node=\"{name}\"}} {v}\n"
            ));
        };
        line(
            "vigil_node_connected",
            "gauge",
            "1 while a gateway session is open",
            u64::from(self.connected.load(Ordering::Relaxed)),
        );
        line(
            "vigil_node_rules_version",
            "gauge",
            "rule-set version running",
            g(&self.rules_version),
        );
        line(
            "vigil_node_events_total",
            "counter",
            "event copies processed",
            g(&self.events),
        );
        line(
            "vigil_node_late_events_total",
            "counter",
            "events older than the watermark",
            g(&self.late),
        );
        line(
            "vigil_node_alerts_total",
            "counter",
            "alerts sent to the gateway",
            g(&self.alerts),
        );
        line(
            "vigil_node_active_runs",
            "gauge",
            "partial matches held",
            g(&self.active_runs),
        );
        line(
            "vigil_node_active_keys",
            "gauge",
            "(rule, key) states held",
            g(&self.active_keys),
        );
        line(
            "vigil_node_buffered_events",
            "gauge",
            "events waiting in reorder buffers",
            g(&self.buffered),
        );
        line(
            "vigil_node_shards_active",
            "gauge",
            "shards with an engine",
            g(&self.shards_active),
        );
        line(
            "vigil_node_processed_seq",
            "gauge",
            "highest gateway sequence number processed",
            g(&self.processed_seq),
        );
        line(
            "vigil_node_rejected_batches_total",
            "counter",
            "batches refused (wrong rule-set version, no session)",
            g(&self.rejected_batches),
        );
        line(
            "vigil_node_misrouted_total",
            "counter",
            "event copies for a shard this node does not own",
            g(&self.misrouted),
        );
        line(
            "vigil_node_runs_dropped_events_cap_total",
            "counter",
            "partial matches dropped on reaching --max-run-events",
            g(&self.runs_dropped_events_cap),
        );
        line(
            "vigil_node_bad_ts_total",
            "counter",
            "event copies refused: event time before 1970 or after year 9999",
            g(&self.bad_ts),
        );
        out
    }
}

/// A random 64-bit value (process-unique ids), from the std hasher's seed.
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

struct Session {
    peer: Vec<u8>,
    gateway: u64,
    owned: Vec<bool>,
    lateness_ms: i64,
    max_runs_per_key: usize,
    shards_owned: usize,
}

struct Rules {
    version: u64,
    set: Arc<RuleSet>,
    /// Derived from `set` once per deploy; every shard's engine shares it.
    program: Arc<Program>,
    deployments: Vec<Deployment>,
}

/// The node's state machine, separate from the socket so it can be tested
/// message by message.
pub struct Node {
    opts: NodeOptions,
    instance: u64,
    session: Option<Session>,
    rules: Option<Rules>,
    /// Boxed: the table holds a pointer per live shard, not a whole engine
    /// (at its load factor, that would double every shard's share).
    engines: HashMap<u16, Box<Engine>>,
    /// Restored shards whose replay is still arriving: kept off the node's
    /// clock (their events carry the clock they first had) until `Resume`.
    held: HashSet<u16>,
    /// Reference lists: one table, shared by every shard engine (and new
    /// ones), so a list exists once in the node process whatever the number
    /// of shards, and a change costs O(list) plus a pointer per shard.
    lists: Arc<Lists>,
    clock: i64,
    advanced_to: i64,
    processed_seq: u64,
    status: Arc<NodeStatus>,
    alerts_total: u64,
    rejected_batches: u64,
}

/// What the node wants sent back after a message.
pub type Replies = Vec<Msg>;

impl Node {
    pub fn new(opts: NodeOptions, status: Arc<NodeStatus>) -> Node {
        Node {
            opts,
            instance: random_u64(),
            session: None,
            rules: None,
            engines: HashMap::new(),
            held: HashSet::new(),
            lists: Arc::default(),
            clock: i64::MIN,
            advanced_to: i64::MIN,
            processed_seq: 0,
            status,
            alerts_total: 0,
            rejected_batches: 0,
        }
    }

    pub fn instance(&self) -> u64 {
        self.instance
    }

    fn engine_config(&self) -> EngineConfig {
        let (lateness_ms, per_key, owned) = self
            .session
            .as_ref()
            .map_or((0, EngineConfig::default().max_runs_per_key, 1), |s| {
                (s.lateness_ms, s.max_runs_per_key, s.shards_owned.max(1))
            });
        EngineConfig {
            lateness_ms,
            max_runs_per_key: per_key,
            max_runs_total: (self.opts.max_runs / owned).max(1_000),
            max_run_events: self.opts.max_run_events.max(1),
            ..EngineConfig::default()
        }
    }

    /// Handles one decoded message from the gateway at `peer`.
    pub fn handle(&mut self, peer: &[u8], msg: Msg) -> Replies {
        match msg {
            Msg::Hello(h) => {
                let fresh = self.session.as_ref().is_none_or(|s| s.gateway != h.gateway);
                if fresh {
                    // A new gateway process means a new stream: start clean.
                    self.engines.clear();
                    self.held.clear();
                    self.lists = Arc::default();
                    self.rules = None;
                    self.clock = i64::MIN;
                    self.advanced_to = i64::MIN;
                    self.processed_seq = 0;
                }
                let mut owned = vec![false; SHARDS as usize];
                for &s in &h.shards {
                    if let Some(o) = owned.get_mut(s as usize) {
                        *o = true;
                    }
                }
                // Shards this node no longer owns are dropped.
                self.engines
                    .retain(|s, _| owned.get(*s as usize).copied().unwrap_or(false));
                self.held.retain(|s| self.engines.contains_key(s));
                info!(
                    node = %self.opts.name,
                    gateway = h.gateway,
                    shards = h.shards.len(),
                    fresh,
                    "gateway session opened"
                );
                self.session = Some(Session {
                    peer: peer.to_vec(),
                    gateway: h.gateway,
                    owned,
                    lateness_ms: h.lateness_ms,
                    max_runs_per_key: h.max_runs_per_key as usize,
                    shards_owned: h.shards.len(),
                });
                self.status.connected.store(true, Ordering::Relaxed);
                vec![Msg::Welcome(Welcome {
                    instance: self.instance,
                    name: self.opts.name.clone(),
                    rules_version: self.rules.as_ref().map_or(0, |r| r.version),
                    credits: self.opts.credit_window,
                })]
            }
            Msg::Deploy(d) => {
                let version = d.version;
                let error = self.deploy(d).err();
                if let Some(e) = &error {
                    warn!(node = %self.opts.name, version, error = %e, "deploy refused");
                } else {
                    info!(node = %self.opts.name, version, "rule set deployed");
                }
                vec![Msg::DeployAck(DeployAck { version, error })]
            }
            Msg::Events(b) => {
                let n = b.events.len() as u32;
                let mut out = vec![];
                match self.check_batch(b.rules_version) {
                    Err(text) => {
                        self.rejected_batches += 1;
                        self.status.rejected_batches.fetch_add(1, Ordering::Relaxed);
                        out.push(Msg::Error { text });
                    }
                    Ok(()) => {
                        let touched = self.run_batch(b);
                        self.collect_alerts(touched, &mut out);
                    }
                }
                out.push(Msg::Credit(Credit {
                    grant: n,
                    processed_seq: self.processed_seq,
                }));
                out
            }
            Msg::Advance { clock } => {
                self.clock = self.clock.max(clock);
                let mut out = vec![];
                self.advance_all(&mut out);
                out
            }
            Msg::Ping { .. } => vec![Msg::Stats(self.stats())],
            Msg::SetList { name, entries } => {
                let n = entries.len();
                let list: List = Arc::new(entries.into_iter().map(Arc::from).collect());
                // Copies the table's names and pointers only if an engine
                // still holds the old table (always, once shards run).
                Arc::make_mut(&mut self.lists).insert(name.clone(), list);
                for e in self.engines.values_mut() {
                    e.set_lists(self.lists.clone());
                }
                debug!(node = %self.opts.name, list = %name, entries = n, "list updated");
                vec![]
            }
            Msg::Checkpoint { id } => self.checkpoint(id),
            Msg::Restore { shard, state } => match self.restore(shard, &state) {
                Ok(()) => vec![],
                Err(text) => {
                    warn!(node = %self.opts.name, shard, error = %text, "restore refused");
                    vec![Msg::Error { text }]
                }
            },
            Msg::Resume { shards } => {
                let wm = self.watermark();
                let now = wall_ms();
                for s in &shards {
                    self.held.remove(s);
                    if let (Some(e), Some(wm)) = (self.engines.get_mut(s), wm) {
                        e.set_wall_clock(now);
                        e.advance_to(wm);
                    }
                }
                info!(node = %self.opts.name, shards = shards.len(), "restored shards caught up");
                let mut out = vec![];
                self.collect_alerts(shards, &mut out);
                out
            }
            Msg::Release { shards } => {
                for s in &shards {
                    self.engines.remove(s);
                    self.held.remove(s);
                    if let Some(o) = self
                        .session
                        .as_mut()
                        .and_then(|x| x.owned.get_mut(*s as usize))
                    {
                        *o = false;
                    }
                }
                info!(node = %self.opts.name, shards = shards.len(), "shards released to another node");
                vec![]
            }
            Msg::Error { text } => {
                warn!(node = %self.opts.name, %text, "gateway reported an error");
                vec![]
            }
            other => {
                let text = format!(
                    "a node does not accept message kind {} from a gateway",
                    other.kind()
                );
                vec![Msg::Error { text }]
            }
        }
    }

    /// The watermark the node's clock gives (`None` before any clock).
    fn watermark(&self) -> Option<i64> {
        let s = self.session.as_ref()?;
        (self.clock != i64::MIN).then(|| self.clock.saturating_sub(s.lateness_ms))
    }

    /// Every shard engine's state, one message per shard, then the count.
    fn checkpoint(&mut self, id: u64) -> Replies {
        let started = Instant::now();
        let mut shards: Vec<u16> = self.engines.keys().copied().collect();
        shards.sort_unstable();
        let mut out = Vec::with_capacity(shards.len() + 1);
        let mut bytes = 0usize;
        for shard in shards {
            if let Some(e) = self.engines.get(&shard) {
                let state = e.snapshot().to_bytes();
                bytes += state.len();
                out.push(Msg::ShardState {
                    checkpoint: id,
                    shard,
                    state,
                });
            }
        }
        let n = out.len() as u32;
        debug!(
            node = %self.opts.name,
            checkpoint = id,
            shards = n,
            bytes,
            micros = started.elapsed().as_micros() as u64,
            "checkpoint taken"
        );
        out.push(Msg::CheckpointDone { id, shards: n });
        out
    }

    /// Installs `shard` from a checkpoint (empty `state`: the shard starts
    /// empty) and holds it until `Resume`.
    fn restore(&mut self, shard: u16, state: &[u8]) -> Result<(), String> {
        let Some(rules) = &self.rules else {
            return Err(format!("restore of shard {shard} before any rule set"));
        };
        let config = self.engine_config();
        if state.is_empty() {
            self.engines.remove(&shard);
        } else {
            let snap = crate::engine::Snapshot::from_bytes(state)?;
            let mut e =
                Engine::restore_program(rules.program.clone(), config, &rules.deployments, snap);
            e.set_lists(self.lists.clone());
            self.engines.insert(shard, Box::new(e));
        }
        if let Some(o) = self
            .session
            .as_mut()
            .and_then(|x| x.owned.get_mut(shard as usize))
        {
            *o = true;
        }
        self.held.insert(shard);
        Ok(())
    }

    fn check_batch(&self, version: u64) -> Result<(), String> {
        if self.session.is_none() {
            return Err("events before Hello: no session".into());
        }
        match &self.rules {
            None => Err(format!(
                "events for rule-set version {version} but no rule set is deployed"
            )),
            Some(r) if r.version != version => Err(format!(
                "events for rule-set version {version} but version {} is deployed",
                r.version
            )),
            Some(_) => Ok(()),
        }
    }

    fn deploy(&mut self, d: wire::Deploy) -> Result<(), String> {
        let mut sources = rule_lang::Sources::new();
        for (name, text) in &d.files {
            sources.add(name.clone(), text.clone());
        }
        let compiled = rule_lang::compile_sources(sources);
        let Some(set) = compiled.program else {
            return Err(compiled.diagnostics.render(false));
        };
        let set = Arc::new(set);
        let by_name: HashMap<&str, (u32, bool)> = d
            .rules
            .iter()
            .map(|(n, v, s)| (n.as_str(), (*v, *s)))
            .collect();
        let deployments: Vec<Deployment> = set
            .rules
            .iter()
            .map(|r| {
                let (version, shadow) = by_name.get(r.name.as_str()).copied().unwrap_or((1, false));
                Deployment { version, shadow }
            })
            .collect();
        let program = Program::new(set.clone());
        // Which old rule's state each new rule keeps: once for every shard
        // that runs the node's current program.
        let current = self.rules.as_ref().map(|r| r.program.clone());
        let carry = current.as_ref().map(|old| program.carry_from(old));
        for e in self.engines.values_mut() {
            match (&current, &carry) {
                (Some(old), Some(carry)) if Arc::ptr_eq(old, e.program()) => {
                    e.replace_program_carrying(program.clone(), &deployments, carry)
                }
                _ => e.replace_program(program.clone(), &deployments),
            }
        }
        self.status
            .rules_version
            .store(d.version, Ordering::Relaxed);
        self.rules = Some(Rules {
            version: d.version,
            set,
            program,
            deployments,
        });
        Ok(())
    }

    /// Runs a batch; returns the shards it touched.
    fn run_batch(&mut self, b: wire::Batch) -> Vec<u16> {
        let mut touched: Vec<u16> = vec![];
        let Some(rules) = &self.rules else {
            return touched;
        };
        let Some(session) = &self.session else {
            return touched;
        };
        let config = self.engine_config();
        let lateness = session.lateness_ms;
        let now = wall_ms();
        let mut misrouted = 0u64;
        let mut bad_ts = 0u64;
        for r in b.events {
            // The same range the gateway's decoder enforces: an absurd time
            // would move this node's clocks past all real data for good.
            if crate::decode::check_ts_range(r.event.ts).is_err() {
                bad_ts += 1;
                continue;
            }
            let ok_shard = session
                .owned
                .get(r.shard as usize)
                .copied()
                .unwrap_or(false);
            let ok_event = rules
                .set
                .schemas
                .get(r.event.ty as usize)
                .is_some_and(|s| s.fields.len() == r.event.fields.len());
            let ok_route = match r.route {
                Route::Key(s) => rules
                    .set
                    .schemas
                    .get(r.event.ty as usize)
                    .is_some_and(|sc| (s as usize) < sc.fields.len()),
                _ => true,
            };
            if !(ok_shard && ok_event && ok_route) {
                misrouted += 1;
                continue;
            }
            let lists = &self.lists;
            let engine = self.engines.entry(r.shard).or_insert_with(|| {
                let mut e =
                    Engine::with_program(rules.program.clone(), config.clone(), &rules.deployments);
                e.set_lists(lists.clone());
                Box::new(e)
            });
            engine.set_wall_clock(now);
            if r.clock != i64::MIN {
                engine.advance_to(r.clock.saturating_sub(lateness));
            }
            self.clock = self.clock.max(r.clock);
            self.processed_seq = self.processed_seq.max(r.seq);
            engine.push_held(r.event, r.route);
            if touched.last() != Some(&r.shard) {
                touched.push(r.shard);
            }
        }
        self.clock = self.clock.max(b.clock);
        // The batch's closing clock releases what its events made due. A held
        // shard (being replayed) goes to the batch's own clock, never beyond.
        for s in &touched {
            let clock = if self.held.contains(s) {
                b.clock
            } else {
                self.clock
            };
            if clock != i64::MIN
                && let Some(e) = self.engines.get_mut(s)
            {
                e.advance_to(clock.saturating_sub(lateness));
            }
        }
        if bad_ts > 0 {
            self.status.bad_ts.fetch_add(bad_ts, Ordering::Relaxed);
            warn!(node = %self.opts.name, bad_ts, "event copies refused: event time out of range");
        }
        if misrouted > 0 {
            self.status
                .misrouted
                .fetch_add(misrouted, Ordering::Relaxed);
            warn!(node = %self.opts.name, misrouted, "event copies refused: wrong shard, type or route");
        }
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    /// Brings every shard up to the gateway clock (fires due timers).
    pub fn advance_all(&mut self, out: &mut Replies) {
        let Some(session) = &self.session else { return };
        if self.clock == i64::MIN || self.clock == self.advanced_to {
            return;
        }
        let wm = self.clock.saturating_sub(session.lateness_ms);
        let now = wall_ms();
        for (s, e) in self.engines.iter_mut() {
            if e.watermark() < wm && !self.held.contains(s) {
                e.set_wall_clock(now);
                e.advance_to(wm);
            }
        }
        self.advanced_to = self.clock;
        let all: Vec<u16> = self.engines.keys().copied().collect();
        self.collect_alerts(all, out);
    }

    fn collect_alerts(&mut self, shards: Vec<u16>, out: &mut Replies) {
        let mut alerts = vec![];
        let schemas = self.rules.as_ref().map(|r| r.set.clone());
        let schemas = schemas.as_ref().map_or(&[][..], |s| s.schemas.as_slice());
        for s in shards {
            let Some(e) = self.engines.get_mut(&s) else {
                continue;
            };
            for a in e.drain_alerts() {
                alerts.push(WireAlert {
                    id: a.id.clone(),
                    topic: a.topic(),
                    shadow: a.shadow,
                    json: a.to_json_string(),
                    events: a.evidence_json(schemas).to_string(),
                });
            }
        }
        if !alerts.is_empty() {
            self.alerts_total += alerts.len() as u64;
            out.push(Msg::Alerts(alerts));
        }
    }

    /// Current figures; also refreshes the shared [`NodeStatus`].
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            instance: self.instance,
            rules_version: self.rules.as_ref().map_or(0, |r| r.version),
            processed_seq: self.processed_seq,
            alerts: self.alerts_total,
            shards_active: self.engines.len() as u32,
            rejected_batches: self.rejected_batches,
            clock: self.advanced_to,
            ..Stats::default()
        };
        for e in self.engines.values() {
            let m = e.metrics();
            s.events += m.events_in;
            s.late += m.late;
            s.runs_dropped_events_cap += m.runs_dropped_events_cap;
            s.active_runs += e.active_runs() as u64;
            s.active_keys += e.active_keys() as u64;
            s.buffered += e.buffered() as u64;
        }
        let st = &self.status;
        st.events.store(s.events, Ordering::Relaxed);
        st.late.store(s.late, Ordering::Relaxed);
        st.alerts.store(s.alerts, Ordering::Relaxed);
        st.active_runs.store(s.active_runs, Ordering::Relaxed);
        st.active_keys.store(s.active_keys, Ordering::Relaxed);
        st.buffered.store(s.buffered, Ordering::Relaxed);
        st.shards_active
            .store(u64::from(s.shards_active), Ordering::Relaxed);
        st.processed_seq.store(s.processed_seq, Ordering::Relaxed);
        st.runs_dropped_events_cap
            .store(s.runs_dropped_events_cap, Ordering::Relaxed);
        s
    }

    fn peer(&self) -> Option<&[u8]> {
        self.session.as_ref().map(|s| s.peer.as_slice())
    }
}

/// Runs a node on `ctx` until `shutdown` is set, then drains: every message
/// already received is processed and answered, and the gateway is told `Bye`.
pub fn serve(
    ctx: &zmq::Context,
    opts: NodeOptions,
    status: Arc<NodeStatus>,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let sock = ctx.socket(zmq::ROUTER)?;
    sock.set_maxmsgsize(opts.max_message_bytes)?;
    sock.set_linger(2_000)?;
    // Credits bound what the gateway sends; the HWMs are a second fence.
    sock.set_rcvhwm(10_000)?;
    sock.set_sndhwm(10_000)?;
    sock.bind(&opts.bind)
        .map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", opts.bind))?;
    info!(node = %opts.name, bind = %opts.bind, "vigil-node listening");
    let advance_every = opts.advance_every;
    let mut node = Node::new(opts, status.clone());
    let mut last_advance = Instant::now();
    let mut last_stats = Instant::now();
    let mut last_reply = Instant::now();
    loop {
        let stopping = shutdown.load(Ordering::Relaxed);
        let timeout = if stopping { 0 } else { 5 };
        let readable = match sock.poll(zmq::POLLIN, timeout) {
            Ok(n) => n > 0,
            // A signal (the one asking us to stop) interrupts the wait.
            Err(zmq::Error::EINTR) => false,
            Err(e) => return Err(e.into()),
        };
        if readable {
            // Take everything queued, then answer.
            while let Ok(frames) = sock.recv_multipart(zmq::DONTWAIT) {
                let [peer, body] = frames.as_slice() else {
                    debug!("ignoring a message that is not [peer, body]");
                    continue;
                };
                let mut replies = match wire::decode(body) {
                    Ok(msg) => node.handle(peer, msg),
                    Err(e) => {
                        warn!(error = %e, "undecodable message from the gateway");
                        if let Ok(mut last) = status.last_error.lock() {
                            *last = Some(e.to_string());
                        }
                        vec![Msg::Error {
                            text: e.to_string(),
                        }]
                    }
                };
                // A long run of messages that need no answer (restoring a
                // thousand shards, under load) must not look like a dead
                // node: say something at least every HEARTBEAT.
                if replies.is_empty() && last_reply.elapsed() >= HEARTBEAT {
                    replies.push(Msg::Stats(node.stats()));
                }
                if !replies.is_empty() {
                    last_reply = Instant::now();
                }
                for r in replies {
                    send(&sock, peer, &r);
                }
            }
        }
        if last_advance.elapsed() >= advance_every {
            last_advance = Instant::now();
            let mut out = vec![];
            node.advance_all(&mut out);
            if let Some(peer) = node.peer().map(<[u8]>::to_vec) {
                for r in out {
                    send(&sock, &peer, &r);
                }
            }
        }
        if last_stats.elapsed() >= Duration::from_millis(200) {
            last_stats = Instant::now();
            node.stats();
        }
        if stopping && !readable {
            break;
        }
    }
    node.stats();
    if let Some(peer) = node.peer().map(<[u8]>::to_vec) {
        send(
            &sock,
            &peer,
            &Msg::Bye {
                reason: "node shutting down; everything received was processed".into(),
            },
        );
    }
    status.connected.store(false, Ordering::Relaxed);
    info!(node = %node.opts.name, processed_seq = node.processed_seq, "vigil-node drained and stopped");
    Ok(())
}

/// The longest a node stays silent while it works through messages that need
/// no answer (the gateway's `--node-timeout` is seconds).
const HEARTBEAT: Duration = Duration::from_millis(250);

fn send(sock: &zmq::Socket, peer: &[u8], msg: &Msg) {
    let body = wire::encode(msg);
    if let Err(e) = sock.send_multipart([peer, body.as_slice()], zmq::DONTWAIT) {
        warn!(error = %e, kind = msg.kind(), "could not send to the gateway");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Event, Value};
    use crate::wire::{Batch, Deploy, Hello, Routed};

    const RULES: &str = "event A { k: string, x: int }\nrule r {\n  severity high\n  key k\n  pattern a: A -> b: A[x > a.x]\n  within 1m\n}\n";

    fn node() -> Node {
        Node::new(NodeOptions::default(), Arc::new(NodeStatus::default()))
    }

    fn hello(n: &mut Node, gateway: u64) -> Replies {
        n.handle(
            b"gw",
            Msg::Hello(Hello {
                gateway,
                node_index: 0,
                shards: (0..SHARDS).collect(),
                lateness_ms: 0,
                max_runs_per_key: 100,
            }),
        )
    }

    fn deploy(n: &mut Node, version: u64, text: &str) -> Replies {
        n.handle(
            b"gw",
            Msg::Deploy(Deploy {
                version,
                files: vec![("r.vgl".into(), text.into())],
                rules: vec![("r".into(), 1, false)],
            }),
        )
    }

    fn batch(version: u64, xs: &[(u64, i64)]) -> Msg {
        Msg::Events(Batch {
            rules_version: version,
            events: xs
                .iter()
                .map(|&(seq, x)| Routed {
                    seq,
                    shard: crate::shard::shard_of(&crate::Key::Str(Arc::from("k1"))),
                    route: Route::Key(0),
                    clock: if seq == 1 { i64::MIN } else { seq as i64 - 1 },
                    event: Event {
                        ty: 0,
                        ts: seq as i64,
                        id: Arc::from(format!("e{seq}").as_str()),
                        fields: vec![Value::Str(Arc::from("k1")), Value::Int(x)].into_boxed_slice(),
                        seq: 0,
                    },
                })
                .collect(),
            clock: xs.last().map_or(i64::MIN, |l| l.0 as i64),
        })
    }

    #[test]
    fn session_deploy_events_alerts_and_credits() {
        let mut n = node();
        let r = hello(&mut n, 1);
        assert!(matches!(&r[..], [Msg::Welcome(w)] if w.credits == 65_536 && w.rules_version == 0));
        // Events before any deploy: refused, but the credit comes back.
        let r = n.handle(b"gw", batch(1, &[(1, 1)]));
        assert!(matches!(&r[..], [Msg::Error { text }, Msg::Credit(c)]
            if text.contains("no rule set") && c.grant == 1));
        assert_eq!(
            deploy(&mut n, 1, RULES),
            vec![Msg::DeployAck(DeployAck {
                version: 1,
                error: None
            })]
        );
        // A batch encoded for another version is refused, never misread.
        let r = n.handle(b"gw", batch(2, &[(1, 1)]));
        assert!(
            matches!(&r[..], [Msg::Error { text }, Msg::Credit(_)] if text.contains("version 1 is deployed"))
        );
        let r = n.handle(b"gw", batch(1, &[(1, 1), (2, 5)]));
        let [Msg::Alerts(alerts), Msg::Credit(c)] = &r[..] else {
            panic!("expected alerts then credit, got {r:?}");
        };
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].topic, "alert.high.r");
        assert_eq!((c.grant, c.processed_seq), (2, 2));
        let s = n.stats();
        assert_eq!(
            (s.events, s.alerts, s.rules_version, s.rejected_batches),
            (2, 1, 1, 2)
        );
    }

    #[test]
    fn copies_with_an_absurd_event_time_are_refused_and_move_no_clock() {
        let mut n = node();
        hello(&mut n, 1);
        deploy(&mut n, 1, RULES);
        let Msg::Events(mut b) = batch(1, &[(1, 1), (2, 5)]) else {
            unreachable!()
        };
        b.events[1].event.ts = i64::MAX;
        let r = n.handle(b"gw", Msg::Events(b));
        assert!(matches!(&r[..], [Msg::Credit(c)] if c.grant == 2), "{r:?}");
        assert_eq!(n.status.bad_ts.load(Ordering::Relaxed), 1);
        assert_eq!(n.stats().events, 1);
        // The node's clock was not moved to the absurd time: a later
        // ordinary pair still matches.
        let r = n.handle(b"gw", batch(1, &[(3, 1), (4, 9)]));
        assert!(
            matches!(&r[..], [Msg::Alerts(a), Msg::Credit(_)] if !a.is_empty()),
            "{r:?}"
        );
    }

    #[test]
    fn a_bad_deploy_is_refused_and_the_old_rules_stay() {
        let mut n = node();
        hello(&mut n, 1);
        deploy(&mut n, 1, RULES);
        let r = deploy(&mut n, 2, "rule r { oops");
        assert!(matches!(&r[..], [Msg::DeployAck(a)] if a.version == 2 && a.error.is_some()));
        assert_eq!(n.stats().rules_version, 1);
    }

    #[test]
    fn a_new_gateway_starts_a_clean_stream_the_same_one_keeps_state() {
        let mut n = node();
        hello(&mut n, 1);
        deploy(&mut n, 1, RULES);
        n.handle(b"gw", batch(1, &[(1, 1)]));
        assert_eq!(n.stats().active_runs, 1);
        // Same gateway again (a network blip): state kept, rules kept.
        let r = hello(&mut n, 1);
        assert!(matches!(&r[..], [Msg::Welcome(w)] if w.rules_version == 1));
        assert_eq!(n.stats().active_runs, 1);
        // Another gateway process: a new stream.
        let r = hello(&mut n, 2);
        assert!(matches!(&r[..], [Msg::Welcome(w)] if w.rules_version == 0));
        assert_eq!(n.stats().active_runs, 0);
    }

    #[test]
    fn a_checkpointed_shard_restored_elsewhere_resumes_its_partial_matches() {
        // Node A sees the first half of a match, then a checkpoint.
        let mut a = node();
        hello(&mut a, 1);
        deploy(&mut a, 1, RULES);
        a.handle(b"gw", batch(1, &[(1, 1)]));
        let r = a.handle(b"gw", Msg::Checkpoint { id: 4 });
        let [
            Msg::ShardState {
                checkpoint: 4,
                shard,
                state,
            },
            Msg::CheckpointDone { id: 4, shards: 1 },
        ] = &r[..]
        else {
            panic!("expected one shard state then done, got {r:?}");
        };
        // Node B owns nothing, and its clock is far ahead of the shard's.
        let mut b = node();
        b.handle(
            b"gw",
            Msg::Hello(Hello {
                gateway: 1,
                node_index: 1,
                shards: vec![],
                lateness_ms: 0,
                max_runs_per_key: 100,
            }),
        );
        deploy(&mut b, 1, RULES);
        b.handle(b"gw", Msg::Advance { clock: 1_000_000 });
        assert!(
            b.handle(
                b"gw",
                Msg::Restore {
                    shard: *shard,
                    state: state.clone()
                }
            )
            .is_empty()
        );
        assert_eq!(b.stats().active_runs, 1, "the partial match came along");
        // The node clock must not expire the held run before its replay.
        let mut out = vec![];
        b.clock = 2_000_000;
        b.advance_all(&mut out);
        assert!(out.is_empty());
        assert_eq!(b.stats().active_runs, 1);
        // The replayed second half completes the match under its first clock.
        let r = b.handle(b"gw", batch(1, &[(2, 5)]));
        assert!(
            matches!(&r[..], [Msg::Alerts(al), Msg::Credit(_)] if al.len() == 1),
            "{r:?}"
        );
        b.handle(
            b"gw",
            Msg::Resume {
                shards: vec![*shard],
            },
        );
        assert_eq!(
            b.stats().active_runs,
            0,
            "resumed shards follow the node clock"
        );
        // Released shards are dropped and no longer owned.
        b.handle(
            b"gw",
            Msg::Release {
                shards: vec![*shard],
            },
        );
        assert_eq!(b.stats().shards_active, 0);
        b.handle(b"gw", batch(1, &[(3, 1)]));
        assert_eq!(b.status.misrouted.load(Ordering::Relaxed), 1);
        // A corrupt state is refused with a reason, not installed.
        let r = b.handle(
            b"gw",
            Msg::Restore {
                shard: 9,
                state: vec![1, 2, 3],
            },
        );
        assert!(
            matches!(&r[..], [Msg::Error { text }] if text.contains("snapshot")),
            "{r:?}"
        );
    }

    const LISTED: &str = "event A { k: string, x: int }\nrule r {\n  severity high\n  key k\n  pattern a: A[k in list \"bad\"]\n  within 1m\n}\n";

    /// One event per key `k0`..`k{n-1}`, each on its own key's shard.
    fn keyed(version: u64, from_seq: u64, keys: &[String]) -> Msg {
        let events: Vec<Routed> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let seq = from_seq + i as u64;
                Routed {
                    seq,
                    shard: crate::shard::shard_of(&crate::Key::Str(Arc::from(k.as_str()))),
                    route: Route::Key(0),
                    clock: seq as i64,
                    event: Event {
                        ty: 0,
                        ts: seq as i64,
                        id: Arc::from(format!("e{seq}").as_str()),
                        fields: vec![Value::Str(Arc::from(k.as_str())), Value::Int(1)]
                            .into_boxed_slice(),
                        seq: 0,
                    },
                }
            })
            .collect();
        let clock = events.last().map_or(i64::MIN, |r| r.clock);
        Msg::Events(Batch {
            rules_version: version,
            events,
            clock,
        })
    }

    /// Bytes of every shard state of one checkpoint.
    fn checkpoint_bytes(n: &mut Node, id: u64) -> (usize, Vec<(u16, Vec<u8>)>) {
        let mut states = vec![];
        for m in n.handle(b"gw", Msg::Checkpoint { id }) {
            if let Msg::ShardState { shard, state, .. } = m {
                states.push((shard, state));
            }
        }
        (states.iter().map(|s| s.1.len()).sum(), states)
    }

    #[test]
    fn a_list_is_held_once_per_node_and_never_in_a_shard_snapshot() {
        let mut n = node();
        hello(&mut n, 1);
        deploy(&mut n, 1, LISTED);
        let keys: Vec<String> = (0..2_000).map(|i| format!("k{i}")).collect();
        n.handle(b"gw", keyed(1, 1, &keys));
        let shards = n.engines.len();
        assert!(shards > 800, "most shards are live: {shards}");
        let (before, _) = checkpoint_bytes(&mut n, 1);
        // One 1 MB entry, and the keys of the next events.
        let big = "x".repeat(1 << 20);
        let entries = vec![big, "k1".to_string(), "k7".to_string()];
        n.handle(
            b"gw",
            Msg::SetList {
                name: "bad".into(),
                entries,
            },
        );
        // One table, handed to every shard engine: nothing copied per shard.
        for e in n.engines.values() {
            assert!(Arc::ptr_eq(e.lists(), &n.lists));
        }
        assert_eq!(Arc::strong_count(&n.lists), shards + 1);
        let list = n.lists.get("bad").expect("the list is set");
        assert_eq!((Arc::strong_count(list), list.len()), (1, 3));
        // A checkpoint does not carry the list: same size as before it.
        let (after, states) = checkpoint_bytes(&mut n, 2);
        assert_eq!(after, before, "the snapshot holds no list contents");
        // The list still matches, on any shard.
        let r = n.handle(b"gw", keyed(1, 10_000, &["k1".into(), "k2".into()]));
        assert!(
            matches!(&r[..], [Msg::Alerts(a), Msg::Credit(_)] if a.len() == 1),
            "{r:?}"
        );
        // A shard restored on another node reads that node's current lists.
        let home = crate::shard::shard_of(&crate::Key::Str(Arc::from("k7")));
        let (_, state) = states
            .into_iter()
            .find(|s| s.0 == home)
            .expect("k7's shard was checkpointed");
        let mut b = node();
        hello(&mut b, 1);
        deploy(&mut b, 1, LISTED);
        b.handle(
            b"gw",
            Msg::SetList {
                name: "bad".into(),
                entries: vec!["k7".into()],
            },
        );
        assert!(
            b.handle(b"gw", Msg::Restore { shard: home, state })
                .is_empty()
        );
        b.handle(b"gw", Msg::Resume { shards: vec![home] });
        assert!(Arc::ptr_eq(b.engines[&home].lists(), &b.lists));
        let r = b.handle(b"gw", keyed(1, 20_000, &["k7".into()]));
        assert!(
            matches!(&r[..], [Msg::Alerts(a), Msg::Credit(_)] if a.len() == 1),
            "{r:?}"
        );
    }

    /// Issue 17: what a deploy derives (type tables, compiled regexes, rule
    /// identities) exists once per node, whatever the number of live shards:
    /// every shard engine runs the node's one program, after the first
    /// events, a redeploy and a restore alike.
    #[test]
    fn every_shard_runs_one_shared_program() {
        const REGEX: &str = "event A { k: string, x: int }\nrule r {\n  severity high\n  key k\n  pattern a: A[k =~ \"^k[0-9]+$\"] -> b: A[x > a.x]\n  within 1m\n}\n";
        let mut n = node();
        hello(&mut n, 1);
        let r = deploy(&mut n, 1, REGEX);
        assert!(
            matches!(&r[..], [Msg::DeployAck(a)] if a.error.is_none()),
            "{r:?}"
        );
        let keys: Vec<String> = (0..2_000).map(|i| format!("k{i}")).collect();
        n.handle(b"gw", keyed(1, 1, &keys));
        let shards = n.engines.len();
        assert!(shards > 800, "most shards are live: {shards}");
        let shared = |n: &Node| {
            let program = &n.rules.as_ref().expect("deployed").program;
            n.engines
                .values()
                .all(|e| Arc::ptr_eq(e.program(), program))
                && Arc::strong_count(program) == n.engines.len() + 1
        };
        assert!(shared(&n), "one program after the first events");
        let text = REGEX.replace("within 1m", "within 2m");
        deploy(&mut n, 2, &text);
        assert_eq!(n.engines.len(), shards);
        assert!(shared(&n), "one program after a redeploy");
        let (_, states) = checkpoint_bytes(&mut n, 1);
        let mut b = node();
        hello(&mut b, 1);
        deploy(&mut b, 2, &text);
        for (shard, state) in states.into_iter().take(50) {
            assert!(b.handle(b"gw", Msg::Restore { shard, state }).is_empty());
        }
        assert_eq!(b.engines.len(), 50);
        assert!(shared(&b), "one program after a restore");
    }

    #[test]
    fn a_format_1_snapshot_with_lists_is_read_and_its_lists_ignored() {
        let mut n = node();
        hello(&mut n, 1);
        deploy(&mut n, 1, RULES);
        n.handle(b"gw", batch(1, &[(1, 1)]));
        let (_, states) = checkpoint_bytes(&mut n, 1);
        let (shard, mut state) = states.into_iter().next().expect("one shard");
        // Format 1: the metrics without the run-events cap count, then the lists.
        let old_lists: std::collections::HashMap<String, Vec<String>> =
            [("bad".to_string(), vec!["stale".to_string()])].into();
        state = crate::engine::Snapshot::from_bytes(&state)
            .expect("decodes")
            .to_format_1_bytes(&old_lists);
        assert_eq!(state[0], 1);
        let mut b = node();
        hello(&mut b, 1);
        deploy(&mut b, 1, RULES);
        assert!(b.handle(b"gw", Msg::Restore { shard, state }).is_empty());
        assert_eq!(b.stats().active_runs, 1, "the partial match came along");
        assert!(b.lists.is_empty(), "the old snapshot's lists are not used");
        assert!(b.engines[&shard].lists().is_empty());
    }

    #[test]
    fn copies_for_shards_the_node_does_not_own_are_refused() {
        let mut n = node();
        n.handle(
            b"gw",
            Msg::Hello(Hello {
                gateway: 1,
                node_index: 0,
                shards: vec![],
                lateness_ms: 0,
                max_runs_per_key: 100,
            }),
        );
        deploy(&mut n, 1, RULES);
        n.handle(b"gw", batch(1, &[(1, 1)]));
        assert_eq!(n.status.misrouted.load(Ordering::Relaxed), 1);
        assert_eq!(n.stats().events, 0);
    }
}

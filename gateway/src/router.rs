//! The router: one thread that owns every ZeroMQ socket of the gateway.
//!
//! * ingest — PULL (one JSON event per frame) and ROUTER (a multipart batch,
//!   answered with an acknowledgement);
//! * routing — each accepted event gets a sequence number and is copied once per
//!   distinct key field among the rules reading its type, to the node that owns
//!   the key's virtual shard;
//! * node links — a DEALER per node, credit-based flow control, rule deploys,
//!   liveness (ping/stats, timeout), alerts coming back;
//! * fan-out — alerts published on the PUB socket under `alert.<severity>.<rule>`
//!   (shadow alerts under `shadow.alert.…`).
//!
//! Back-pressure policy: each node link queues at most `pending_cap` copies at
//! the gateway. When a *live* node's queue is full, ingest stops reading its
//! sockets until the node grants credits (producers then block on their
//! ZeroMQ high-water mark; ROUTER producers wait for their ack). A node that
//! has missed `node_timeout` is *down*: its queue stays bounded and further
//! copies for it are shed and counted, so one dead node never stalls the
//! shards of the others.
//!
//! Checkpoints and recovery (`docs/operations.md`): every `checkpoint_every`
//! the router puts a `Checkpoint` barrier into every node's stream; each node
//! snapshots its shards at that point and sends them back; the router hands
//! the complete set, with the input position it covers (sequence number,
//! clock, Kafka offsets), to the store. Events accepted since the last durable
//! checkpoint are kept in a bounded replay log. When a node dies its shards
//! are restored on live nodes from the checkpoint and the log is replayed to
//! them; when it returns they move back at the next checkpoint. Alerts emitted
//! again carry the same ids and are dropped here, so each is published once.

use crate::clock::WallClock;
use crate::rules::Bundle;
use crate::sample::Sample;
use crate::status::{NodeView, RouterView, Status};
use crate::store::CheckpointManifest;
use crate::zmq_ingest::{disconnects, ingest_monitor, recv_capped};
use cep_engine::engine::Route;
use cep_engine::shard::{Routes, SHARDS};
use cep_engine::wire::{self, BatchWriter, Deploy, Hello, Msg};
use cep_engine::{Decoder, Event, Rejection};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Node endpoints to connect to, in shard-map order.
    pub nodes: Vec<String>,
    /// For nodes running in this process (the embedded default), in the
    /// order of `nodes`: a flag that is true while the node's thread runs.
    /// Such a node is never timed out: a silent thread in our own process is
    /// busy (starved of CPU, a long restore), not gone, and failing it over
    /// would add a restore to the overload. It is marked down when its
    /// thread ends. Empty for nodes on other hosts.
    pub in_process: Vec<NodeAlive>,
    pub pull: Option<String>,
    pub router: Option<String>,
    pub publish: Option<String>,
    pub lateness_ms: i64,
    pub max_runs_per_key: u32,
    /// Events one partial match may hold, for in-process nodes (an external
    /// `vigil-node` takes its own `--max-run-events`).
    pub max_run_events: usize,
    /// Copies per batch message.
    pub batch_max: usize,
    /// Copies queued at the gateway per node before back-pressure / shedding.
    pub pending_cap: usize,
    pub node_timeout: Duration,
    pub ping_every: Duration,
    /// Live mode: after this long without events, event time follows the wall
    /// clock (0 disables).
    pub idle_ms: i64,
    /// Largest single event accepted, bytes.
    pub max_event_bytes: usize,
    /// An event whose `ts` is more than this far ahead of the wall clock is
    /// refused (`ts_in_future`), so one bad clock cannot move event time
    /// past all real data.
    pub max_future_ms: i64,
    /// Skip a due checkpoint when nothing changed since the last durable one.
    pub skip_unchanged_checkpoints: bool,
    /// The wall clock (injectable: tests set it).
    pub wall: WallClock,
    /// Frames in one ZeroMQ ingest message (a batch) before it is refused
    /// whole (`too_many_frames`).
    pub max_frames: usize,
    /// Bytes of recent events kept for rule diffs (besides the count bound).
    pub sample_bytes: usize,
    /// Alert ids remembered to drop alerts emitted again during recovery.
    pub dedup_window: usize,
    /// Time between checkpoints (with [`Router::with_checkpoints`]).
    pub checkpoint_every: Duration,
    /// Bytes of accepted events kept for replay since the last durable
    /// checkpoint; ingest pauses at this size (a checkpoint starts at half).
    pub replay_log_bytes: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            nodes: vec![],
            in_process: vec![],
            pull: None,
            router: None,
            publish: None,
            lateness_ms: 0,
            max_runs_per_key: 10_000,
            max_run_events: cep_engine::engine::DEFAULT_MAX_RUN_EVENTS,
            batch_max: 1024,
            pending_cap: 65_536,
            node_timeout: Duration::from_secs(3),
            ping_every: Duration::from_millis(250),
            idle_ms: 5_000,
            max_event_bytes: 1 << 20,
            max_future_ms: 300_000,
            skip_unchanged_checkpoints: true,
            wall: WallClock::system(),
            max_frames: 1_000,
            sample_bytes: 16 << 20,
            dedup_window: 1_000_000,
            checkpoint_every: Duration::from_secs(2),
            replay_log_bytes: 256 << 20,
        }
    }
}

/// True while an in-process node's thread runs (see `RouterConfig::in_process`).
#[derive(Debug, Clone, Default)]
pub struct NodeAlive(Arc<std::sync::atomic::AtomicBool>);

impl NodeAlive {
    pub fn new() -> NodeAlive {
        NodeAlive(Arc::new(std::sync::atomic::AtomicBool::new(true)))
    }

    pub fn alive(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Held by the node's thread: clears the flag when the thread ends,
    /// by return or by panic.
    pub fn guard(&self) -> NodeAliveGuard {
        NodeAliveGuard(self.clone())
    }
}

/// Clears its `NodeAlive` when dropped.
pub struct NodeAliveGuard(NodeAlive);

impl Drop for NodeAliveGuard {
    fn drop(&mut self) {
        self.0.0.store(false, Ordering::Relaxed);
    }
}

/// A router turn longer than this is not counted as the nodes' silence.
const DEAF_GAP: Duration = Duration::from_millis(250);

/// A checkpoint handed to the store and not stored after this long is
/// counted as failed (once) and reported; it may still be stored later.
const STORE_LATE: Duration = Duration::from_secs(30);

/// Ingest pauses while the alert writer has fewer free slots than this, so
/// alerts still in flight from the nodes find room and the router does not
/// block on a full queue.
const ALERT_HEADROOM: usize = 1024;

/// Orders from the rest of the gateway.
pub enum Command {
    Deploy(Bundle),
    /// Replace (or create) a reference list on every node.
    SetList {
        name: String,
        entries: Vec<String>,
    },
    /// The most recent accepted events (raw JSON, shared), newest last.
    Sample(tokio::sync::oneshot::Sender<Vec<Arc<[u8]>>>),
    /// The store's answer for a checkpoint handed to the writer.
    CheckpointStored {
        id: u64,
        result: Result<CheckpointManifest, String>,
    },
    /// Stop ingest, deliver what is queued, wait for nodes (bounded), take a
    /// last checkpoint, exit.
    Shutdown,
}

/// Checkpointing: settings and the hooks into the store (the router thread
/// never awaits the store; it hands work over and hears back by command).
pub struct Checkpoints {
    /// The last durable checkpoint, to resume from (a gateway restart).
    pub resume: Option<CheckpointManifest>,
    /// Reads shards' states of a stored checkpoint (one result per shard).
    #[allow(clippy::type_complexity)]
    pub loader: Box<dyn Fn(u64, &[u16]) -> Vec<Result<Option<Vec<u8>>, String>> + Send>,
    /// Told the Kafka offsets of every durable checkpoint (to commit them).
    pub committed: Option<tokio::sync::watch::Sender<BTreeMap<i32, i64>>>,
}

/// What the router hands to the alert writer, in order.
pub enum ToWriter {
    Alert(AlertOut),
    /// A complete checkpoint: stored only after every alert before it has
    /// been stored and fanned out (the writer answers with
    /// [`Command::CheckpointStored`]). So a checkpoint never covers events
    /// whose alerts could still be lost: after a restart from it, everything
    /// not yet delivered is emitted again.
    Checkpoint(CheckpointJob),
}

/// A complete checkpoint, for the store.
pub struct CheckpointJob {
    pub manifest: CheckpointManifest,
    pub shards: Vec<(u16, Vec<u8>)>,
}

/// One accepted event, kept for replay until a checkpoint covers it.
struct LogEntry {
    seq: u64,
    /// The gateway clock before it (what its copies carried).
    clock: i64,
    frame: Box<[u8]>,
}

/// A checkpoint whose shard states are still arriving.
struct Inflight {
    manifest: CheckpointManifest,
    /// Links that have not sent `CheckpointDone` yet.
    waiting: Vec<usize>,
    shards: Vec<(u16, Vec<u8>)>,
    started: Instant,
}

struct Ckpt {
    /// [`Router::changes`] as of the last durable checkpoint (`None`: none
    /// yet), and as of the one being taken (its id).
    durable_changes: Option<u64>,
    pending_changes: Option<(u64, u64)>,
    cfg: Checkpoints,
    next_id: u64,
    last_started: Instant,
    /// (id, seq) of the last durable checkpoint.
    durable: Option<(u64, u64)>,
    /// The shards it holds a state for (the others restart empty).
    durable_shards: Vec<bool>,
    inflight: Option<Inflight>,
    /// Handed to the store: (id, barrier time, snapshot ms).
    storing: Option<(u64, Instant, u64)>,
    /// The checkpoint being stored that was reported late (once).
    storing_late: Option<u64>,
    log: VecDeque<LogEntry>,
    log_bytes: usize,
    /// The shutdown checkpoint: `Some(id)` once started, `Some(0)` if it
    /// could not be taken.
    last: Option<u64>,
}

/// A node being brought up to date: done when it has granted back the
/// credits of everything queued to it at the decision.
struct Recovery {
    link: usize,
    remaining: i64,
    started: Instant,
}

/// Recently published alert ids (64-bit hashes), oldest first out.
struct SeenAlerts {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    cap: usize,
}

impl SeenAlerts {
    fn new(cap: usize) -> SeenAlerts {
        SeenAlerts {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// True the first time an id is seen (within the window).
    fn first(&mut self, id: &str) -> bool {
        let h = cep_engine::shard::fnv1a64(id.as_bytes());
        if !self.set.insert(h) {
            return false;
        }
        self.order.push_back(h);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Hello sent, no Welcome yet.
    Connecting,
    /// Welcome received; waiting for the deploy of the current rules.
    Syncing,
    Up,
    /// Missed the timeout.
    Down,
    /// Said Bye.
    Stopped,
}

impl LinkState {
    fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Syncing => "syncing",
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Stopped => "stopped",
        }
    }

    fn live(self) -> bool {
        matches!(
            self,
            LinkState::Connecting | LinkState::Syncing | LinkState::Up
        )
    }
}

struct Outgoing {
    bytes: Vec<u8>,
    copies: u32,
    last_seq: u64,
    /// Rule-set version the batch is encoded for (0: a control message).
    version: u64,
}

impl Outgoing {
    /// A control message (deploy, list): needs no credit, belongs to no version.
    fn control(bytes: Vec<u8>) -> Outgoing {
        Outgoing {
            bytes,
            copies: 0,
            last_seq: 0,
            version: 0,
        }
    }
}

struct Link {
    name: String,
    endpoint: String,
    index: u16,
    sock: zmq::Socket,
    shards: Vec<u16>,
    /// The shards this node owns when every node is up (moved back to it
    /// after a failover).
    home: Vec<u16>,
    /// A new node process (or a new gateway): restore its shards once the
    /// rules are known.
    needs_restore: bool,
    /// Copies for it were shed while it was gone: its shards' state has a
    /// gap, so they are rebuilt (checkpoint, replay) when it returns.
    shed: bool,
    state: LinkState,
    /// Set for a node in this process: its thread's liveness replaces the
    /// timeout.
    alive: Option<NodeAlive>,
    /// An in-process node silent past the timeout was reported busy (once
    /// per silence).
    busy_reported: bool,
    instance: Option<u64>,
    credits: u64,
    current: Option<BatchWriter>,
    current_last_seq: u64,
    queue: VecDeque<Outgoing>,
    queued_copies: usize,
    last_heard: Instant,
    last_hello: Instant,
    acked_version: u64,
    sent_seq: u64,
    processed_seq: u64,
    stats: wire::Stats,
}

impl Link {
    fn pending(&self) -> usize {
        self.queued_copies + self.current.as_ref().map_or(0, BatchWriter::len)
    }

    fn seal(&mut self, clock: i64, version: u64) {
        if let Some(w) = self.current.take() {
            let copies = w.len() as u32;
            self.queue.push_back(Outgoing {
                bytes: w.finish(clock),
                copies,
                last_seq: self.current_last_seq,
                version,
            });
            self.queued_copies += copies as usize;
        }
    }

    fn send(&self, msg: &Msg) -> bool {
        self.sock.send(wire::encode(msg), zmq::DONTWAIT).is_ok()
    }
}

/// The acknowledgement a ROUTER producer gets for each batch.
#[derive(Debug, Serialize)]
pub struct Ack {
    pub accepted: usize,
    pub rejected: Vec<AckRejection>,
}

#[derive(Debug, Serialize)]
pub struct AckRejection {
    /// Index of the frame in the batch.
    pub index: usize,
    pub reason: String,
    pub message: String,
}

/// Events posted over HTTP: one JSON text per item; the router answers with
/// one result per item (`Ok` or the rejection) once they are routed.
pub struct HttpIngest {
    pub events: Vec<Vec<u8>>,
    /// The input of each event (a Kafka partition); `None`: all input 0.
    pub inputs: Option<Vec<u32>>,
    /// The Kafka offset of each event (with `inputs`); `None`: not from Kafka.
    pub offsets: Option<Vec<i64>>,
    pub reply: tokio::sync::oneshot::Sender<Vec<Result<(), Rejection>>>,
}

/// An alert as it leaves the router for the store, SSE and webhooks.
#[derive(Debug, Clone)]
pub struct AlertOut {
    pub id: String,
    pub topic: String,
    pub shadow: bool,
    pub json: String,
    /// Matched events by binding (JSON text).
    pub events: String,
}

/// Where the router sends what it does not handle itself.
#[derive(Default)]
pub struct Channels {
    /// Events from the HTTP API (read only while ingest is open).
    pub http: Option<tokio::sync::mpsc::Receiver<HttpIngest>>,
    /// Every alert, after it is published on the PUB socket. Bounded: a slow
    /// consumer slows the router, it never loses an alert.
    pub alerts: Option<tokio::sync::mpsc::Sender<ToWriter>>,
}

pub struct Router {
    cfg: RouterConfig,
    status: Arc<Status>,
    /// Keeps the ZeroMQ context alive as long as the router's sockets.
    _ctx: zmq::Context,
    gateway_id: u64,
    links: Vec<Link>,
    shard_owner: Vec<u16>,
    pull: Option<zmq::Socket>,
    router: Option<zmq::Socket>,
    publish: Option<zmq::Socket>,
    bundle: Option<Bundle>,
    decoder: Option<Decoder>,
    routes: Routes,
    seq: u64,
    clock: i64,
    idle_base: Option<(i64, Instant)>,
    paused_since: Option<Instant>,
    stopping: Option<Instant>,
    lists: std::collections::BTreeMap<String, Vec<String>>,
    channels: Channels,
    commands: Option<Receiver<Command>>,
    /// Commands received while waiting for a checkpoint to be stored.
    deferred: VecDeque<Command>,
    /// The most recent accepted events, raw (for rule diffs and tests).
    sample: Sample,
    /// Socket monitors of the ingest sockets (disconnects are counted).
    monitors: Vec<zmq::Socket>,
    /// Per input: highest event time, and when it last sent an event.
    inputs: std::collections::BTreeMap<u32, (i64, Instant)>,
    /// Per Kafka partition: the next offset after the last event accepted.
    offsets: BTreeMap<i32, i64>,
    ckpt: Option<Ckpt>,
    seen: SeenAlerts,
    recovering: Vec<Recovery>,
    /// Counts what a checkpoint would record differently: accepted events,
    /// consumed Kafka offsets, announced inputs, deploys, list changes.
    /// Equal to the last durable checkpoint's: nothing to checkpoint.
    changes: u64,
}

/// Accepted events kept for [`Command::Sample`] (and at most
/// [`RouterConfig::sample_bytes`] of them).
const SAMPLE_SIZE: usize = 10_000;

/// The largest frame the ingest sockets take (`ZMQ_MAXMSGSIZE`): a frame a
/// little over `--max-event-bytes` is still read and refused by index with
/// `oversize` (a producer's mistake deserves a reason); one far over it is
/// cut off by libzmq while it arrives, before it is buffered, and the
/// producer's connection is closed (counted as an ingest disconnect).
pub fn transport_frame_limit(max_event_bytes: usize) -> usize {
    max_event_bytes
        .saturating_mul(2)
        .max(max_event_bytes.saturating_add(64 << 10))
}

/// Bytes a replay-log entry costs besides its frame (counted against
/// [`RouterConfig::replay_log_bytes`]).
const LOG_ENTRY_OVERHEAD: usize = 48;

impl Router {
    pub fn new(
        ctx: zmq::Context,
        cfg: RouterConfig,
        status: Arc<Status>,
    ) -> anyhow::Result<Router> {
        let n = cfg.nodes.len();
        anyhow::ensure!(n > 0, "the router needs at least one node");
        anyhow::ensure!(n <= SHARDS as usize, "at most {SHARDS} nodes");
        // Contiguous ranges: node i owns [i*S/n, (i+1)*S/n).
        let shard_owner: Vec<u16> = (0..SHARDS as usize)
            .map(|s| (s * n / SHARDS as usize) as u16)
            .collect();
        let gateway_id = cep_engine::node::random_u64();
        let mut links = vec![];
        for (i, ep) in cfg.nodes.iter().enumerate() {
            let sock = ctx.socket(zmq::DEALER)?;
            sock.set_immediate(true)?;
            sock.set_linger(0)?;
            sock.set_sndhwm(1_000)?;
            sock.set_rcvhwm(100_000)?;
            sock.set_reconnect_ivl(100)?;
            sock.set_reconnect_ivl_max(1_000)?;
            sock.connect(ep)
                .map_err(|e| anyhow::anyhow!("cannot connect to node {ep}: {e}"))?;
            let shards: Vec<u16> = (0..SHARDS)
                .filter(|s| shard_owner[*s as usize] == i as u16)
                .collect();
            links.push(Link {
                name: format!("node-{i}"),
                endpoint: ep.clone(),
                index: i as u16,
                sock,
                home: shards.clone(),
                shards,
                needs_restore: false,
                shed: false,
                state: LinkState::Connecting,
                alive: cfg.in_process.get(i).cloned(),
                busy_reported: false,
                instance: None,
                credits: 0,
                current: None,
                current_last_seq: 0,
                queue: VecDeque::new(),
                queued_copies: 0,
                last_heard: Instant::now(),
                last_hello: Instant::now() - Duration::from_secs(10),
                acked_version: 0,
                sent_seq: 0,
                processed_seq: 0,
                stats: wire::Stats::default(),
            });
        }
        let frame_limit =
            i64::try_from(transport_frame_limit(cfg.max_event_bytes)).unwrap_or(i64::MAX);
        let mut monitors = vec![];
        let mut bind = |kind: zmq::SocketType,
                        ep: &Option<String>,
                        what: &str|
         -> anyhow::Result<Option<zmq::Socket>> {
            let Some(ep) = ep else { return Ok(None) };
            let s = ctx.socket(kind)?;
            s.set_linger(500)?;
            s.set_rcvhwm(10_000)?;
            s.set_sndhwm(100_000)?;
            s.set_maxmsgsize(frame_limit)?;
            s.bind(ep)
                .map_err(|e| anyhow::anyhow!("cannot bind the {what} endpoint {ep}: {e}"))?;
            if kind != zmq::PUB {
                monitors.push(ingest_monitor(&ctx, &s, gateway_id, monitors.len())?);
            }
            Ok(Some(s))
        };
        let pull = bind(zmq::PULL, &cfg.pull, "PULL ingest")?;
        let router = bind(zmq::ROUTER, &cfg.router, "ROUTER ingest")?;
        let publish = bind(zmq::PUB, &cfg.publish, "alert PUB")?;
        let sample = Sample::new(SAMPLE_SIZE, cfg.sample_bytes);
        let seen = SeenAlerts::new(cfg.dedup_window);
        Ok(Router {
            cfg,
            status,
            _ctx: ctx,
            gateway_id,
            links,
            shard_owner,
            pull,
            router,
            publish,
            bundle: None,
            decoder: None,
            routes: Routes::default(),
            seq: 0,
            clock: i64::MIN,
            idle_base: None,
            paused_since: None,
            stopping: None,
            lists: std::collections::BTreeMap::new(),
            channels: Channels::default(),
            commands: None,
            deferred: VecDeque::new(),
            sample,
            monitors,
            inputs: std::collections::BTreeMap::new(),
            offsets: BTreeMap::new(),
            ckpt: None,
            seen,
            recovering: vec![],
            changes: 0,
        })
    }

    /// Alert ids already published (the newest stored, at a restart): alerts
    /// emitted again with these ids are dropped.
    pub fn with_seen_alerts(mut self, ids: &[String]) -> Router {
        for id in ids.iter().rev() {
            self.seen.first(id);
        }
        self
    }

    /// Turns checkpoints on, resuming from `cfg.resume` if there is one: the
    /// sequence number, the clock and the inputs' positions continue from it,
    /// and every node's shards are restored from it when the node connects.
    pub fn with_checkpoints(mut self, cfg: Checkpoints) -> Router {
        let mut durable = None;
        let mut durable_shards = vec![false; SHARDS as usize];
        let mut next_id = 1;
        if let Some(m) = &cfg.resume {
            self.seq = m.seq;
            self.clock = m.clock;
            let now = Instant::now();
            self.inputs = m.inputs.iter().map(|(i, ts)| (*i, (*ts, now))).collect();
            self.offsets = m.offsets.clone();
            durable = Some((m.id, m.seq));
            for sh in &m.shards {
                if let Some(x) = durable_shards.get_mut(sh.shard as usize) {
                    *x = true;
                }
            }
            next_id = m.id + 1;
            if m.clock != i64::MIN {
                self.idle_base = Some((m.clock, now));
            }
            if let Some((base, wall_at)) = m.idle_base {
                self.resume_idle_base(base, wall_at, now);
            }
            let ahead = m.clock.saturating_sub(self.cfg.wall.now_ms());
            if m.clock != i64::MIN && ahead > self.cfg.max_future_ms {
                error!(
                    checkpoint = m.id,
                    clock = m.clock,
                    ahead_ms = ahead,
                    "the checkpoint's event clock is ahead of the wall clock by more than --max-future: \
                     events up to it will be late (a far-future event accepted before this limit existed?); \
                     see docs/operations.md, 'Event time and the wall clock'"
                );
            }
            info!(
                checkpoint = m.id,
                seq = m.seq,
                shards = m.shards.len(),
                offsets = ?m.offsets,
                clock = m.clock,
                "resuming from checkpoint"
            );
        }
        self.ckpt = Some(Ckpt {
            durable_changes: durable.map(|_| 0),
            pending_changes: None,
            cfg,
            next_id,
            last_started: Instant::now(),
            durable,
            durable_shards,
            inflight: None,
            storing: None,
            storing_late: None,
            log: VecDeque::new(),
            log_bytes: 0,
            last: None,
        });
        self
    }

    /// Connects the HTTP ingest and the alert consumer.
    pub fn with_channels(mut self, channels: Channels) -> Router {
        self.channels = channels;
        self
    }

    /// Runs until a `Shutdown` command has been carried out.
    pub fn run(mut self, commands: Receiver<Command>) {
        let mut last_ping = Instant::now();
        let mut last_view = Instant::now();
        let mut last_turn = Instant::now();
        self.commands = Some(commands);
        loop {
            // A long turn (waiting on a full alert queue behind a stalled
            // store, reading a checkpoint) is time nobody listened to the
            // nodes: it does not count as their silence.
            let now = Instant::now();
            let gap = now.duration_since(last_turn);
            if gap > DEAF_GAP {
                for l in &mut self.links {
                    l.last_heard = (l.last_heard + gap).min(now);
                }
            }
            last_turn = now;
            self.drain_commands();
            if let Some(since) = self.stopping {
                let drained = self.drained();
                let done = drained && self.last_checkpoint_done();
                if done || since.elapsed() > Duration::from_secs(15) {
                    self.publish_view();
                    info!(drained, "router stopped");
                    return;
                }
            }
            let ingest_open =
                self.stopping.is_none() && self.decoder.is_some() && !self.backpressured();
            self.wait(ingest_open);
            self.read_nodes();
            if ingest_open {
                self.read_ingest();
            }
            self.flush();
            if last_ping.elapsed() >= self.cfg.ping_every {
                last_ping = Instant::now();
                self.housekeeping();
            }
            if last_view.elapsed() >= Duration::from_millis(100) {
                last_view = Instant::now();
                self.publish_view();
            }
            if self.stopping.is_none() {
                self.maybe_checkpoint(false);
            }
        }
    }

    /// Carries out every pending command. Called before HTTP ingest too, so a
    /// change the API acknowledged (deploy, list) applies to every event
    /// posted after the acknowledgement.
    fn drain_commands(&mut self) {
        loop {
            let Some(rx) = &self.commands else { return };
            let next = match self.deferred.pop_front() {
                Some(c) => Ok(c),
                None => rx.try_recv(),
            };
            match next {
                Ok(Command::Deploy(b)) => self.deploy(b),
                Ok(Command::SetList { name, entries }) => self.set_list(name, entries),
                Ok(Command::Sample(reply)) => {
                    let _ = reply.send(self.sample.snapshot());
                }
                Ok(Command::CheckpointStored { id, result }) => self.on_stored(id, result),
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                    if self.stopping.is_none() {
                        info!("router: stopping ingest, delivering queued events");
                        self.stopping = Some(Instant::now());
                    }
                    return;
                }
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    fn drained(&self) -> bool {
        self.links
            .iter()
            .filter(|l| l.state == LinkState::Up)
            .all(|l| l.pending() == 0 && l.queue.is_empty() && l.processed_seq >= l.sent_seq)
    }

    /// Blocks until a socket is readable or a short timeout passes.
    fn wait(&mut self, ingest_open: bool) {
        let pending_out = self.links.iter().any(|l| {
            l.state == LinkState::Up
                && (l.current.is_some() || !l.queue.is_empty())
                && l.credits > 0
        });
        let timeout = if pending_out { 0 } else { 2 };
        let mut items = vec![];
        for l in &self.links {
            items.push(l.sock.as_poll_item(zmq::POLLIN));
        }
        if ingest_open {
            if let Some(s) = &self.pull {
                items.push(s.as_poll_item(zmq::POLLIN));
            }
            if let Some(s) = &self.router {
                items.push(s.as_poll_item(zmq::POLLIN));
            }
        }
        match zmq::poll(&mut items, timeout) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(e) => warn!(error = %e, "poll failed"),
        }
    }

    fn backpressured(&mut self) -> bool {
        let log_full = self
            .ckpt
            .as_ref()
            .is_some_and(|c| c.log_bytes >= self.cfg.replay_log_bytes);
        // The store cannot take alerts (a full disk, Redis gone): take no
        // more events until it can; what is in flight waits in the queue.
        let store_failing = self.status.store_failing.load(Ordering::Relaxed);
        let alerts_full = self
            .channels
            .alerts
            .as_ref()
            .is_some_and(|tx| tx.capacity() < ALERT_HEADROOM);
        let full = log_full
            || store_failing
            || alerts_full
            || self
                .links
                .iter()
                .any(|l| l.state.live() && l.pending() >= self.cfg.pending_cap);
        match (full, self.paused_since) {
            (true, None) => {
                self.paused_since = Some(Instant::now());
                self.status
                    .counters
                    .ingest_pauses
                    .fetch_add(1, Ordering::Relaxed);
            }
            (false, Some(t)) => {
                self.paused_since = None;
                self.status
                    .counters
                    .ingest_paused_us
                    .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            _ => {}
        }
        full
    }

    // -- rules ---------------------------------------------------------------

    fn deploy(&mut self, b: Bundle) {
        self.changes += 1;
        info!(
            version = b.version,
            rules = b.rules.len(),
            "deploying rule set"
        );
        let clock = self.clock;
        let old = self.bundle.as_ref().map_or(0, |b| b.version);
        for l in &mut self.links {
            l.seal(clock, old);
        }
        self.decoder = Some(Decoder::new(&b.set));
        self.routes = Routes::new(&b.set);
        self.status
            .rules_version
            .store(b.version, Ordering::Relaxed);
        self.status
            .rules
            .store(b.rules.len() as u64, Ordering::Relaxed);
        self.status.counters.deploys.fetch_add(1, Ordering::Relaxed);
        let msg = wire::encode(&deploy_msg(&b));
        for l in &mut self.links {
            if l.state != LinkState::Connecting {
                // In the same queue as the events: the node switches rules at
                // exactly this point of its stream.
                l.queue.push_back(Outgoing::control(msg.clone()));
                if l.state == LinkState::Up {
                    l.state = LinkState::Syncing;
                }
            }
        }
        self.bundle = Some(b);
        // Nodes that connected before any rules: restore them now.
        for i in 0..self.links.len() {
            if self.links[i].needs_restore && self.links[i].state != LinkState::Connecting {
                self.links[i].needs_restore = false;
                let shards = self.links[i].shards.clone();
                self.restore_into(i, &shards);
            }
        }
    }

    fn set_list(&mut self, name: String, entries: Vec<String>) {
        self.changes += 1;
        let msg = wire::encode(&Msg::SetList {
            name: name.clone(),
            entries: entries.clone(),
        });
        for l in &mut self.links {
            // In the event stream: events after this point see the new list.
            let (clock, version) = (self.clock, self.bundle.as_ref().map_or(0, |b| b.version));
            l.seal(clock, version);
            l.queue.push_back(Outgoing::control(msg.clone()));
        }
        self.lists.insert(name, entries);
    }

    // -- ingest --------------------------------------------------------------

    fn read_ingest(&mut self) {
        // HTTP batches first: their callers are waiting.
        while !self.backpressured() {
            let Some(rx) = &mut self.channels.http else {
                break;
            };
            let Ok(req) = rx.try_recv() else { break };
            // The request was sent after any command the API acknowledged
            // before it: take those first.
            self.drain_commands();
            if req.events.is_empty() {
                // An announcement of inputs (a Kafka source's partitions):
                // until each has sent an event, it holds the clock back.
                for i in req.inputs.iter().flatten() {
                    self.inputs.entry(*i).or_insert((i64::MIN, Instant::now()));
                }
                self.changes += 1;
                let _ = req.reply.send(vec![]);
                continue;
            }
            let results: Vec<Result<(), Rejection>> = req
                .events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let input = req
                        .inputs
                        .as_ref()
                        .and_then(|v| v.get(i))
                        .copied()
                        .unwrap_or(0);
                    let r = self.ingest_from(input, e);
                    if let Err(rej) = &r {
                        self.status.reject(rej.reason);
                    }
                    // Accepted or refused, the message is consumed.
                    if let Some(o) = req.offsets.as_ref().and_then(|v| v.get(i)) {
                        self.changes += 1;
                        let p = input.saturating_sub(1) as i32;
                        if let Some(prev) = self.offsets.insert(p, o + 1)
                            && prev != *o
                        {
                            warn!(
                                partition = p,
                                expected = prev,
                                got = *o,
                                "Kafka offsets are not contiguous"
                            );
                        }
                    }
                    r
                })
                .collect();
            let _ = req.reply.send(results);
        }
        const BUDGET: usize = 4096;
        let max_frames = self.cfg.max_frames;
        let mut n = 0;
        while n < BUDGET && !self.backpressured() {
            let Some(sock) = &self.pull else { break };
            let Some(msg) = recv_capped(sock, max_frames) else {
                break;
            };
            if msg.total > max_frames {
                n += 1;
                self.status.reject_many("too_many_frames", msg.total as u64);
                continue;
            }
            for f in &msg.frames {
                n += 1;
                if let Err(r) = self.ingest(&f[..]) {
                    self.status.reject(r.reason);
                }
            }
        }
        let mut n = 0;
        while n < BUDGET && !self.backpressured() {
            let Some(sock) = &self.router else { break };
            // The peer's identity, a REQ delimiter, then the events.
            let Some(msg) = recv_capped(sock, max_frames.saturating_add(2)) else {
                break;
            };
            let frames = &msg.frames;
            let Some((peer, rest)) = frames.split_first() else {
                continue;
            };
            // REQ peers put an empty delimiter frame first; echo it back. A
            // lone empty frame can only come from a DEALER (a REQ message
            // has a delimiter and at least one frame): it is an empty event.
            let (delim, events) = match rest.split_first() {
                Some((d, ev)) if d.is_empty() && !ev.is_empty() => (true, ev),
                _ => (false, rest),
            };
            let mut ack = Ack {
                accepted: 0,
                rejected: vec![],
            };
            let frames_in = msg.total.saturating_sub(1 + usize::from(delim));
            if frames_in > max_frames {
                // Refused whole: nothing of it is ingested.
                n += 1;
                self.status.reject_many("too_many_frames", frames_in as u64);
                ack.rejected.push(AckRejection {
                    index: 0,
                    reason: "too_many_frames".to_string(),
                    message: format!(
                        "the message has {frames_in} event frames; the limit is {max_frames} \
                         per message (--max-frames): none of them was ingested"
                    ),
                });
            }
            let events = if frames_in > max_frames {
                &[][..]
            } else {
                events
            };
            for (i, f) in events.iter().enumerate() {
                n += 1;
                match self.ingest(&f[..]) {
                    Ok(()) => ack.accepted += 1,
                    Err(r) => {
                        self.status.reject(r.reason);
                        ack.rejected.push(AckRejection {
                            index: i,
                            reason: r.reason.to_string(),
                            message: r.detail,
                        });
                    }
                }
            }
            let body = serde_json::to_vec(&ack).unwrap_or_default();
            let mut reply: Vec<&[u8]> = vec![&peer[..]];
            if delim {
                reply.push(b"");
            }
            reply.push(&body);
            if let Some(sock) = &self.router
                && let Err(e) = sock.send_multipart(reply, zmq::DONTWAIT)
            {
                warn!(error = %e, "could not acknowledge a ROUTER batch");
            }
        }
    }

    /// Producer connections closed on the ingest sockets: by the producer,
    /// or by libzmq for a frame over the transport limit (it gives no
    /// reason, so both are counted; a producer that keeps its connection
    /// open and still shows here had a frame cut off).
    fn count_disconnects(&mut self) {
        let n: u64 = self.monitors.iter().map(disconnects).sum();
        if n > 0 {
            self.status
                .counters
                .ingest_disconnects
                .fetch_add(n, Ordering::Relaxed);
            info!(
                connections = n,
                frame_limit = transport_frame_limit(self.cfg.max_event_bytes),
                "ZeroMQ producer connections closed (by the producer, or by the gateway for a frame over the limit)"
            );
        }
    }

    /// Validates, numbers and routes one event.
    fn ingest(&mut self, frame: &[u8]) -> Result<(), Rejection> {
        self.ingest_from(0, frame)
    }

    /// Validates, numbers and routes one event from one input (0: ZeroMQ and
    /// HTTP; 1 + partition: Kafka).
    fn ingest_from(&mut self, input: u32, frame: &[u8]) -> Result<(), Rejection> {
        if frame.is_empty() {
            return Err(Rejection::new("empty", "the event is empty (zero bytes)"));
        }
        if frame.len() > self.cfg.max_event_bytes {
            return Err(Rejection::new(
                "oversize",
                format!(
                    "the event is {} bytes; the limit is {}",
                    frame.len(),
                    self.cfg.max_event_bytes
                ),
            ));
        }
        let Some(decoder) = &self.decoder else {
            return Err(Rejection::new("not_ready", "no rules are deployed yet"));
        };
        let seq = self.seq + 1;
        let ev = decoder.decode(frame, || format!("zmq:{seq}"))?;
        cep_engine::decode::check_not_future(
            ev.ts,
            self.cfg.wall.now_ms(),
            self.cfg.max_future_ms,
        )?;
        self.seq = seq;
        self.changes += 1;
        let before = self.clock;
        let now = Instant::now();
        let inp = self.inputs.entry(input).or_insert((ev.ts, now));
        inp.0 = inp.0.max(ev.ts);
        inp.1 = now;
        self.clock = self.clock.max(self.input_clock(now));
        self.idle_base = Some((self.clock, now));
        self.status
            .counters
            .events_accepted
            .fetch_add(1, Ordering::Relaxed);
        self.route(seq, before, &ev);
        if let Some(ck) = &mut self.ckpt {
            ck.log_bytes += frame.len() + LOG_ENTRY_OVERHEAD;
            ck.log.push_back(LogEntry {
                seq,
                clock: before,
                frame: frame.into(),
            });
        }
        self.sample.push(frame);
        self.status
            .sample_bytes
            .store(self.sample.bytes() as u64, Ordering::Relaxed);
        self.status
            .sample_events
            .store(self.sample.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The event-time clock over inputs (spec §5): the minimum of each input's
    /// highest `ts`, leaving out inputs silent for the idle period (so one
    /// quiet Kafka partition does not hold everything back). With one input
    /// it is that input's highest `ts`.
    fn input_clock(&self, now: Instant) -> i64 {
        let idle = Duration::from_millis(self.cfg.idle_ms.max(0) as u64);
        let active = self.inputs.values().filter(|(_, seen)| {
            self.cfg.idle_ms <= 0 || self.inputs.len() == 1 || now.duration_since(*seen) < idle
        });
        active.map(|(ts, _)| *ts).min().unwrap_or(self.clock)
    }

    fn route(&mut self, seq: u64, clock: i64, ev: &Event) {
        let version = self.bundle.as_ref().map_or(0, |b| b.version);
        let mut copies = 0u64;
        let targets: Vec<(Route, u16)> = self.routes.targets(ev).collect();
        for (route, shard) in targets {
            let owner = self.shard_owner[shard as usize] as usize;
            let l = &mut self.links[owner];
            if !l.state.live() && l.pending() >= self.cfg.pending_cap {
                self.status
                    .counters
                    .copies_shed
                    .fetch_add(1, Ordering::Relaxed);
                // With checkpoints the replay log still has it: the node's
                // shards are rebuilt when it returns.
                l.shed = true;
                continue;
            }
            let w = l.current.get_or_insert_with(|| BatchWriter::new(version));
            w.push_parts(seq, shard, route, clock, ev);
            l.current_last_seq = seq;
            copies += 1;
            if w.len() >= self.cfg.batch_max {
                l.seal(self.clock, version);
            }
        }
        self.status
            .counters
            .event_copies_routed
            .fetch_add(copies, Ordering::Relaxed);
    }

    // -- node links ----------------------------------------------------------

    fn flush(&mut self) {
        let version = self.bundle.as_ref().map_or(0, |b| b.version);
        let clock = self.clock;
        for l in &mut self.links {
            if !matches!(l.state, LinkState::Up | LinkState::Syncing) {
                continue;
            }
            // Partial batches go out when there is nothing else to send: low
            // latency when idle, full batches under load.
            if l.queue.is_empty()
                && let Some(w) = &l.current
                && (w.len() as u64) <= l.credits
            {
                l.seal(clock, version);
            }
            while let Some(front) = l.queue.front() {
                if u64::from(front.copies) > l.credits {
                    break;
                }
                if l.sock.send(front.bytes.as_slice(), zmq::DONTWAIT).is_err() {
                    break;
                }
                let Some(sent) = l.queue.pop_front() else {
                    break;
                };
                l.credits -= u64::from(sent.copies);
                l.queued_copies -= sent.copies as usize;
                if sent.copies > 0 {
                    l.sent_seq = l.sent_seq.max(sent.last_seq);
                    self.status
                        .counters
                        .batches_sent
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn read_nodes(&mut self) {
        for i in 0..self.links.len() {
            for _ in 0..1024 {
                let Ok(body) = self.links[i].sock.recv_bytes(zmq::DONTWAIT) else {
                    break;
                };
                match wire::decode(&body) {
                    Ok(msg) => self.on_node_msg(i, msg),
                    Err(e) => {
                        let l = &self.links[i];
                        error!(node = %l.name, error = %e, "undecodable message from a node");
                        self.status
                            .counters
                            .node_errors
                            .fetch_add(1, Ordering::Relaxed);
                        l.send(&Msg::Error {
                            text: e.to_string(),
                        });
                    }
                }
            }
        }
    }

    fn on_node_msg(&mut self, i: usize, msg: Msg) {
        let current = self.bundle.as_ref().map_or(0, |b| b.version);
        let checkpoints = self.ckpt.is_some();
        let mut then = After::Nothing;
        let l = &mut self.links[i];
        l.last_heard = Instant::now();
        match msg {
            Msg::Welcome(w)
                if l.instance == Some(w.instance)
                    && matches!(l.state, LinkState::Syncing | LinkState::Up) =>
            {
                // A second answer to a repeated Hello: the session is open
                // and its stream already rebuilt; redoing it would drop what
                // is queued.
                tracing::debug!(node = %l.name, "duplicate welcome ignored");
            }
            Msg::Welcome(w) => {
                let new_process = l.instance != Some(w.instance);
                let restarted = l.instance.is_some() && new_process;
                if restarted {
                    warn!(node = %l.name, "node restarted: its engine state is gone");
                }
                info!(node = %l.name, name = %w.name, instance = w.instance, credits = w.credits, "node connected");
                l.instance = Some(w.instance);
                l.credits = u64::from(w.credits);
                if new_process {
                    // What was in flight died with the old process. The same
                    // process still works through it and reports it in its
                    // credits: its lag stays true until then.
                    l.processed_seq = l.sent_seq;
                }
                if checkpoints && (new_process || l.shed) {
                    l.shed = false;
                    // A process new to this gateway holds none of our state:
                    // its stream restarts with the rules, the lists, then its
                    // shards from the checkpoint and the replay since.
                    let dropped = l.queued_copies + l.current.as_ref().map_or(0, BatchWriter::len);
                    l.queue.clear();
                    l.current = None;
                    l.queued_copies = 0;
                    if let Some(b) = &self.bundle {
                        l.queue
                            .push_back(Outgoing::control(wire::encode(&deploy_msg(b))));
                        l.state = LinkState::Syncing;
                        then = After::Restore;
                    } else {
                        l.state = LinkState::Up;
                        l.needs_restore = true;
                    }
                    for (name, entries) in &self.lists {
                        l.queue
                            .push_back(Outgoing::control(wire::encode(&Msg::SetList {
                                name: name.clone(),
                                entries: entries.clone(),
                            })));
                    }
                    if dropped > 0 {
                        info!(node = %l.name, copies = dropped, "queued copies dropped: the replay log resends them");
                    }
                } else if w.rules_version != current || restarted {
                    // Batches encoded for another version would be refused.
                    let before = l.queued_copies;
                    l.queue.retain(|o| o.version == current);
                    l.queued_copies = l.queue.iter().map(|o| o.copies as usize).sum();
                    let dropped = before - l.queued_copies;
                    if dropped > 0 {
                        self.status
                            .counters
                            .copies_shed
                            .fetch_add(dropped as u64, Ordering::Relaxed);
                    }
                    // Lists, then the rules, ahead of any queued batch.
                    for (name, entries) in self.lists.iter().rev() {
                        l.queue
                            .push_front(Outgoing::control(wire::encode(&Msg::SetList {
                                name: name.clone(),
                                entries: entries.clone(),
                            })));
                    }
                    if let Some(b) = &self.bundle {
                        l.queue
                            .push_front(Outgoing::control(wire::encode(&deploy_msg(b))));
                    }
                    l.state = LinkState::Syncing;
                } else {
                    l.acked_version = w.rules_version;
                    l.state = LinkState::Up;
                }
                if checkpoints && !new_process {
                    // The same process is back: the Hello it answered may
                    // predate a move of its shards. Whatever it holds beyond
                    // what it owns now goes, before anything else is sent.
                    let mut owns = vec![false; SHARDS as usize];
                    for &s in &l.shards {
                        owns[s as usize] = true;
                    }
                    let others: Vec<u16> = (0..SHARDS).filter(|s| !owns[*s as usize]).collect();
                    l.queue
                        .push_front(Outgoing::control(wire::encode(&Msg::Release {
                            shards: others,
                        })));
                }
            }
            Msg::DeployAck(a) => match a.error {
                None => {
                    l.acked_version = a.version;
                    if a.version == current {
                        info!(node = %l.name, version = a.version, "node runs the current rules");
                        l.state = LinkState::Up;
                    }
                }
                Some(e) => {
                    error!(node = %l.name, version = a.version, error = %e, "node refused the rules");
                    self.status
                        .counters
                        .node_errors
                        .fetch_add(1, Ordering::Relaxed);
                }
            },
            Msg::Credit(c) => {
                l.credits += u64::from(c.grant);
                l.processed_seq = l.processed_seq.max(c.processed_seq);
                if !self.recovering.is_empty() {
                    then = After::Granted(i64::from(c.grant));
                }
            }
            Msg::ShardState {
                checkpoint,
                shard,
                state,
            } => {
                // Only the owner's state counts (a node may still hold a
                // stale engine for a shard that moved away).
                let owner = self.shard_owner.get(shard as usize).copied();
                if let Some(f) = self.ckpt.as_mut().and_then(|c| c.inflight.as_mut())
                    && f.manifest.id == checkpoint
                    && owner == Some(i as u16)
                {
                    f.shards.push((shard, state));
                }
            }
            Msg::CheckpointDone { id, .. } => then = After::CheckpointDone(id),
            Msg::Alerts(alerts) => self.publish_alerts(alerts),
            Msg::Stats(s) => {
                if l.state == LinkState::Down {
                    info!(node = %l.name, "node answers again");
                    l.state = LinkState::Connecting;
                    l.last_hello = Instant::now() - Duration::from_secs(10);
                } else if l.instance.is_some_and(|x| x != s.instance)
                    && matches!(l.state, LinkState::Syncing | LinkState::Up)
                {
                    // ZeroMQ reconnected us to a new process before we saw
                    // the old one die: what we sent since went to a node
                    // without our session. Open one; its Welcome rebuilds
                    // the stream (checkpoint, replay).
                    warn!(node = %l.name, "node restarted behind a live link; reopening the session");
                    l.state = LinkState::Connecting;
                    l.credits = 0;
                    l.last_hello = Instant::now() - Duration::from_secs(10);
                }
                l.stats = s;
            }
            Msg::Bye { reason } => {
                info!(node = %l.name, %reason, "node said bye");
                l.state = LinkState::Stopped;
                l.credits = 0;
                then = After::FailOver;
            }
            Msg::Error { text } => {
                warn!(node = %l.name, %text, "node reported an error");
                self.status
                    .counters
                    .node_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
            other => {
                warn!(node = %l.name, kind = other.kind(), "unexpected message from a node");
            }
        }
        match then {
            After::Nothing => {}
            After::Restore => {
                let shards = self.links[i].shards.clone();
                self.restore_into(i, &shards);
                self.abandon_checkpoint(i, "a node restarted");
            }
            After::Granted(n) => {
                let now = Instant::now();
                let mut done = None;
                self.recovering.retain_mut(|r| {
                    if r.link == i {
                        r.remaining -= n;
                        if r.remaining <= 0 {
                            done = Some(now.duration_since(r.started));
                            return false;
                        }
                    }
                    true
                });
                if let Some(d) = done {
                    info!(node = %self.links[i].name, ms = d.as_millis() as u64, "node caught up after a restore");
                    if let Ok(mut v) = self.status.checkpoint.lock() {
                        v.last_recovery_ms = Some(d.as_millis() as u64);
                    }
                }
            }
            After::CheckpointDone(id) => self.node_checkpointed(i, id),
            After::FailOver => self.fail_over(i),
        }
    }

    // -- checkpoints and recovery -------------------------------------------

    /// Starts a checkpoint when one is due (`force`: now, if possible).
    fn maybe_checkpoint(&mut self, force: bool) -> Option<u64> {
        let ck = self.ckpt.as_ref()?;
        if ck.inflight.is_some() || ck.storing.is_some() || self.bundle.is_none() {
            return None;
        }
        let due = ck.last_started.elapsed() >= self.cfg.checkpoint_every
            || ck.log_bytes >= self.cfg.replay_log_bytes / 2;
        if !(force || due) {
            return None;
        }
        if self.unchanged() {
            // Nothing a checkpoint records has changed: the durable one
            // restores exactly this state (docs/operations.md).
            if let Some(ck) = self.ckpt.as_mut() {
                ck.last_started = Instant::now();
            }
            self.status
                .counters
                .checkpoints_skipped
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // Every shard must be on a node in step with us; otherwise wait
        // (a failover or a restore is under way).
        let owners: Vec<usize> = (0..self.links.len())
            .filter(|&i| !self.links[i].shards.is_empty())
            .collect();
        if owners
            .iter()
            .any(|&i| self.links[i].state != LinkState::Up || self.links[i].needs_restore)
        {
            return None;
        }
        let version = self.bundle.as_ref().map_or(0, |b| b.version);
        let wall = self.cfg.wall.now_ms();
        let idle_base = self
            .idle_base
            .map(|(b, at)| (b, wall.saturating_sub(at.elapsed().as_millis() as i64)));
        let ck = self.ckpt.as_mut()?;
        let id = ck.next_id;
        ck.next_id += 1;
        ck.last_started = Instant::now();
        ck.pending_changes = Some((id, self.changes));
        let msg = wire::encode(&Msg::Checkpoint { id });
        for &i in &owners {
            let l = &mut self.links[i];
            // After every copy routed so far: the barrier is at `self.seq`.
            l.seal(self.clock, version);
            l.queue.push_back(Outgoing::control(msg.clone()));
        }
        ck.inflight = Some(Inflight {
            manifest: CheckpointManifest {
                id,
                seq: self.seq,
                clock: self.clock,
                inputs: self.inputs.iter().map(|(i, (ts, _))| (*i, *ts)).collect(),
                offsets: self.offsets.clone(),
                rules_version: version,
                created_ms: 0,
                shards: vec![],
                bytes: 0,
                idle_base,
            },
            waiting: owners,
            shards: vec![],
            started: Instant::now(),
        });
        Some(id)
    }

    /// True when a checkpoint now would record nothing the durable one does
    /// not: no event accepted, Kafka offset consumed, input announced, rule
    /// deploy or list change since it, and no node that is up waiting for
    /// its shards to move back (a durable checkpoint is what moves them). The event clock may have moved
    /// without events (live mode): the durable checkpoint carries the idle
    /// base it follows from, and restored shards are advanced to the
    /// current clock, so a restore is the same either way.
    fn unchanged(&self) -> bool {
        if !self.cfg.skip_unchanged_checkpoints {
            return false;
        }
        let Some(ck) = &self.ckpt else { return false };
        ck.durable_changes == Some(self.changes)
            && ck.inflight.is_none()
            && ck.storing.is_none()
            && !self.links.iter().enumerate().any(|(h, l)| {
                // A node back up waits for a checkpoint to get its shards.
                l.state == LinkState::Up
                    && l.home
                        .iter()
                        .any(|&s| self.shard_owner[s as usize] as usize != h)
            })
    }

    /// At a restart: the idle base the checkpoint recorded (event clock at
    /// the last event, wall time then), so an idle clock goes on following
    /// the wall clock from where it would have been, downtime included.
    fn resume_idle_base(&mut self, base: i64, wall_at: i64, now: Instant) {
        if self.cfg.idle_ms <= 0 {
            return;
        }
        let away = self.cfg.wall.now_ms().saturating_sub(wall_at).max(0);
        match now.checked_sub(Duration::from_millis(away as u64)) {
            Some(at) => self.idle_base = Some((base, at)),
            None => {
                // Longer ago than this machine's monotonic clock reaches
                // (a reboot): the same clock, counted from now.
                let moved = base.saturating_add(away);
                if away >= self.cfg.idle_ms {
                    self.clock = self.clock.max(moved);
                }
                self.idle_base = Some((moved, now));
            }
        }
    }

    /// Shutdown: true once the last checkpoint is durable (or cannot be had).
    fn last_checkpoint_done(&mut self) -> bool {
        let Some(ck) = &self.ckpt else { return true };
        match ck.last {
            Some(0) => true,
            Some(id) => {
                ck.durable.is_some_and(|(d, _)| d >= id)
                    || ck.storing.is_none() && ck.inflight.is_none()
            }
            None => {
                if ck.inflight.is_some() || ck.storing.is_some() {
                    return false; // let the running one finish first
                }
                if self.unchanged() {
                    // The durable checkpoint already holds this state.
                    self.status
                        .counters
                        .checkpoints_skipped
                        .fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                let started = self.maybe_checkpoint(true);
                if let Some(ck) = &mut self.ckpt {
                    ck.last = Some(started.unwrap_or(0));
                    if started.is_none() {
                        warn!("no shutdown checkpoint: not every shard is on a node in step");
                    }
                }
                false
            }
        }
    }

    /// Drops the checkpoint in flight if link `i` was part of it.
    fn abandon_checkpoint(&mut self, i: usize, why: &str) {
        let Some(ck) = &mut self.ckpt else { return };
        if ck.inflight.as_ref().is_some_and(|f| f.waiting.contains(&i)) {
            let id = ck.inflight.as_ref().map_or(0, |f| f.manifest.id);
            ck.inflight = None;
            self.status
                .counters
                .checkpoint_failures
                .fetch_add(1, Ordering::Relaxed);
            warn!(checkpoint = id, "checkpoint abandoned: {why}");
        }
    }

    /// Link `i` sent all its shard states for checkpoint `id`.
    fn node_checkpointed(&mut self, i: usize, id: u64) {
        let Some(ck) = &mut self.ckpt else { return };
        let Some(f) = ck.inflight.as_mut().filter(|f| f.manifest.id == id) else {
            return;
        };
        f.waiting.retain(|&w| w != i);
        if !f.waiting.is_empty() {
            return;
        }
        let Some(f) = ck.inflight.take() else { return };
        let snapshot_ms = f.started.elapsed().as_millis() as u64;
        ck.storing = Some((id, f.started, snapshot_ms));
        let job = CheckpointJob {
            manifest: f.manifest,
            shards: f.shards,
        };
        // Behind the alerts already handed over (see `ToWriter`).
        let sent = self
            .channels
            .alerts
            .as_ref()
            .is_some_and(|tx| tx.blocking_send(ToWriter::Checkpoint(job)).is_ok());
        if !sent {
            if let Some(ck) = &mut self.ckpt {
                ck.storing = None;
            }
            error!(
                checkpoint = id,
                "the alert writer is gone: checkpoint not stored"
            );
        }
    }

    /// The store's answer for checkpoint `id`; shards away from home move
    /// back after a success.
    fn on_stored(&mut self, id: u64, result: Result<CheckpointManifest, String>) {
        if self.stored(id, result) && self.stopping.is_none() {
            self.move_back();
        }
    }

    /// Records the store's answer for checkpoint `id`; true if it is durable.
    fn stored(&mut self, id: u64, result: Result<CheckpointManifest, String>) -> bool {
        let Some(ck) = &mut self.ckpt else {
            return false;
        };
        let Some((_, started, snapshot_ms)) = ck.storing.take().filter(|s| s.0 == id) else {
            return false;
        };
        let m = match result {
            Ok(m) => m,
            Err(e) => {
                self.status
                    .counters
                    .checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed);
                error!(checkpoint = id, error = %e, "checkpoint not stored; the previous one stays current");
                return false;
            }
        };
        ck.durable = Some((m.id, m.seq));
        if let Some((_, n)) = ck.pending_changes.take().filter(|p| p.0 == m.id) {
            ck.durable_changes = Some(n);
        }
        ck.durable_shards = vec![false; SHARDS as usize];
        for sh in &m.shards {
            if let Some(x) = ck.durable_shards.get_mut(sh.shard as usize) {
                *x = true;
            }
        }
        while ck.log.front().is_some_and(|e| e.seq <= m.seq) {
            if let Some(e) = ck.log.pop_front() {
                ck.log_bytes -= e.frame.len() + LOG_ENTRY_OVERHEAD;
            }
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        self.status
            .counters
            .checkpoints
            .fetch_add(1, Ordering::Relaxed);
        if let Ok(mut v) = self.status.checkpoint.lock() {
            v.id = m.id;
            v.seq = m.seq;
            v.shards = m.shards.len();
            v.bytes = m.bytes;
            v.duration_ms = duration_ms;
            v.snapshot_ms = snapshot_ms;
            v.offsets = m.offsets.clone();
        }
        tracing::debug!(
            checkpoint = m.id,
            seq = m.seq,
            bytes = m.bytes,
            shards = m.shards.len(),
            duration_ms,
            offsets = ?m.offsets,
            "checkpoint durable"
        );
        // Only now may Kafka forget the events it covers.
        if let Some(tx) = &ck.cfg.committed
            && !m.offsets.is_empty()
        {
            let _ = tx.send(m.offsets.clone());
        }
        true
    }

    /// Takes the store's answer for the checkpoint being stored if it has
    /// already come: once stored it replaces the one a restore would read.
    /// Other commands taken meanwhile keep their order.
    fn settle_storing(&mut self) {
        // Without waiting: a restore from the durable checkpoint plus the
        // replay log (which still holds everything since it) is as exact as
        // one from the checkpoint being stored, and the router must not stop
        // listening for a slow store.
        while self.ckpt.as_ref().is_some_and(|c| c.storing.is_some()) {
            let Some(rx) = &self.commands else { return };
            match rx.try_recv() {
                Ok(Command::CheckpointStored { id, result }) => {
                    self.stored(id, result);
                }
                Ok(other) => self.deferred.push_back(other),
                Err(_) => return,
            }
        }
    }

    /// Counts (once) a checkpoint the store has not taken after
    /// [`STORE_LATE`]: a failing store shows in the checkpoint failures.
    fn check_storing_late(&mut self) {
        let Some(ck) = &mut self.ckpt else { return };
        let Some((id, started, _)) = ck.storing else {
            return;
        };
        if started.elapsed() > STORE_LATE && ck.storing_late != Some(id) {
            ck.storing_late = Some(id);
            self.status
                .counters
                .checkpoint_failures
                .fetch_add(1, Ordering::Relaxed);
            error!(
                checkpoint = id,
                "checkpoint not stored within 30 s (is the store failing?); the previous one stays current until it is"
            );
        }
    }

    /// Link `i` is gone (timed out or said bye): its shards go to the live
    /// nodes, restored from the last checkpoint plus the replay log.
    fn fail_over(&mut self, i: usize) {
        if self.ckpt.is_none() || self.links[i].shards.is_empty() {
            return;
        }
        let live: Vec<usize> = (0..self.links.len())
            .filter(|&j| {
                j != i && matches!(self.links[j].state, LinkState::Up | LinkState::Syncing)
            })
            .collect();
        if live.is_empty() {
            warn!(node = %self.links[i].name, "no live node to take over its shards");
            return;
        }
        self.abandon_checkpoint(i, "a node went down");
        let l = &mut self.links[i];
        let shards = std::mem::take(&mut l.shards);
        l.queue.clear();
        l.current = None;
        l.queued_copies = 0;
        l.needs_restore = false;
        l.shed = false;
        self.recovering.retain(|r| r.link != i);
        warn!(node = %l.name, shards = shards.len(), to = live.len(), "failing over: its shards move to the live nodes");
        // Contiguous slices, one per live node.
        let per = shards.len().div_ceil(live.len());
        for (k, part) in shards.chunks(per.max(1)).enumerate() {
            let t = live[k % live.len()];
            for &s in part {
                self.shard_owner[s as usize] = t as u16;
            }
            self.links[t].shards.extend_from_slice(part);
            self.links[t].shards.sort_unstable();
            self.status
                .counters
                .shards_moved
                .fetch_add(part.len() as u64, Ordering::Relaxed);
            self.restore_into(t, part);
        }
    }

    /// After a durable checkpoint: shards away from their home node go back
    /// once that node is up again.
    fn move_back(&mut self) {
        for h in 0..self.links.len() {
            if self.links[h].state != LinkState::Up || self.links[h].needs_restore {
                continue;
            }
            let away: Vec<u16> = self.links[h]
                .home
                .iter()
                .copied()
                .filter(|&s| self.shard_owner[s as usize] as usize != h)
                .collect();
            if away.is_empty() {
                continue;
            }
            let version = self.bundle.as_ref().map_or(0, |b| b.version);
            let mut by_owner: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
            for &s in &away {
                by_owner
                    .entry(self.shard_owner[s as usize] as usize)
                    .or_default()
                    .push(s);
            }
            for (o, part) in by_owner {
                let l = &mut self.links[o];
                l.seal(self.clock, version);
                l.queue
                    .push_back(Outgoing::control(wire::encode(&Msg::Release {
                        shards: part.clone(),
                    })));
                l.shards.retain(|s| !part.contains(s));
            }
            for &s in &away {
                self.shard_owner[s as usize] = h as u16;
            }
            self.links[h].shards.extend_from_slice(&away);
            self.links[h].shards.sort_unstable();
            self.status
                .counters
                .shards_moved
                .fetch_add(away.len() as u64, Ordering::Relaxed);
            info!(node = %self.links[h].name, shards = away.len(), "moving shards back to their home node");
            self.restore_into(h, &away);
        }
    }

    /// Queues, for link `t`: each shard of `shards` restored from the last
    /// durable checkpoint (empty if none), every logged event since then that
    /// routes to those shards (with the clock it first had), then `Resume`.
    fn restore_into(&mut self, t: usize, shards: &[u16]) {
        self.settle_storing();
        let Some(ck) = &self.ckpt else { return };
        let version = self.bundle.as_ref().map_or(0, |b| b.version);
        let started = Instant::now();
        let link = &mut self.links[t];
        link.seal(self.clock, version);
        let pending_before = link.pending();
        let mut set = vec![false; SHARDS as usize];
        let mut state_bytes = 0usize;
        // Read every state at once (the store serves them concurrently).
        let stored: Vec<u16> = shards
            .iter()
            .copied()
            .filter(|&s| ck.durable.is_some() && ck.durable_shards[s as usize])
            .collect();
        let mut states: std::collections::HashMap<u16, Vec<u8>> = std::collections::HashMap::new();
        if let Some((id, _)) = ck.durable {
            for (s, r) in stored.iter().zip((ck.cfg.loader)(id, &stored)) {
                match r {
                    Ok(state) => {
                        states.insert(*s, state.unwrap_or_default());
                    }
                    Err(e) => {
                        // The shard restarts empty: say so loudly.
                        error!(checkpoint = id, shard = *s, error = %e, "cannot read a shard of the checkpoint; it restarts empty");
                        self.status
                            .counters
                            .checkpoint_failures
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        for &s in shards {
            set[s as usize] = true;
            let state = states.remove(&s).unwrap_or_default();
            state_bytes += state.len();
            link.queue
                .push_back(Outgoing::control(wire::encode(&Msg::Restore {
                    shard: s,
                    state,
                })));
        }
        // The replay: batches encoded for the current rules, each sealed with
        // the clock after its last event.
        let mut copies_total = 0usize;
        if let Some(decoder) = &self.decoder {
            let mut w: Option<BatchWriter> = None;
            let mut last_seq = 0;
            let seal = |w: BatchWriter, closing: i64, last_seq: u64, link: &mut Link| {
                let copies = w.len() as u32;
                link.queue.push_back(Outgoing {
                    bytes: w.finish(closing),
                    copies,
                    last_seq,
                    version,
                });
                link.queued_copies += copies as usize;
            };
            for (k, e) in ck.log.iter().enumerate() {
                let Ok(ev) = decoder.decode(&e.frame, || format!("zmq:{}", e.seq)) else {
                    continue; // refused by rules deployed since: not replayed
                };
                for (route, shard) in self.routes.targets(&ev) {
                    if set[shard as usize] {
                        let bw = w.get_or_insert_with(|| BatchWriter::new(version));
                        bw.push_parts(e.seq, shard, route, e.clock, &ev);
                        last_seq = e.seq;
                        copies_total += 1;
                    }
                }
                if w.as_ref().is_some_and(|b| b.len() >= self.cfg.batch_max)
                    && let Some(bw) = w.take()
                {
                    let closing = ck.log.get(k + 1).map_or(self.clock, |n| n.clock);
                    seal(bw, closing, last_seq, link);
                }
            }
            if let Some(bw) = w.take() {
                seal(bw, self.clock, last_seq, link);
            }
        }
        link.queue
            .push_back(Outgoing::control(wire::encode(&Msg::Resume {
                shards: shards.to_vec(),
            })));
        self.status
            .counters
            .shards_restored
            .fetch_add(shards.len() as u64, Ordering::Relaxed);
        info!(
            node = %link.name,
            shards = shards.len(),
            checkpoint = ck.durable.map_or(0, |d| d.0),
            state_bytes,
            replayed_copies = copies_total,
            prepare_ms = started.elapsed().as_millis() as u64,
            "restoring shards on a node"
        );
        // The router did not listen meanwhile: nobody was silent because of it.
        let now = Instant::now();
        for l in &mut self.links {
            if l.state.live() {
                l.last_heard = l.last_heard.max(now);
            }
        }
        // Nothing to wait for: no recovery to time.
        if pending_before + copies_total > 0 {
            self.recovering.push(Recovery {
                link: t,
                remaining: (pending_before + copies_total) as i64,
                started,
            });
        }
    }

    fn publish_alerts(&mut self, alerts: Vec<wire::WireAlert>) {
        let c = &self.status.counters;
        for a in alerts {
            if !self.seen.first(&a.id) {
                // Emitted again after a restore: published already.
                c.alerts_deduplicated.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let topic = if a.shadow {
                c.shadow_alerts_published.fetch_add(1, Ordering::Relaxed);
                format!("shadow.{}", a.topic)
            } else {
                c.alerts_published.fetch_add(1, Ordering::Relaxed);
                a.topic.clone()
            };
            if let Some(publ) = &self.publish
                && let Err(e) =
                    publ.send_multipart([topic.as_bytes(), a.json.as_bytes()], zmq::DONTWAIT)
            {
                warn!(error = %e, "alert PUB send failed");
            }
            if let Some(tx) = &self.channels.alerts {
                let out = AlertOut {
                    id: a.id,
                    topic: a.topic,
                    shadow: a.shadow,
                    json: a.json,
                    events: a.events,
                };
                // Bounded: a slow store slows the router; no alert is dropped.
                if tx.blocking_send(ToWriter::Alert(out)).is_err() {
                    warn!("alert consumer gone: alerts reach the PUB socket only");
                    self.channels.alerts = None;
                }
            }
        }
    }

    fn housekeeping(&mut self) {
        self.count_disconnects();
        self.check_storing_late();
        let now = Instant::now();
        // Live mode: a silent stream lets event time follow the wall clock.
        if self.cfg.idle_ms > 0
            && let Some((base, at)) = self.idle_base
        {
            let idle = now.duration_since(at).as_millis() as i64;
            if idle >= self.cfg.idle_ms {
                self.clock = self.clock.max(base.saturating_add(idle));
            }
        }
        let hello_every = Duration::from_millis(500);
        let clock = self.clock;
        let mut down = vec![];
        for l in &mut self.links {
            match l.state {
                LinkState::Connecting | LinkState::Down | LinkState::Stopped => {
                    if now.duration_since(l.last_hello) >= hello_every {
                        l.last_hello = now;
                        let hello = Msg::Hello(Hello {
                            gateway: self.gateway_id,
                            node_index: l.index,
                            shards: l.shards.clone(),
                            lateness_ms: self.cfg.lateness_ms,
                            max_runs_per_key: self.cfg.max_runs_per_key,
                        });
                        l.send(&hello);
                        l.send(&Msg::Ping { nonce: 0 });
                    }
                }
                LinkState::Syncing | LinkState::Up => {
                    l.send(&Msg::Ping { nonce: 0 });
                    if l.state == LinkState::Up
                        && clock != i64::MIN
                        && l.queue.is_empty()
                        && l.current.is_none()
                    {
                        l.send(&Msg::Advance { clock });
                    }
                    let silent = now.duration_since(l.last_heard);
                    let gone = match &l.alive {
                        Some(a) => {
                            if silent > self.cfg.node_timeout && !l.busy_reported {
                                l.busy_reported = true;
                                self.status
                                    .counters
                                    .nodes_busy
                                    .fetch_add(1, Ordering::Relaxed);
                                warn!(
                                    node = %l.name,
                                    silent_ms = silent.as_millis() as u64,
                                    "in-process node busy past the node timeout: not failed over (its thread runs)"
                                );
                            } else if silent <= self.cfg.node_timeout {
                                l.busy_reported = false;
                            }
                            !a.alive()
                        }
                        None => silent > self.cfg.node_timeout,
                    };
                    if gone {
                        warn!(
                            node = %l.name,
                            endpoint = %l.endpoint,
                            silent_ms = now.duration_since(l.last_heard).as_millis() as u64,
                            shards = l.shards.len(),
                            "node unreachable: marked down"
                        );
                        l.state = LinkState::Down;
                        l.credits = 0;
                        down.push(l.index as usize);
                    }
                }
            }
        }
        for i in down {
            self.fail_over(i);
        }
        // Shards stranded on a gone node (no live node could take them when
        // it went): retry now.
        if self.ckpt.is_some() && self.links.iter().any(|l| l.state == LinkState::Up) {
            for i in 0..self.links.len() {
                if matches!(self.links[i].state, LinkState::Down | LinkState::Stopped)
                    && !self.links[i].shards.is_empty()
                {
                    self.fail_over(i);
                }
            }
        }
    }

    fn publish_view(&self) {
        if let Some(ck) = &self.ckpt
            && let Ok(mut v) = self.status.checkpoint.lock()
        {
            v.replay_log_events = ck.log.len();
            v.replay_log_bytes = ck.log_bytes;
        }
        if self.clock != i64::MIN {
            self.status.clock_ms.store(self.clock, Ordering::Relaxed);
            let ahead = self.clock.saturating_sub(self.cfg.wall.now_ms());
            let beyond = if ahead > self.cfg.max_future_ms {
                ahead
            } else {
                0
            };
            self.status.clock_ahead_ms.store(beyond, Ordering::Relaxed);
        }
        let now = Instant::now();
        let views: Vec<NodeView> = self
            .links
            .iter()
            .map(|l| NodeView {
                name: l.name.clone(),
                endpoint: l.endpoint.clone(),
                state: l.state.as_str().into(),
                instance: l.instance.map(|i| format!("{i:016x}")),
                shards: l.shards.len(),
                rules_version: l.acked_version,
                credits: l.credits,
                queued_copies: l.pending() as u64,
                sent_seq: l.sent_seq,
                processed_seq: l.processed_seq,
                lag_events: l.sent_seq.saturating_sub(l.processed_seq),
                last_heard_ms_ago: now.duration_since(l.last_heard).as_millis() as u64,
                events: l.stats.events,
                late: l.stats.late,
                alerts: l.stats.alerts,
                active_runs: l.stats.active_runs,
                active_keys: l.stats.active_keys,
                buffered: l.stats.buffered,
                shards_active: l.stats.shards_active,
                rejected_batches: l.stats.rejected_batches,
                runs_dropped_events_cap: l.stats.runs_dropped_events_cap,
                clock_ms: (l.stats.clock != i64::MIN && l.stats.clock != 0)
                    .then_some(l.stats.clock),
            })
            .collect();
        if let Ok(mut v) = self.status.view.lock() {
            *v = RouterView {
                events_accepted: self.status.counters.events_accepted.load(Ordering::Relaxed),
                clock_ms: (self.clock != i64::MIN).then_some(self.clock),
                nodes: views,
            };
        }
    }
}

/// What `on_node_msg` does once the link is no longer borrowed.
enum After {
    Nothing,
    Restore,
    Granted(i64),
    CheckpointDone(u64),
    FailOver,
}

fn deploy_msg(b: &Bundle) -> Msg {
    Msg::Deploy(Deploy {
        version: b.version,
        files: b.files.clone(),
        rules: b.rules.clone(),
    })
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;

//! The engine: rules, per-(rule, key) state, event time and alerts.
//!
//! Shaped like a stream operator: [`Engine::push`] takes events (any order),
//! [`Engine::advance_to`] / [`Engine::finish`] / [`Engine::tick`] move the
//! watermark, [`Engine::drain_alerts`] hands out alerts, [`Engine::snapshot`]
//! and [`Engine::restore`] checkpoint everything. No I/O and no wall clock: the
//! caller passes wall-clock time where it matters (`detected_at`, idle advance).
//!
//! Event time (spec §5): each input's watermark is its highest `ts` minus the
//! allowed lateness; the engine's is the minimum over inputs that are not idle.
//! Events wait in a reorder buffer until the watermark reaches them, then are
//! processed in `(ts, arrival)` order. Before an event at `ts` is processed, every
//! timer due strictly before `ts` fires, so a negated event at exactly
//! `first.ts + D` still counts and a timer due at `t` fires once time passes `t`.

use crate::alert::Alert;
use crate::eval::{Env, List, Lists, eval};
use crate::pattern::{Limits, Match, Matcher, PatternState, RunCtx};
use crate::value::{Event, Key};
use crate::window::{WindowCtx, WindowState};
use hashbrown::hash_map::Entry;
use rule_lang::program::{Rule, RuleKind, RuleSet};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

/// Per-key state. hashbrown's own map: its `entry` finds a key once and
/// reserves nothing for a vacant one (std's does), so a lookup that leaves
/// no state costs no memory.
type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::FixedState>;

/// Engine settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Allowed lateness in ms (events within it are reordered).
    pub lateness_ms: i64,
    /// Wall-clock ms without events after which an input is idle (and event
    /// time follows the wall clock in live mode). 0 disables idle handling.
    pub idle_ms: i64,
    /// Cap on partial matches per (rule, key); the oldest run is dropped.
    pub max_runs_per_key: usize,
    /// Cap on partial matches in the whole engine; no new run starts above it.
    pub max_runs_total: usize,
    /// Cap on events held by one aggregate window; the oldest is dropped.
    pub max_window_events: usize,
    /// Cap on events held by one partial match; a run that reaches it without
    /// completing is dropped (counted in [`Metrics::runs_dropped_events_cap`]).
    #[serde(default = "default_max_run_events")]
    pub max_run_events: usize,
}

/// Default of [`EngineConfig::max_run_events`].
pub const DEFAULT_MAX_RUN_EVENTS: usize = 1_000;

fn default_max_run_events() -> usize {
    DEFAULT_MAX_RUN_EVENTS
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lateness_ms: 0,
            idle_ms: 0,
            max_runs_per_key: 10_000,
            max_runs_total: 5_000_000,
            max_window_events: 100_000,
            max_run_events: DEFAULT_MAX_RUN_EVENTS,
        }
    }
}

/// Counters (exported by the node and the replay summary).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub events_in: u64,
    pub events_processed: u64,
    pub late: u64,
    /// Events that no rule reads.
    pub unused: u64,
    pub runs_started: u64,
    pub runs_dropped_cap: u64,
    pub runs_refused_cap: u64,
    pub window_dropped_cap: u64,
    /// Runs dropped because they reached `max_run_events`.
    #[serde(default)]
    pub runs_dropped_events_cap: u64,
    pub matches: BTreeMap<String, u64>,
    pub alerts: BTreeMap<String, u64>,
    pub suppressed: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum States {
    Pattern(#[serde(with = "crate::value::map_as_pairs")] FastMap<Key, PatternState>),
    Window(#[serde(with = "crate::value::map_as_pairs")] FastMap<Key, WindowState>),
}

impl States {
    fn is_empty(&self) -> bool {
        match self {
            States::Pattern(m) => m.is_empty(),
            States::Window(m) => m.is_empty(),
        }
    }
}

/// One rule's state in one engine. Every shard of a node holds one per
/// rule, so it is two words until a key of the rule holds state: the map is
/// created on the first key that keeps some and dropped when the last goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RuleRt {
    version: u32,
    shadow: bool,
    #[serde(with = "lazy_states")]
    states: Option<Box<States>>,
}

/// Snapshots keep their format: no state is written as an empty map (the
/// kind does not matter for an empty one), and an empty map is read as none.
mod lazy_states {
    use super::{FastMap, States};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Box<States>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(states) => states.serialize(s),
            None => States::Pattern(FastMap::default()).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<States>>, D::Error> {
        let states = States::deserialize(d)?;
        Ok((!states.is_empty()).then(|| Box::new(states)))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Buffered {
    ts: i64,
    arrival: u64,
    #[serde(default)]
    route: Route,
    event: Event,
}

/// Which rules an event copy is for. The cluster router sends an event once per
/// distinct key field among the rules that read its type; each copy must reach
/// only the rules partitioned by that field, or a rule would see the event on two
/// shards. Replay and single-engine use pass [`Route::All`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Route {
    /// Every rule that reads the type.
    #[default]
    All,
    /// Keyed rules whose key is this slot of the event's type.
    Key(u16),
    /// Unkeyed (global) rules.
    Global,
}

impl Route {
    /// Does a copy on this route reach `rule` (for an event of type `ty`)?
    #[inline]
    pub fn admits(self, rule: &Rule, ty: usize) -> bool {
        match self {
            Route::All => true,
            Route::Global => rule.key.is_none(),
            Route::Key(s) => {
                rule.key.is_some() && rule.key_slots.get(ty).copied().flatten() == Some(s)
            }
        }
    }
}

impl PartialEq for Buffered {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.arrival) == (o.ts, o.arrival)
    }
}
impl Eq for Buffered {}
impl PartialOrd for Buffered {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Buffered {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.ts, self.arrival).cmp(&(o.ts, o.arrival))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Input {
    max_ts: Option<i64>,
    last_wall: i64,
}

/// Version and mode of a deployed rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub version: u32,
    pub shadow: bool,
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment {
            version: 1,
            shadow: false,
        }
    }
}

/// Everything mutable, for checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    rules: Vec<(String, RuleRt)>,
    identities: Vec<String>,
    buffer: Vec<Buffered>,
    inputs: BTreeMap<u32, Input>,
    watermark: i64,
    arrivals: u64,
    next_seq: u64,
    pub metrics: Metrics,
}

/// Format tag of [`Snapshot::to_bytes`]; bumped when the layout changes, so an
/// old checkpoint is refused with a clear error instead of misread.
///
/// Format 3 dropped the reference lists (the store holds them; a node applies
/// its current lists to a restored shard) and counts the runs dropped at
/// `max_run_events` in the metrics. Format 1 is still read (see
/// [`SnapshotV1`]): its trailing lists are ignored and the new count starts at 0.
const SNAPSHOT_FORMAT: u8 = 3;
/// The format before lists left the snapshot (read, never written).
const SNAPSHOT_FORMAT_WITH_LISTS: u8 = 1;

/// [`Snapshot`] as format 1 laid it out: the metrics without
/// `runs_dropped_events_cap`, then the lists (skipped when read).
#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    rules: Vec<(String, RuleRt)>,
    identities: Vec<String>,
    buffer: Vec<Buffered>,
    inputs: BTreeMap<u32, Input>,
    watermark: i64,
    arrivals: u64,
    next_seq: u64,
    metrics: MetricsV1,
}

#[derive(Serialize, Deserialize)]
struct MetricsV1 {
    events_in: u64,
    events_processed: u64,
    late: u64,
    unused: u64,
    runs_started: u64,
    runs_dropped_cap: u64,
    runs_refused_cap: u64,
    window_dropped_cap: u64,
    matches: BTreeMap<String, u64>,
    alerts: BTreeMap<String, u64>,
    suppressed: BTreeMap<String, u64>,
}

impl From<SnapshotV1> for Snapshot {
    fn from(v: SnapshotV1) -> Snapshot {
        Snapshot {
            rules: v.rules,
            identities: v.identities,
            buffer: v.buffer,
            inputs: v.inputs,
            watermark: v.watermark,
            arrivals: v.arrivals,
            next_seq: v.next_seq,
            metrics: v.metrics.into(),
        }
    }
}

/// Format 1's metrics, as read (the new count starts at 0).
impl From<MetricsV1> for Metrics {
    fn from(m: MetricsV1) -> Metrics {
        Metrics {
            events_in: m.events_in,
            events_processed: m.events_processed,
            late: m.late,
            unused: m.unused,
            runs_started: m.runs_started,
            runs_dropped_cap: m.runs_dropped_cap,
            runs_refused_cap: m.runs_refused_cap,
            window_dropped_cap: m.window_dropped_cap,
            runs_dropped_events_cap: 0,
            matches: m.matches,
            alerts: m.alerts,
            suppressed: m.suppressed,
        }
    }
}

/// Format 1's metrics, as written (tests of the upgrade path).
impl From<Metrics> for MetricsV1 {
    fn from(m: Metrics) -> MetricsV1 {
        MetricsV1 {
            events_in: m.events_in,
            events_processed: m.events_processed,
            late: m.late,
            unused: m.unused,
            runs_started: m.runs_started,
            runs_dropped_cap: m.runs_dropped_cap,
            runs_refused_cap: m.runs_refused_cap,
            window_dropped_cap: m.window_dropped_cap,
            matches: m.matches,
            alerts: m.alerts,
            suppressed: m.suppressed,
        }
    }
}

impl Snapshot {
    /// The snapshot as bytes (a format byte, then postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        let out = vec![SNAPSHOT_FORMAT];
        // Serializing plain data into a Vec cannot fail; an empty result would
        // be refused by `from_bytes`, never misread.
        postcard::to_extend(self, out).unwrap_or_default()
    }

    /// This snapshot in format 1, with `lists` after it (tests of the upgrade
    /// path).
    #[doc(hidden)]
    pub fn to_format_1_bytes(&self, lists: &HashMap<String, Vec<String>>) -> Vec<u8> {
        let v1 = SnapshotV1 {
            rules: self.rules.clone(),
            identities: self.identities.clone(),
            buffer: self.buffer.clone(),
            inputs: self.inputs.clone(),
            watermark: self.watermark,
            arrivals: self.arrivals,
            next_seq: self.next_seq,
            metrics: self.metrics.clone().into(),
        };
        let mut out =
            postcard::to_extend(&v1, vec![SNAPSHOT_FORMAT_WITH_LISTS]).unwrap_or_default();
        out.extend(postcard::to_allocvec(lists).unwrap_or_default());
        out
    }

    /// Reads [`Snapshot::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, String> {
        match bytes.split_first() {
            Some((&SNAPSHOT_FORMAT, rest)) => match postcard::take_from_bytes(rest) {
                Ok((snap, [])) => Ok(snap),
                Ok((_, extra)) => Err(format!(
                    "engine snapshot has {} bytes after its end",
                    extra.len()
                )),
                Err(e) => Err(format!("engine snapshot does not decode: {e}")),
            },
            // The lists that follow are stale copies of the store's: skipped.
            Some((&SNAPSHOT_FORMAT_WITH_LISTS, rest)) => {
                postcard::take_from_bytes::<SnapshotV1>(rest)
                    .map(|(snap, _lists)| snap.into())
                    .map_err(|e| format!("engine snapshot (format 1) does not decode: {e}"))
            }
            Some((f, _)) => Err(format!(
                "engine snapshot format {f}; this build reads format {SNAPSHOT_FORMAT}"
            )),
            None => Err("empty engine snapshot".into()),
        }
    }
}

/// What running a rule set needs that does not change until the next
/// deploy: the rules, which rules read each event type, the type names, the
/// compiled regexes and each rule's identity. Derived once per deploy and
/// shared by every engine running the set (a node's shards), so per-shard
/// memory and deploy time hold only mutable state.
#[derive(Debug)]
pub struct Program {
    rules: Arc<RuleSet>,
    by_type: Vec<Vec<usize>>,
    type_names: Vec<Arc<str>>,
    regexes: HashMap<String, regex::Regex>,
    identities: Vec<String>,
    /// `state_key(name, identity)` of each rule: what a redeploy matches
    /// kept state by.
    state_keys: Vec<String>,
}

impl Program {
    pub fn new(rules: Arc<RuleSet>) -> Arc<Program> {
        let mut by_type = vec![vec![]; rules.schemas.len()];
        let mut regexes = HashMap::new();
        for (i, r) in rules.rules.iter().enumerate() {
            for &t in &r.types {
                by_type[t as usize].push(i);
            }
            collect_regexes(r, &mut regexes);
        }
        let identities: Vec<String> = rules.rules.iter().map(|r| identity(&rules, r)).collect();
        Arc::new(Program {
            state_keys: rules
                .rules
                .iter()
                .zip(&identities)
                .map(|(r, id)| state_key(&r.name, id))
                .collect(),
            identities,
            type_names: rules
                .schemas
                .iter()
                .map(|s| Arc::from(s.name.as_str()))
                .collect(),
            by_type,
            regexes,
            rules,
        })
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// For each rule of this program, the index of the rule of `old` whose
    /// state it keeps on a redeploy (same name and compiled identity).
    /// Computed once per deploy and handed to every shard engine.
    pub fn carry_from(&self, old: &Program) -> Vec<Option<usize>> {
        let by_key: HashMap<&str, usize> = old
            .state_keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        self.state_keys
            .iter()
            .map(|k| by_key.get(k.as_str()).copied())
            .collect()
    }
}

/// The matching engine.
pub struct Engine {
    program: Arc<Program>,
    config: EngineConfig,
    rts: Vec<RuleRt>,
    /// Shared with every engine the owner handed the same table to.
    lists: Arc<Lists>,
    buffer: BinaryHeap<Reverse<Buffered>>,
    timers: Timers,
    inputs: BTreeMap<u32, Input>,
    watermark: i64,
    arrivals: u64,
    next_seq: u64,
    active_runs: usize,
    wall_ms: i64,
    alerts: Vec<Alert>,
    metrics: Metrics,
}

fn identity(rs: &RuleSet, r: &Rule) -> String {
    let schemas: Vec<_> = r.types.iter().map(|t| &rs.schemas[*t as usize]).collect();
    let text = serde_json::to_string(&(r, schemas)).unwrap_or_default();
    rule_lang::check::fnv_hex(&text)
}

/// Names the kept state of a rule: its name and compiled identity.
fn state_key(name: &str, identity: &str) -> String {
    format!("{name}\u{0}{identity}")
}

impl Engine {
    /// An engine running every rule of `rules` (version 1, active).
    pub fn new(rules: Arc<RuleSet>, config: EngineConfig) -> Engine {
        let deployments = vec![Deployment::default(); rules.rules.len()];
        Engine::with_deployments(rules, config, &deployments)
    }

    /// An engine with explicit versions/modes per rule (same order as the set).
    pub fn with_deployments(
        rules: Arc<RuleSet>,
        config: EngineConfig,
        deployments: &[Deployment],
    ) -> Engine {
        Engine::with_program(Program::new(rules), config, deployments)
    }

    /// [`Engine::with_deployments`] on a program other engines share.
    pub fn with_program(
        program: Arc<Program>,
        config: EngineConfig,
        deployments: &[Deployment],
    ) -> Engine {
        let mut e = Engine {
            program: program.clone(),
            config,
            rts: vec![],
            lists: Arc::default(),
            buffer: BinaryHeap::new(),
            timers: Timers::default(),
            inputs: BTreeMap::new(),
            watermark: i64::MIN,
            arrivals: 0,
            next_seq: 1,
            active_runs: 0,
            wall_ms: 0,
            alerts: vec![],
            metrics: Metrics::default(),
        };
        e.install(program, deployments, |_, _| None);
        e
    }

    /// Installs `program`; `keep` hands over the kept state of a rule (by
    /// its index and state key), if there is one.
    fn install(
        &mut self,
        program: Arc<Program>,
        deployments: &[Deployment],
        mut keep: impl FnMut(usize, &str) -> Option<RuleRt>,
    ) {
        // Exactly one per rule: every shard holds this vector.
        self.rts = Vec::with_capacity(program.rules.rules.len());
        for i in 0..program.rules.rules.len() {
            let dep = deployments.get(i).copied().unwrap_or_default();
            let rt = match keep(i, &program.state_keys[i]) {
                Some(mut rt) if rt.version == dep.version => {
                    rt.shadow = dep.shadow;
                    rt
                }
                _ => RuleRt {
                    version: dep.version,
                    shadow: dep.shadow,
                    states: None,
                },
            };
            self.rts.push(rt);
        }
        self.program = program;
        self.rebuild_timers();
    }

    /// Replaces the rule set while running: a rule whose text, schema and version
    /// are unchanged keeps its partial matches; a changed or new rule starts fresh.
    pub fn replace_rules(&mut self, rules: Arc<RuleSet>, deployments: &[Deployment]) {
        self.replace_program(Program::new(rules), deployments);
    }

    /// [`Engine::replace_rules`] with a program other engines share.
    pub fn replace_program(&mut self, program: Arc<Program>, deployments: &[Deployment]) {
        let carry = program.carry_from(&self.program);
        self.replace_program_carrying(program, deployments, &carry);
    }

    /// [`Engine::replace_program`] with the rules' carry-over computed by
    /// [`Program::carry_from`] from the program this engine runs (once for
    /// all the shards of a node).
    pub fn replace_program_carrying(
        &mut self,
        program: Arc<Program>,
        deployments: &[Deployment],
        carry: &[Option<usize>],
    ) {
        let old = self.program.clone();
        let mut kept: Vec<Option<RuleRt>> = self.rts.drain(..).map(Some).collect();
        // Buffered events keep their place if their type is unchanged.
        let buffered: Vec<Buffered> = std::mem::take(&mut self.buffer)
            .into_iter()
            .map(|r| r.0)
            .collect();
        self.install(program, deployments, |new, _| {
            let old = carry.get(new).copied().flatten()?;
            kept.get_mut(old)?.take()
        });
        let new = &self.program.rules;
        for mut b in buffered {
            let old_schema = &old.rules.schemas[b.event.ty as usize];
            if let Some(nt) = new.schema_id(&old_schema.name)
                && new.schemas[nt as usize] == *old_schema
            {
                b.event.ty = nt;
                self.buffer.push(Reverse(b));
            }
        }
        self.active_runs = self.count_runs();
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.program.rules
    }

    /// The program this engine runs (shared with the engines it was handed to).
    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Current number of partial matches.
    pub fn active_runs(&self) -> usize {
        self.active_runs
    }

    /// Number of (rule, key) states held.
    pub fn active_keys(&self) -> usize {
        self.rts
            .iter()
            .map(|rt| match rt.states.as_deref() {
                Some(States::Pattern(m)) => m.len(),
                Some(States::Window(m)) => m.len(),
                None => 0,
            })
            .sum()
    }

    /// Events waiting in the reorder buffer.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Sets the wall clock used for `detected_at` and idle detection.
    pub fn set_wall_clock(&mut self, ms: i64) {
        self.wall_ms = ms;
    }

    /// Replaces (or creates) a reference list of this engine alone (replay,
    /// backtests: one engine). Engines that share a table use [`Engine::set_lists`].
    pub fn set_list(&mut self, name: &str, entries: impl IntoIterator<Item = String>) {
        let set: List = Arc::new(entries.into_iter().map(Arc::from).collect());
        Arc::make_mut(&mut self.lists).insert(name.to_string(), set);
    }

    /// Uses `lists` as the reference lists: the table is shared, not copied,
    /// so many engines can read one copy of every list.
    pub fn set_lists(&mut self, lists: Arc<Lists>) {
        self.lists = lists;
    }

    /// The reference lists this engine reads.
    pub fn lists(&self) -> &Arc<Lists> {
        &self.lists
    }

    pub fn drain_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.alerts)
    }

    /// Feeds an event from input 0.
    pub fn push(&mut self, ev: Event) {
        self.push_from(0, ev);
    }

    /// Feeds an event from one input (a Kafka partition, a producer).
    pub fn push_from(&mut self, input: u32, ev: Event) {
        if self.is_late(ev.ts) {
            return;
        }
        let wall = self.wall_ms;
        let inp = self.inputs.entry(input).or_default();
        inp.max_ts = Some(inp.max_ts.map_or(ev.ts, |m| m.max(ev.ts)));
        inp.last_wall = wall;
        let wm = self.input_watermark();
        self.admit(ev, Route::All, wm);
        self.advance_to(wm);
    }

    /// Feeds one routed copy of an event whose watermark someone else keeps
    /// (the cluster: the gateway's clock over all inputs travels with the
    /// events, and the node calls [`Engine::advance_to`]). The event waits in
    /// the reorder buffer until the watermark reaches it; one already behind
    /// it is late.
    pub fn push_held(&mut self, ev: Event, route: Route) {
        if self.is_late(ev.ts) {
            return;
        }
        let wm = self.watermark;
        self.admit(ev, route, wm);
    }

    /// Feeds one routed copy with the watermark its dispatcher computed for
    /// the whole stream (see [`crate::parallel`]): what [`Engine::push_from`]
    /// does with a watermark of its own.
    pub fn push_routed(&mut self, ev: Event, route: Route, watermark: i64) {
        if self.is_late(ev.ts) {
            return;
        }
        self.admit(ev, route, watermark);
        self.advance_to(watermark);
    }

    /// Counts an arriving event; true (and counted late) if it is behind the
    /// watermark.
    fn is_late(&mut self, ts: i64) -> bool {
        self.metrics.events_in += 1;
        if ts < self.watermark {
            self.metrics.late += 1;
            return true;
        }
        false
    }

    /// Processes an event at once if it is in order and already released by
    /// `released`, else puts it in the reorder buffer.
    fn admit(&mut self, ev: Event, route: Route, released: i64) {
        self.arrivals += 1;
        if self.buffer.is_empty() && ev.ts <= released {
            self.fire_timers(ev.ts);
            self.process(ev, route);
        } else {
            self.buffer.push(Reverse(Buffered {
                ts: ev.ts,
                arrival: self.arrivals,
                route,
                event: ev,
            }));
        }
    }

    /// Minimum over non-idle inputs of (max ts − lateness).
    fn input_watermark(&self) -> i64 {
        let idle = self.config.idle_ms;
        let mut wm: Option<i64> = None;
        for inp in self.inputs.values() {
            let Some(m) = inp.max_ts else { continue };
            if idle > 0 && self.wall_ms - inp.last_wall >= idle && self.inputs.len() > 1 {
                continue;
            }
            let w = m.saturating_sub(self.config.lateness_ms);
            wm = Some(wm.map_or(w, |x: i64| x.min(w)));
        }
        wm.unwrap_or(self.watermark).max(self.watermark)
    }

    /// Live mode: with no event for the idle period, event time follows the wall
    /// clock (so absence rules fire on a silent stream).
    pub fn tick(&mut self, wall_ms: i64) {
        self.wall_ms = wall_ms;
        let idle = self.config.idle_ms;
        if idle <= 0 {
            return;
        }
        let last_wall = self.inputs.values().map(|i| i.last_wall).max();
        let max_ts = self.inputs.values().filter_map(|i| i.max_ts).max();
        let mut wm = self.input_watermark();
        if let (Some(lw), Some(mt)) = (last_wall, max_ts)
            && wall_ms - lw >= idle
        {
            wm = wm.max(
                mt.saturating_sub(self.config.lateness_ms)
                    .saturating_add(wall_ms - lw),
            );
        }
        self.advance_to(wm);
    }

    /// Moves the watermark forward to `wm`: releases buffered events up to it and
    /// fires timers due before it.
    pub fn advance_to(&mut self, wm: i64) {
        if wm > self.watermark {
            self.watermark = wm;
        }
        while let Some(Reverse(top)) = self.buffer.peek() {
            if top.ts > self.watermark {
                break;
            }
            let Some(Reverse(b)) = self.buffer.pop() else {
                break;
            };
            self.fire_timers(b.ts);
            self.process(b.event, b.route);
        }
        self.fire_timers(self.watermark);
    }

    /// End of input (replay): the watermark moves to the highest `ts` seen, or to
    /// infinity with `to_infinity`, releasing everything buffered.
    pub fn finish(&mut self, to_infinity: bool) {
        let max_ts = self
            .inputs
            .values()
            .filter_map(|i| i.max_ts)
            .max()
            .unwrap_or(self.watermark);
        self.advance_to(if to_infinity { i64::MAX } else { max_ts });
    }

    fn fire_timers(&mut self, before: i64) {
        while let Some((q, due, key)) = self.timers.pop_due(before) {
            self.expire_key(q / 2, key, due, before);
        }
    }

    /// Splits the engine into what expressions read and what matching writes.
    fn split(&mut self) -> (Env<'_>, Work<'_>) {
        let Engine {
            program,
            rts,
            lists,
            metrics,
            alerts,
            timers,
            active_runs,
            config,
            wall_ms,
            ..
        } = self;
        (
            Env {
                type_names: &program.type_names,
                lists,
                regexes: &program.regexes,
            },
            Work {
                rts,
                out: Out {
                    metrics,
                    alerts,
                    timers,
                    wall_ms: *wall_ms,
                },
                active_runs,
                config,
            },
        )
    }

    /// A timer of `key` due at `due` fired while time moves to `now`: expire
    /// the runs whose window closed by `due`, emit their absence alerts,
    /// release the state if nothing is left to wait for at `now`.
    fn expire_key(&mut self, ri: usize, key: Key, due: i64, now: i64) {
        let program = self.program.clone();
        let rule = &program.rules.rules[ri];
        let (env, w) = self.split();
        let Work {
            rts,
            mut out,
            active_runs,
            ..
        } = w;
        let rt = &mut rts[ri];
        let (version, shadow) = (rt.version, rt.shadow);
        match (rt.states.as_deref_mut(), &rule.kind) {
            // One lookup per timer: the entry is found once, then read,
            // updated or removed in place.
            (Some(States::Pattern(map)), RuleKind::Pattern(p)) => {
                let Entry::Occupied(mut slot) = map.entry(key) else {
                    return;
                };
                let st = slot.get_mut();
                let before = st.runs.len();
                let matches = Matcher {
                    pattern: p,
                    env: &env,
                }
                // Only the runs whose window closed by this timer's time:
                // a later deadline has its own timer, so absence alerts
                // come out in deadline order, whatever stale timers (of
                // runs already gone) the key still has queued; a restored
                // engine, which has none, gives the same order.
                .expire(st, due.saturating_add(1));
                *active_runs = active_runs.saturating_sub(before) + st.runs.len();
                if !matches.is_empty() {
                    let key = slot.key().clone();
                    let st = slot.get_mut();
                    for m in matches {
                        out.pattern_match(
                            ri,
                            rule,
                            (version, shadow),
                            &key,
                            &mut st.last_alert_at,
                            m,
                            &env,
                        );
                    }
                }
                let st = slot.get();
                if st.runs.is_empty() && !suppressing(rule, st.last_alert_at, now) {
                    slot.remove();
                }
            }
            (Some(States::Window(map)), RuleKind::Aggregate(a)) => {
                let Entry::Occupied(slot) = map.entry(key) else {
                    return;
                };
                let st = slot.get();
                let live = st
                    .newest_ts()
                    .is_some_and(|t| t.saturating_add(a.over_ms) >= now);
                if !live && !suppressing(rule, st.last_alert_at, now) {
                    slot.remove();
                }
            }
            _ => {}
        }
        // The rule's last key went quiet: its map goes too.
        if rt.states.as_deref().is_some_and(States::is_empty) {
            rt.states = None;
        }
    }

    fn process(&mut self, mut ev: Event, route: Route) {
        ev.seq = self.next_seq;
        self.next_seq += 1;
        self.metrics.events_processed += 1;
        let ty = ev.ty as usize;
        let program = self.program.clone();
        let Some(readers) = program.by_type.get(ty).filter(|r| !r.is_empty()) else {
            self.metrics.unused += 1;
            return;
        };
        let ev = Arc::new(ev);
        for &ri in readers {
            let rule = &program.rules.rules[ri];
            if !route.admits(rule, ty) {
                continue;
            }
            let key = match &rule.key {
                None => Key::Global,
                Some(_) => {
                    let slot = rule.key_slots.get(ty).copied().flatten();
                    match slot.and_then(|s| Key::from_value(ev.slot(s))) {
                        Some(k) => k,
                        None => continue,
                    }
                }
            };
            match &rule.kind {
                RuleKind::Pattern(p) => self.pattern_event(ri, rule, p, key, &ev),
                RuleKind::Aggregate(a) => self.window_event(ri, rule, a, key, &ev),
            }
        }
    }

    fn pattern_event(
        &mut self,
        ri: usize,
        rule: &Rule,
        p: &rule_lang::program::Pattern,
        key: Key,
        ev: &Arc<Event>,
    ) {
        let (env, w) = self.split();
        let Work {
            rts,
            mut out,
            active_runs,
            config,
        } = w;
        let rt = &mut rts[ri];
        let (version, shadow) = (rt.version, rt.shadow);
        // One lookup: the key's entry is found once and updated, removed or
        // (a new key) filled in place. A key without state gets some only
        // if this event leaves some (a run started, a suppression in
        // force): most events of most rules start nothing, and an entry put
        // in and taken out again would leave every rule's table allocated
        // in every shard.
        let mut fresh = PatternState::default();
        let mut slot = match rt.states.as_deref_mut() {
            Some(States::Pattern(map)) => Some(map.entry(key.clone())),
            Some(States::Window(_)) => return,
            None => None,
        };
        let st = match &mut slot {
            Some(Entry::Occupied(o)) => o.get_mut(),
            _ => &mut fresh,
        };
        let before = st.runs.len();
        let mut limits = Limits {
            max_runs_per_key: config.max_runs_per_key,
            max_run_events: config.max_run_events,
            may_start: *active_runs < config.max_runs_total,
            dropped: 0,
            refused: 0,
            started: 0,
            event_capped: 0,
        };
        let matches = Matcher {
            pattern: p,
            env: &env,
        }
        .on_event(st, ev, &mut limits);
        out.metrics.runs_started += limits.started;
        out.metrics.runs_dropped_cap += limits.dropped;
        out.metrics.runs_refused_cap += limits.refused;
        out.metrics.runs_dropped_events_cap += limits.event_capped;
        if limits.started > 0 {
            // One timer per run: its window closes at first.ts + within.
            out.timers
                .push(2 * ri, ev.ts.saturating_add(p.within_ms), key.clone());
        }
        for m in matches {
            out.pattern_match(
                ri,
                rule,
                (version, shadow),
                &key,
                &mut st.last_alert_at,
                m,
                &env,
            );
        }
        *active_runs = (*active_runs + st.runs.len()).saturating_sub(before);
        let keep = !st.runs.is_empty() || suppressing(rule, st.last_alert_at, ev.ts);
        match slot {
            Some(Entry::Occupied(o)) if !keep => {
                o.remove();
            }
            Some(Entry::Vacant(v)) if keep => {
                v.insert(fresh);
            }
            None if keep => {
                let mut map = FastMap::default();
                map.insert(key, fresh);
                rt.states = Some(Box::new(States::Pattern(map)));
            }
            _ => {}
        }
    }

    fn window_event(
        &mut self,
        ri: usize,
        rule: &Rule,
        a: &rule_lang::program::Aggregate,
        key: Key,
        ev: &Arc<Event>,
    ) {
        let (env, w) = self.split();
        let Work {
            rts,
            mut out,
            config,
            ..
        } = w;
        if let Some(pred) = &a.pred {
            let empty = WindowState::default();
            let ctx = WindowCtx {
                agg: a,
                window: &empty,
                trigger: ev,
            };
            if !crate::eval::eval_bool(pred, &ctx, &env) {
                return;
            }
        }
        let rt = &mut rts[ri];
        let (version, shadow) = (rt.version, rt.shadow);
        let states = rt
            .states
            .get_or_insert_with(|| Box::new(States::Window(FastMap::default())));
        let States::Window(map) = &mut **states else {
            return;
        };
        let st = map.entry(key.clone()).or_default();
        out.metrics.window_dropped_cap += st.push(a, ev, &env, config.max_window_events);
        // The window empties at ts + over unless more events come.
        out.timers
            .push(2 * ri, ev.ts.saturating_add(a.over_ms), key.clone());
        let ctx = WindowCtx {
            agg: a,
            window: st,
            trigger: ev,
        };
        if !crate::eval::eval_bool(&a.having, &ctx, &env) {
            return;
        }
        let fields = rule
            .emit
            .iter()
            .map(|(n, e)| (n.clone(), eval(e, &ctx, &env).to_json()))
            .collect();
        let matched = vec![(a.binding.clone(), st.matched_ids())];
        let evidence = vec![(a.binding.clone(), st.matched_events())];
        let count = (a.binding.clone(), st.len() as u64);
        let found = Found {
            at: ev.ts,
            matched,
            evidence,
            matched_count: Some(count),
            fields,
            absence: false,
        };
        out.alert(
            ri,
            rule,
            (version, shadow),
            &key,
            &mut st.last_alert_at,
            found,
        );
    }

    fn count_runs(&self) -> usize {
        self.rts
            .iter()
            .map(|rt| match rt.states.as_deref() {
                Some(States::Pattern(m)) => m.values().map(|s| s.runs.len()).sum(),
                _ => 0,
            })
            .sum()
    }

    fn rebuild_timers(&mut self) {
        let rules = &self.program.rules;
        self.timers = Timers::new();
        for (ri, (rule, rt)) in rules.rules.iter().zip(&self.rts).enumerate() {
            let mut due: Vec<(i64, usize, Key)> = vec![];
            match (rt.states.as_deref(), &rule.kind) {
                (Some(States::Pattern(m)), RuleKind::Pattern(p)) => {
                    for (k, st) in m {
                        for r in &st.runs {
                            due.push((r.start_ts.saturating_add(p.within_ms), 2 * ri, k.clone()));
                        }
                        if let Some(t) = st.last_alert_at {
                            due.push((t.saturating_add(rule.suppress_ms), 2 * ri + 1, k.clone()));
                        }
                    }
                }
                (Some(States::Window(m)), RuleKind::Aggregate(a)) => {
                    for (k, st) in m {
                        if let Some(t) = st.newest_ts() {
                            due.push((t.saturating_add(a.over_ms), 2 * ri, k.clone()));
                        }
                        if let Some(t) = st.last_alert_at {
                            due.push((t.saturating_add(rule.suppress_ms), 2 * ri + 1, k.clone()));
                        }
                    }
                }
                _ => {}
            }
            due.sort();
            for (d, q, k) in due {
                self.timers.push(q, d, k);
            }
        }
    }

    /// The complete mutable state (for checkpoints).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            rules: self
                .program
                .rules
                .rules
                .iter()
                .map(|r| r.name.clone())
                .zip(self.rts.iter().cloned())
                .collect(),
            identities: self.program.identities.clone(),
            buffer: self.buffer.iter().map(|r| r.0.clone()).collect(),
            inputs: self.inputs.clone(),
            watermark: self.watermark,
            arrivals: self.arrivals,
            next_seq: self.next_seq,
            metrics: self.metrics.clone(),
        }
    }

    /// An engine resumed from a snapshot. Rules that changed since start fresh.
    pub fn restore(
        rules: Arc<RuleSet>,
        config: EngineConfig,
        deployments: &[Deployment],
        snap: Snapshot,
    ) -> Engine {
        Engine::restore_program(Program::new(rules), config, deployments, snap)
    }

    /// [`Engine::restore`] on a program other engines share.
    pub fn restore_program(
        program: Arc<Program>,
        config: EngineConfig,
        deployments: &[Deployment],
        snap: Snapshot,
    ) -> Engine {
        let mut e = Engine::with_program(program.clone(), config, deployments);
        let keep: HashMap<String, RuleRt> = snap
            .rules
            .into_iter()
            .zip(snap.identities)
            .map(|((name, rt), id)| (state_key(&name, &id), rt))
            .collect();
        let mut keep = keep;
        e.install(program, deployments, |_, k| keep.remove(k));
        e.buffer = snap.buffer.into_iter().map(Reverse).collect();
        e.inputs = snap.inputs;
        e.watermark = snap.watermark;
        e.arrivals = snap.arrivals;
        e.next_seq = snap.next_seq;
        e.metrics = snap.metrics;
        e.active_runs = e.count_runs();
        e
    }
}

/// The parts of the engine that matching writes.
struct Work<'a> {
    rts: &'a mut [RuleRt],
    out: Out<'a>,
    active_runs: &'a mut usize,
    config: &'a EngineConfig,
}

/// Where alerts and their bookkeeping go.
struct Out<'a> {
    metrics: &'a mut Metrics,
    alerts: &'a mut Vec<Alert>,
    timers: &'a mut Timers,
    wall_ms: i64,
}

/// A match ready to become an alert.
struct Found {
    at: i64,
    matched: Vec<(String, Vec<Arc<str>>)>,
    evidence: Vec<(String, Vec<Arc<Event>>)>,
    matched_count: Option<(String, u64)>,
    fields: Vec<(String, serde_json::Value)>,
    absence: bool,
}

/// Adds one to a per-rule counter; the name is copied only the first time.
fn bump(counts: &mut BTreeMap<String, u64>, rule: &str) {
    match counts.get_mut(rule) {
        Some(n) => *n += 1,
        None => {
            counts.insert(rule.to_string(), 1);
        }
    }
}

fn suppressing(rule: &Rule, last_alert_at: Option<i64>, now: i64) -> bool {
    last_alert_at.is_some_and(|t| t.saturating_add(rule.suppress_ms) > now)
}

impl Out<'_> {
    /// Counts a match and emits its alert unless `suppress` holds it back.
    fn alert(
        &mut self,
        ri: usize,
        rule: &Rule,
        (version, shadow): (u32, bool),
        key: &Key,
        last_alert_at: &mut Option<i64>,
        f: Found,
    ) {
        bump(&mut self.metrics.matches, &rule.name);
        if last_alert_at.is_some_and(|t| f.at < t.saturating_add(rule.suppress_ms)) {
            bump(&mut self.metrics.suppressed, &rule.name);
            return;
        }
        *last_alert_at = Some(f.at);
        if rule.suppress_ms > 0 {
            self.timers.push(
                2 * ri + 1,
                f.at.saturating_add(rule.suppress_ms),
                key.clone(),
            );
        }
        self.alerts.push(Alert {
            id: Alert::compute_id(
                &rule.name,
                version,
                key,
                &f.matched,
                f.absence.then_some(f.at),
            ),
            rule: rule.name.clone(),
            version,
            severity: rule.severity,
            key: key.clone(),
            at: f.at,
            matched: f.matched,
            evidence: f.evidence,
            matched_count: f.matched_count,
            fields: f.fields,
            detected_at: self.wall_ms,
            shadow,
        });
        bump(&mut self.metrics.alerts, &rule.name);
    }

    /// A completed pattern match: bindings in declaration order, emit fields.
    #[allow(clippy::too_many_arguments)]
    fn pattern_match(
        &mut self,
        ri: usize,
        rule: &Rule,
        deployment: (u32, bool),
        key: &Key,
        last_alert_at: &mut Option<i64>,
        m: Match,
        env: &Env,
    ) {
        let RuleKind::Pattern(p) = &rule.kind else {
            return;
        };
        let ctx = RunCtx {
            pattern: p,
            events: &m.run.events,
            current: None,
        };
        let fields = rule
            .emit
            .iter()
            .map(|(n, e)| (n.clone(), eval(e, &ctx, env).to_json()))
            .collect();
        let evidence: Vec<(String, Vec<Arc<Event>>)> = p
            .bindings
            .iter()
            .filter_map(|b| {
                let evs: Vec<Arc<Event>> = m
                    .run
                    .events
                    .iter()
                    .filter(|(s, _)| *s == b.step)
                    .map(|(_, e)| e.clone())
                    .collect();
                (!evs.is_empty()).then(|| (b.name.clone(), evs))
            })
            .collect();
        let matched = evidence
            .iter()
            .map(|(n, evs)| (n.clone(), evs.iter().map(|e| e.id.clone()).collect()))
            .collect();
        let found = Found {
            at: m.at,
            matched,
            evidence,
            matched_count: None,
            fields,
            absence: m.absence,
        };
        self.alert(ri, rule, deployment, key, last_alert_at, found);
    }
}

/// Timer queues, two per rule (window deadlines, suppression ends). Within a
/// queue, deadlines are pushed in nondecreasing order (event time only moves
/// forward), so each queue is a FIFO and no heap is needed; a rare out-of-order
/// push is inserted in place. A popped entry is a hint: the key's state is
/// checked as of the firing time.
#[derive(Debug, Clone, Default)]
struct Timers {
    queues: Vec<VecDeque<(i64, Key)>>,
}

impl Timers {
    /// Queues are created on first use: most shards hold state for few
    /// of the rules.
    fn new() -> Timers {
        Timers { queues: vec![] }
    }

    fn push(&mut self, q: usize, due: i64, key: Key) {
        if q >= self.queues.len() {
            self.queues.resize_with(q + 1, VecDeque::new);
        }
        let queue = &mut self.queues[q];
        if queue.back().is_none_or(|(d, _)| *d <= due) {
            queue.push_back((due, key));
        } else {
            let pos = queue.partition_point(|(d, _)| *d <= due);
            queue.insert(pos, (due, key));
        }
    }

    /// The next entry due strictly before `before`, earliest first across queues.
    fn pop_due(&mut self, before: i64) -> Option<(usize, i64, Key)> {
        let (q, _) = self
            .queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.front().map(|(d, _)| (i, *d)))
            .filter(|(_, d)| *d < before)
            .min_by_key(|(i, d)| (*d, *i))?;
        self.queues[q].pop_front().map(|(d, k)| (q, d, k))
    }
}

fn collect_regexes(r: &Rule, out: &mut HashMap<String, regex::Regex>) {
    fn walk(e: &rule_lang::program::Expr, out: &mut HashMap<String, regex::Regex>) {
        use rule_lang::program::Expr as E;
        match e {
            E::Regex(a, pat) => {
                if !out.contains_key(pat)
                    && let Ok(re) = regex::Regex::new(pat)
                {
                    out.insert(pat.clone(), re);
                }
                walk(a, out);
            }
            E::Lit(_) | E::Field { .. } | E::Agg { .. } => {}
            E::Not(a) | E::Neg(_, a) | E::ToFloat(a) | E::InSet(_, a, _) | E::InList(a, _) => {
                walk(a, out)
            }
            E::And(a, b) | E::Or(a, b) | E::Cmp(_, _, a, b) | E::Arith(_, _, a, b) => {
                walk(a, out);
                walk(b, out);
            }
            E::Call(_, args) => args.iter().for_each(|a| walk(a, out)),
        }
    }
    let mut exprs: Vec<&rule_lang::program::Expr> = r.emit.iter().map(|(_, e)| e).collect();
    match &r.kind {
        RuleKind::Pattern(p) => {
            exprs.extend(p.steps.iter().filter_map(|s| s.pred.as_ref()));
            exprs.extend(p.negations.iter().filter_map(|n| n.pred.as_ref()));
            exprs.extend(p.where_.as_ref());
        }
        RuleKind::Aggregate(a) => {
            exprs.extend(a.pred.as_ref());
            exprs.push(&a.having);
        }
    }
    for e in exprs {
        walk(e, out);
    }
}

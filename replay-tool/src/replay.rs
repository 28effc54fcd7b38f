//! `run`, `score`, `diff` and `gen`: the engine over recorded events.

use anyhow::{Context, bail};
use cep_engine::decode::DeadLetters;
use cep_engine::{Alert, Decoder, EngineConfig, Event, Parallel, Program, Rejection};
use clap::Args;
use rule_lang::RuleSet;
use rule_lang::program::Type;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// Replay options shared by run, score and diff.
#[derive(Args, Clone)]
pub struct ReplayOpts {
    /// Events: JSONL (one object per line) or CSV with a header row (`.csv`);
    /// `.gz` is decompressed; `-` reads standard input (JSONL).
    #[arg(long)]
    pub events: String,
    /// Allowed lateness: events up to this much older than the newest are reordered.
    #[arg(long, default_value = "0s", value_parser = parse_dur)]
    pub lateness: i64,
    /// At end of input, move event time to infinity (fires every pending timer).
    #[arg(long)]
    pub flush_all: bool,
    /// Cap on partial matches per (rule, key).
    #[arg(long, default_value_t = EngineConfig::default().max_runs_per_key)]
    pub max_runs_per_key: usize,
    /// Cap on events held by one partial match: a run that reaches it without
    /// completing is dropped and counted.
    #[arg(long, default_value_t = EngineConfig::default().max_run_events)]
    pub max_run_events: usize,
    /// Reference lists for `in list "name"`: a JSON file `{"name": ["a", "b"], ...}`.
    #[arg(long)]
    pub lists: Option<PathBuf>,
    /// Report an event that moves event time forward by more than this at
    /// once (a clock jump: every older event after it is late).
    #[arg(long, default_value = "1h", value_parser = parse_dur)]
    pub clock_jump: i64,
    /// Worker threads, each matching the keys of its share of the key
    /// shards (0: one per core). The alerts are the same, in the same
    /// order, for any number.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Lines per round of decoding and matching (tests use small rounds).
    #[arg(long, default_value_t = ROUND_LINES, hide = true)]
    pub round_lines: usize,
}

impl ReplayOpts {
    /// Options for a plain replay of a file.
    pub fn for_events(events: impl Into<String>) -> ReplayOpts {
        ReplayOpts {
            events: events.into(),
            lateness: 0,
            flush_all: false,
            max_runs_per_key: EngineConfig::default().max_runs_per_key,
            max_run_events: EngineConfig::default().max_run_events,
            lists: None,
            clock_jump: 3_600_000,
            threads: 0,
            round_lines: ROUND_LINES,
        }
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// Rule file or directory.
    #[arg(long)]
    pub rules: PathBuf,
    #[command(flatten)]
    pub opts: ReplayOpts,
    /// Write alerts here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write every kept rejected event (JSONL: source, line, offset, reason) here.
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Print the summary as JSON on stderr.
    #[arg(long)]
    pub json_summary: bool,
}

#[derive(Args)]
pub struct ScoreArgs {
    #[arg(long)]
    pub rules: PathBuf,
    #[command(flatten)]
    pub opts: ReplayOpts,
    /// Labels (JSONL): `{"event": "<id>", "label": true}` or
    /// `{"key": "<key>", "label": true}`, optionally with `"rule": "<name>"`.
    #[arg(long)]
    pub labels: PathBuf,
}

#[derive(Args)]
pub struct DiffArgs {
    /// The candidate rule set.
    #[arg(long)]
    pub rules: PathBuf,
    /// The rule set to compare against.
    #[arg(long)]
    pub against: PathBuf,
    #[command(flatten)]
    pub opts: ReplayOpts,
}

#[derive(Args)]
pub struct GenArgs {
    /// Number of events.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Number of distinct cards (`card-<n>`).
    #[arg(long, default_value_t = 100_000)]
    pub cards: u64,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Event time of the first event, epoch ms (one more per event).
    #[arg(long, default_value_t = GEN_BASE_MS)]
    pub base_ms: i64,
    /// `txn`: the benchmark workload; `library`: every event type of the rule library.
    #[arg(long, value_enum, default_value_t)]
    pub flavor: crate::library::Flavor,
    /// Output file (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `90061000` → `1d 1h`: the two largest units, for summaries.
fn human_ms(ms: i64) -> String {
    let units = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let mut left = ms.max(0);
    let mut parts = vec![];
    for (name, size) in units {
        if left >= size && parts.len() < 2 {
            parts.push(format!("{}{name}", left / size));
            left %= size;
        } else if !parts.is_empty() {
            break;
        }
    }
    if parts.is_empty() {
        "0ms".into()
    } else {
        parts.join(" ")
    }
}

fn parse_dur(s: &str) -> Result<i64, String> {
    rule_lang::parse_duration(s)
}

fn load_rules(path: &Path) -> anyhow::Result<Arc<RuleSet>> {
    let compiled = rule_lang::load_paths(&[path.to_path_buf()])?;
    match compiled.program {
        Some(p) => Ok(Arc::new(p)),
        None => {
            eprint!(
                "{}",
                compiled.diagnostics.render(std::io::stderr().is_terminal())
            );
            bail!("the rules in {} do not compile", path.display())
        }
    }
}

/// One event that moved the replay's event time forward by more than
/// `--clock-jump`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClockJump {
    pub line: u64,
    /// Event time before it and after it, epoch ms.
    pub from: i64,
    pub to: i64,
}

/// The clock jumps a replay saw: all counted, the first few kept.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClockJumps {
    pub count: u64,
    pub first: Vec<ClockJump>,
}

impl ClockJumps {
    const KEEP: usize = 10;

    fn saw(&mut self, jump: ClockJump) {
        self.count += 1;
        if self.first.len() < Self::KEEP {
            self.first.push(jump);
        }
    }
}

/// What a replay produced.
pub struct Replay {
    pub dead: DeadLetters,
    pub jumps: ClockJumps,
    pub engine_metrics: cep_engine::Metrics,
    pub lines: u64,
    pub secs: f64,
}

fn open_events(spec: &str) -> anyhow::Result<(Box<dyn BufRead>, bool, String)> {
    if spec == "-" {
        return Ok((
            Box::new(BufReader::with_capacity(1 << 20, std::io::stdin())),
            false,
            "stdin".into(),
        ));
    }
    let path = Path::new(spec);
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {spec}"))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(spec);
    let (inner, base): (Box<dyn Read>, &str) = match name.strip_suffix(".gz") {
        Some(base) => (Box::new(flate2::read::MultiGzDecoder::new(f)), base),
        None => (Box::new(f), name),
    };
    let csv = base.ends_with(".csv");
    let source = base.rsplit_once('.').map_or(base, |(b, _)| b).to_string();
    Ok((
        Box::new(BufReader::with_capacity(1 << 20, inner)),
        csv,
        source,
    ))
}

/// Lines decoded and matched per round: large enough that starting the
/// workers is noise (each round starts its threads), small enough to hold
/// (some 20 MB of text and decoded events).
pub const ROUND_LINES: usize = 65_536;

/// One round of input: the lines' text end to end, and where each starts.
#[derive(Default)]
struct Chunk {
    text: Vec<u8>,
    items: Vec<Item>,
}

struct Item {
    line: u64,
    offset: u64,
    text: std::ops::Range<usize>,
    /// Refused before decoding (a malformed CSV record).
    refused: Option<Rejection>,
}

impl Chunk {
    fn push(&mut self, line: u64, offset: u64, bytes: &[u8]) {
        let at = self.text.len();
        self.text.extend_from_slice(bytes);
        self.items.push(Item {
            line,
            offset,
            text: at..self.text.len(),
            refused: None,
        });
    }

    fn refuse(&mut self, line: u64, offset: u64, r: Rejection) {
        self.items.push(Item {
            line,
            offset,
            text: 0..0,
            refused: Some(r),
        });
    }

    fn clear(&mut self) {
        self.text.clear();
        self.items.clear();
    }

    /// Every line decoded, `workers` slices at a time: `parts` gets one
    /// vector per slice, in line order (kept from round to round, so their
    /// memory is reused).
    fn decode(
        &self,
        decoder: &Decoder,
        source: &str,
        workers: usize,
        parts: &mut Vec<Vec<Result<Event, Rejection>>>,
    ) {
        let decode = |items: &[Item], out: &mut Vec<Result<Event, Rejection>>| {
            out.clear();
            out.extend(items.iter().map(|it| match &it.refused {
                Some(r) => Err(r.clone()),
                None => decoder.decode(&self.text[it.text.clone()], || {
                    format!("{source}:{}", it.line)
                }),
            }));
        };
        let n = if self.items.len() < 1024 {
            1
        } else {
            workers.max(1)
        };
        parts.resize_with(n, Vec::new);
        parts.truncate(n);
        if n == 1 {
            decode(&self.items, &mut parts[0]);
            return;
        }
        let per = self.items.len().div_ceil(n);
        std::thread::scope(|s| {
            for (items, out) in self.items.chunks(per).zip(parts.iter_mut()) {
                s.spawn(move || decode(items, out));
            }
        });
    }
}

/// The number of workers `--threads` asks for (0: one per core).
pub fn workers(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// Runs events through the engine, split by key over `--threads` workers
/// (see [`cep_engine::parallel`]); `on_alert` sees alerts in order of `at`
/// (then rule, key, id), the same order for any number of workers.
pub fn replay(
    rules: Arc<RuleSet>,
    opts: &ReplayOpts,
    mut on_alert: impl FnMut(Alert) -> anyhow::Result<()>,
) -> anyhow::Result<Replay> {
    let config = EngineConfig {
        lateness_ms: opts.lateness,
        max_runs_per_key: opts.max_runs_per_key,
        max_run_events: opts.max_run_events.max(1),
        ..EngineConfig::default()
    };
    let decoder = Decoder::new(&rules);
    let workers = workers(opts.threads);
    let mut engine = Parallel::new(Program::new(rules.clone()), config, workers);
    if let Some(p) = &opts.lists {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        let lists: BTreeMap<String, Vec<String>> = serde_json::from_str(&text)
            .with_context(|| format!("{}: expected {{\"name\": [\"entry\", ...]}}", p.display()))?;
        let table: cep_engine::eval::Lists = lists
            .into_iter()
            .map(|(name, entries)| (name, Arc::new(entries.into_iter().map(Arc::from).collect())))
            .collect();
        engine.set_lists(Arc::new(table));
    }
    let wall = || chrono::Utc::now().timestamp_millis();
    engine.set_wall_clock(wall());
    let mut dead = DeadLetters::new(1000);
    let mut jumps = ClockJumps::default();
    let mut clock: Option<i64> = None;
    let jump_ms = opts.clock_jump.max(0);
    let (mut reader, csv, source) = open_events(&opts.events)?;
    let progress = std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {human_pos} events {per_sec} {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        pb
    });
    let start = Instant::now();
    let mut lines = 0u64;
    // A round: decode (in parallel), then in line order record what was
    // refused, watch the clock and hand events to the engine, then match
    // (in parallel) and pass on the alerts that are final.
    let mut parts = Vec::new();
    let mut round = |chunk: &mut Chunk,
                     engine: &mut Parallel,
                     dead: &mut DeadLetters,
                     lines: u64|
     -> anyhow::Result<()> {
        chunk.decode(&decoder, &source, workers, &mut parts);
        let decoded = parts.iter_mut().flat_map(|p| p.drain(..));
        for (it, decoded) in chunk.items.iter().zip(decoded) {
            match decoded {
                Ok(ev) => {
                    // No wall clock here: old data is the point of a replay,
                    // so only the absurd range is refused (by the decoder); a
                    // far jump is reported.
                    if let Some(c) = clock
                        && ev.ts.saturating_sub(c) > jump_ms
                    {
                        jumps.saw(ClockJump {
                            line: it.line,
                            from: c,
                            to: ev.ts,
                        });
                    }
                    clock = Some(clock.map_or(ev.ts, |c| c.max(ev.ts)));
                    engine.push(ev);
                }
                Err(r) => dead.record(&source, it.line, it.offset, &r),
            }
        }
        chunk.clear();
        engine.set_wall_clock(wall());
        for a in engine.run() {
            on_alert(a)?;
        }
        if let Some(pb) = &progress {
            pb.set_position(lines);
        }
        Ok(())
    };
    let mut chunk = Chunk::default();
    let round_lines = opts.round_lines.max(1);
    if csv {
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let headers = rdr.headers()?.clone();
        let mut rec = csv::StringRecord::new();
        loop {
            // Where the record starts: its line (a quoted field may span lines)
            // and byte offset, for default ids and dead letters.
            let at = rdr.position().clone();
            match rdr.read_record(&mut rec) {
                Ok(false) => break,
                Ok(true) => {
                    lines += 1;
                    let json = csv_to_json(&rules, &headers, &rec);
                    chunk.push(at.line(), at.byte(), json.as_bytes());
                }
                Err(e) if e.is_io_error() => return Err(e.into()),
                Err(e) => {
                    lines += 1;
                    let r = cep_engine::Rejection {
                        reason: "malformed_csv",
                        detail: e.to_string(),
                    };
                    chunk.refuse(at.line(), at.byte(), r);
                }
            }
            if chunk.items.len() >= round_lines {
                round(&mut chunk, &mut engine, &mut dead, lines)?;
            }
        }
    } else {
        let mut buf = Vec::with_capacity(4096);
        let mut offset = 0u64;
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            lines += 1;
            let trimmed = buf.trim_ascii();
            if !trimmed.is_empty() {
                chunk.push(lines, offset, trimmed);
            }
            offset += n as u64;
            if chunk.items.len() >= round_lines {
                round(&mut chunk, &mut engine, &mut dead, lines)?;
            }
        }
    }
    round(&mut chunk, &mut engine, &mut dead, lines)?;
    engine.set_wall_clock(wall());
    for a in engine.finish(opts.flush_all) {
        on_alert(a)?;
    }
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    Ok(Replay {
        dead,
        jumps,
        engine_metrics: engine.metrics(),
        lines,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// A CSV row → a JSON object text, typing declared fields by the row's `type`.
fn csv_to_json(rules: &RuleSet, headers: &csv::StringRecord, rec: &csv::StringRecord) -> String {
    let ty = headers
        .iter()
        .position(|h| h == "type")
        .and_then(|i| rec.get(i))
        .unwrap_or("");
    let schema = rules.schemas.iter().find(|s| s.name == ty);
    let mut obj = serde_json::Map::new();
    for (h, v) in headers.iter().zip(rec.iter()) {
        if v.is_empty() && h != "type" {
            continue;
        }
        let fty = schema
            .and_then(|s| s.fields.iter().find(|f| f.name == h))
            .map(|f| f.ty);
        let jv = match (h, fty) {
            ("ts", _) | (_, Some(Type::Time)) => v
                .parse::<i64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| v.into()),
            (_, Some(Type::Int)) => v
                .parse::<i64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| v.into()),
            (_, Some(Type::Float)) => v
                .parse::<f64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| v.into()),
            (_, Some(Type::Bool)) => match v {
                "true" => true.into(),
                "false" => false.into(),
                other => other.into(),
            },
            _ => v.into(),
        };
        obj.insert(h.to_string(), jv);
    }
    serde_json::Value::Object(obj).to_string()
}

pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let rules = load_rules(&a.rules)?;
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let r = replay(rules, &a.opts, |al| {
        serde_json::to_writer(&mut out, &al)?;
        out.write_all(b"\n")?;
        Ok(())
    })?;
    out.flush()?;
    if let Some(p) = &a.rejects {
        let mut w = BufWriter::new(std::fs::File::create(p)?);
        for d in &r.dead.sample {
            serde_json::to_writer(&mut w, d)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    let m = &r.engine_metrics;
    let summary = serde_json::json!({
        "lines": r.lines,
        "events": m.events_in,
        "rejected": r.dead.total(),
        "rejected_by_reason": r.dead.by_reason,
        "late": m.late,
        "alerts": m.alerts.values().sum::<u64>(),
        "alerts_by_rule": m.alerts,
        "matches_by_rule": m.matches,
        "suppressed_by_rule": m.suppressed,
        "runs_dropped_cap": m.runs_dropped_cap,
        "runs_dropped_events_cap": m.runs_dropped_events_cap,
        "clock_jumps": r.jumps,
        "seconds": r.secs,
        "events_per_sec": (r.lines as f64 / r.secs.max(1e-9)).round(),
    });
    if a.json_summary {
        eprintln!("{summary}");
    } else {
        eprintln!(
            "events: {} read, {} rejected, {} late; alerts: {}; {:.0} events/s ({:.2}s)",
            r.lines,
            r.dead.total(),
            m.late,
            m.alerts.values().sum::<u64>(),
            r.lines as f64 / r.secs.max(1e-9),
            r.secs
        );
        for (reason, n) in &r.dead.by_reason {
            eprintln!("  rejected {reason}: {n}");
        }
        if r.jumps.count > 0 {
            eprintln!(
                "  clock jumps over {}: {} (later events older than a jump are late)",
                human_ms(a.opts.clock_jump),
                r.jumps.count
            );
        }
        for j in &r.jumps.first {
            eprintln!(
                "    line {}: {} -> {} (+{})",
                j.line,
                cep_engine::time::format_ms(j.from),
                cep_engine::time::format_ms(j.to),
                human_ms(j.to.saturating_sub(j.from))
            );
        }
        for d in r.dead.sample.iter().take(5) {
            eprintln!(
                "    line {} (offset {}): {}: {}",
                d.line, d.offset, d.reason, d.detail
            );
        }
        for (rule, n) in &m.matches {
            let alerts = m.alerts.get(rule).copied().unwrap_or(0);
            let sup = m.suppressed.get(rule).copied().unwrap_or(0);
            eprintln!("  rule {rule}: {alerts} alerts, {n} matches, {sup} suppressed");
        }
        if m.runs_dropped_cap + m.runs_dropped_events_cap > 0 {
            eprintln!(
                "  partial matches dropped: {} at --max-runs-per-key, {} at --max-run-events",
                m.runs_dropped_cap, m.runs_dropped_events_cap
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Deserialize)]
struct Label {
    event: Option<serde_json::Value>,
    key: Option<serde_json::Value>,
    rule: Option<String>,
    #[serde(default = "yes")]
    label: bool,
}

fn yes() -> bool {
    true
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Positive labels, by rule (`"*"`: every rule): event ids and keys.
#[derive(Debug, Default)]
pub struct Labels {
    events: HashMap<String, HashSet<String>>,
    keys: HashMap<String, HashSet<String>>,
}

/// One rule's score against [`Labels`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Score {
    pub alerts: u64,
    /// Alerts that matched a labelled event or fired on a labelled key.
    pub true_positives: u64,
    /// Labelled events and keys in the rule's scope.
    pub positives: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Labels {
    /// JSONL, one label per line: `{"event": id}` or `{"key": k}`, optional
    /// `"rule"` (default: every rule) and `"label"` (default `true`; `false`
    /// lines are ignored).
    pub fn parse(text: &str) -> anyhow::Result<Labels> {
        let mut labels = Labels::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let l: Label =
                serde_json::from_str(line).with_context(|| format!("labels line {}", i + 1))?;
            if !l.label {
                continue;
            }
            let scope = l.rule.clone().unwrap_or_else(|| "*".into());
            match (l.event, l.key) {
                (Some(e), _) => labels
                    .events
                    .entry(scope)
                    .or_default()
                    .insert(json_text(&e)),
                (None, Some(k)) => labels.keys.entry(scope).or_default().insert(json_text(&k)),
                _ => bail!("labels line {}: needs `event` or `key`", i + 1),
            };
        }
        Ok(labels)
    }

    /// Scores `alerts` (all of rule `rule`): an alert is a true positive when
    /// one of its matched events or its key is labelled; recall counts the
    /// labelled events and keys some alert found.
    pub fn score<'a>(&self, rule: &str, alerts: impl IntoIterator<Item = &'a Alert>) -> Score {
        let scoped = |m: &HashMap<String, HashSet<String>>| -> HashSet<String> {
            m.get(rule)
                .into_iter()
                .chain(m.get("*"))
                .flatten()
                .cloned()
                .collect()
        };
        let (ev_pos, key_pos) = (scoped(&self.events), scoped(&self.keys));
        let (mut n, mut tp) = (0u64, 0u64);
        let mut found_ev: HashSet<String> = HashSet::new();
        let mut found_key: HashSet<String> = HashSet::new();
        for al in alerts {
            n += 1;
            let key = json_text(&al.key.to_json());
            let mut hit = false;
            if key_pos.contains(&key) {
                hit = true;
                found_key.insert(key);
            }
            for (_, ids) in &al.matched {
                for id in ids {
                    if ev_pos.contains(&id.to_string()) {
                        hit = true;
                        found_ev.insert(id.to_string());
                    }
                }
            }
            tp += u64::from(hit);
        }
        let positives = (ev_pos.len() + key_pos.len()) as u64;
        let found = (found_ev.len() + found_key.len()) as f64;
        let precision = if n == 0 { 0.0 } else { tp as f64 / n as f64 };
        let recall = if positives == 0 {
            0.0
        } else {
            found / positives as f64
        };
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Score {
            alerts: n,
            true_positives: tp,
            positives,
            precision,
            recall,
            f1,
        }
    }
}

pub fn score(a: ScoreArgs) -> anyhow::Result<ExitCode> {
    let rules = load_rules(&a.rules)?;
    let text = std::fs::read_to_string(&a.labels)
        .with_context(|| format!("cannot read {}", a.labels.display()))?;
    let labels = Labels::parse(&text)?;
    let mut alerts = vec![];
    replay(rules.clone(), &a.opts, |al| {
        alerts.push(al);
        Ok(())
    })?;
    println!("rule\talerts\ttrue_pos\tprecision\trecall\tf1");
    for rule in &rules.rules {
        let name = &rule.name;
        let s = labels.score(name, alerts.iter().filter(|al| al.rule == *name));
        println!(
            "{name}\t{}\t{}\t{:.4}\t{:.4}\t{:.4}",
            s.alerts, s.true_positives, s.precision, s.recall, s.f1
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Identity of an alert for diffing: rule, key, at and matched ids (not
/// the id, which includes the version).
pub fn alert_identity(a: &Alert) -> String {
    serde_json::json!([
        a.rule,
        a.key.to_json(),
        a.at,
        a.matched
            .iter()
            .map(|(k, v)| (k, v.iter().map(|x| x.to_string()).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    ])
    .to_string()
}

pub fn diff(a: DiffArgs) -> anyhow::Result<ExitCode> {
    let collect = |rules: &Path| -> anyhow::Result<Vec<Alert>> {
        let mut alerts = vec![];
        replay(load_rules(rules)?, &a.opts, |al| {
            alerts.push(al);
            Ok(())
        })?;
        Ok(alerts)
    };
    let (alerts_a, alerts_b) = (collect(&a.rules)?, collect(&a.against)?);
    let ia: HashMap<String, &Alert> = alerts_a.iter().map(|x| (alert_identity(x), x)).collect();
    let ib: HashMap<String, &Alert> = alerts_b.iter().map(|x| (alert_identity(x), x)).collect();
    let mut per_rule: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for x in &alerts_a {
        let side = if ib.contains_key(&alert_identity(x)) {
            "both"
        } else {
            "only_rules"
        };
        per_rule.entry(x.rule.clone()).or_default()[if side == "both" { 2 } else { 0 }] += 1;
        if side != "both" {
            writeln!(out, "{}", serde_json::json!({"side": side, "alert": x}))?;
        }
    }
    for x in &alerts_b {
        if !ia.contains_key(&alert_identity(x)) {
            per_rule.entry(x.rule.clone()).or_default()[1] += 1;
            writeln!(
                out,
                "{}",
                serde_json::json!({"side": "only_against", "alert": x})
            )?;
        }
    }
    out.flush()?;
    eprintln!("rule\tonly_rules\tonly_against\tboth");
    for (rule, [a1, b1, both]) in &per_rule {
        eprintln!("{rule}\t{a1}\t{b1}\t{both}");
    }
    Ok(ExitCode::SUCCESS)
}

/// SplitMix64: a tiny fixed-seed generator so anyone can regenerate the data.
pub struct SplitMix(pub u64);

const SPLITMIX_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(SPLITMIX_GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Base time of generated events: 2026-01-05T00:00:00Z.
pub const GEN_BASE_MS: i64 = 1_767_571_200_000;

pub fn gen_events(a: GenArgs) -> anyhow::Result<ExitCode> {
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    if a.flavor == crate::library::Flavor::Library {
        for i in 0..a.events {
            writeln!(
                out,
                "{}",
                crate::library::event(a.seed, i, a.cards, a.base_ms)
            )?;
        }
    } else {
        for line in Workload::new(a.cards, a.seed, a.base_ms).take(a.events as usize) {
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The `gen` workload in memory, event time starting at `base_ms` (the load
/// generator starts at the wall clock, so a second run is not all late).
pub fn generate(events: u64, cards: u64, seed: u64, base_ms: i64) -> Vec<String> {
    generate_range(0, events, cards, seed, base_ms)
}

/// Events `from .. from + events` of the `gen` workload (ids `e<from>`…, event
/// time `base_ms + from`…): the continuation of an earlier `generate`.
pub fn generate_range(from: u64, events: u64, cards: u64, seed: u64, base_ms: i64) -> Vec<String> {
    let mut w = Workload::new(cards, seed, base_ms);
    w.skip_to(from);
    w.take(events as usize).collect()
}

/// The synthetic workload: `Txn` events over `cards` cards, amount uniform in
/// [1, 100) with two decimals, event time +1 ms per event.
struct Workload {
    rng: SplitMix,
    cards: u64,
    i: u64,
    base_ms: i64,
}

impl Workload {
    fn new(cards: u64, seed: u64, base_ms: i64) -> Workload {
        Workload {
            rng: SplitMix(seed),
            cards: cards.max(1),
            i: 0,
            base_ms,
        }
    }

    /// Jumps to event `i` (SplitMix's state advances by a constant per
    /// draw, and every event draws twice).
    fn skip_to(&mut self, i: u64) {
        let draws = i.wrapping_sub(self.i).wrapping_mul(2);
        self.rng.0 = self.rng.0.wrapping_add(draws.wrapping_mul(SPLITMIX_GAMMA));
        self.i = i;
    }
}

impl Iterator for Workload {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let i = self.i;
        self.i += 1;
        let card = self.rng.next_u64() % self.cards;
        let cents = 100 + self.rng.next_u64() % 9900;
        Some(format!(
            "{{\"id\":\"e{i}\",\"type\":\"Txn\",\"ts\":{},\"card_id\":\"card-{card}\",\"amount\":{}.{:02}}}",
            self.base_ms + i as i64,
            cents / 100,
            cents % 100
        ))
    }
}

//! Backtests: a rule version run over a stored or uploaded event sample by
//! the same engine the nodes run, in the background, with progress and
//! cancellation; the report has the alert count, alerts over time, the
//! precision/recall against labels and the alert diff against another
//! version (usually the deployed one).
//!
//! Jobs live in memory (a restart forgets them; the report is cheap to
//! recompute). At most [`MAX_RUNNING`] run at once and the newest
//! [`MAX_KEPT`] are kept.

use cep_engine::{Alert, Decoder, Deployment, Engine, EngineConfig};
use rule_lang::RuleSet;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Backtests running at the same time (each takes a blocking thread).
pub const MAX_RUNNING: usize = 2;
/// Finished and running jobs kept for `GET`.
pub const MAX_KEPT: usize = 50;
/// Alerts shown in a report, and per side of its diff.
const SAMPLE_ALERTS: usize = 200;
const DIFF_ALERTS: usize = 50;
/// Bars of the alerts-over-time chart, at most.
const TIME_BUCKETS: i64 = 48;

/// Where a backtest's events come from.
pub enum Events {
    /// NDJSON text sent with the request.
    Inline(Vec<u8>),
    /// A stored sample file, with its number of events when known.
    File {
        path: std::path::PathBuf,
        lines: Option<u64>,
    },
}

/// What a backtest runs.
pub struct Spec {
    pub rule: String,
    pub version: u32,
    /// The version text, compiled against `schema`.
    pub set: Arc<RuleSet>,
    /// Another version to diff against: (version, compiled).
    pub against: Option<(u32, Arc<RuleSet>)>,
    pub lists: Vec<(String, Vec<String>)>,
    pub events: Events,
    pub labels: Option<vigil_replay::replay::Labels>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Done,
    Cancelled,
    Failed,
}

/// One backtest.
pub struct Job {
    pub id: String,
    pub rule: String,
    pub version: u32,
    pub against: Option<u32>,
    pub created_by: String,
    total: AtomicU64,
    done: AtomicU64,
    cancel: AtomicBool,
    outcome: Mutex<(State, Option<String>, Option<Arc<Report>>)>,
}

/// A finished backtest's figures.
#[derive(Debug, Serialize)]
pub struct Report {
    pub events: u64,
    pub rejected: u64,
    pub alerts: u64,
    pub per_rule: std::collections::BTreeMap<String, u64>,
    /// Width of one bar of `over_time`, ms of event time.
    pub bucket_ms: i64,
    pub over_time: Vec<Bucket>,
    pub sample_alerts: Vec<serde_json::Value>,
    pub score: Option<vigil_replay::replay::Score>,
    pub diff: Option<Diff>,
    pub secs: f64,
}

#[derive(Debug, Serialize)]
pub struct Bucket {
    /// Start of the bar, RFC 3339.
    pub at: String,
    pub count: u64,
}

/// Alerts of the backtested version against another version's, matched by
/// what they matched (rule, key, time, events), not by id (ids include the
/// version).
#[derive(Debug, Serialize)]
pub struct Diff {
    pub against: u32,
    pub only_new: u64,
    pub only_old: u64,
    pub both: u64,
    pub only_new_alerts: Vec<serde_json::Value>,
    pub only_old_alerts: Vec<serde_json::Value>,
}

impl Job {
    /// The job as the API shows it.
    pub fn view(&self) -> serde_json::Value {
        let (state, error, report) = self.outcome.lock().map(|o| o.clone()).unwrap_or((
            State::Failed,
            Some("poisoned".into()),
            None,
        ));
        serde_json::json!({
            "id": self.id,
            "rule": self.rule,
            "version": self.version,
            "against": self.against,
            "created_by": self.created_by,
            "state": state,
            "error": error,
            "events_done": self.done.load(Ordering::Relaxed),
            "events_total": self.total.load(Ordering::Relaxed),
            "report": report,
        })
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    fn state(&self) -> State {
        self.outcome.lock().map_or(State::Failed, |o| o.0)
    }

    fn finish(&self, state: State, error: Option<String>, report: Option<Report>) {
        if let Ok(mut o) = self.outcome.lock() {
            *o = (state, error, report.map(Arc::new));
        }
    }
}

/// The jobs of one gateway.
#[derive(Default)]
pub struct Backtests {
    jobs: Mutex<VecDeque<Arc<Job>>>,
    seq: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{MAX_RUNNING} backtests are already running; wait for one or cancel it")]
    Busy,
}

impl Backtests {
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        let jobs = self.jobs.lock().ok()?;
        jobs.iter().find(|j| j.id == id).cloned()
    }

    /// Starts a job on a blocking thread; its id at once.
    pub fn start(&self, spec: Spec, created_by: &str) -> Result<Arc<Job>, StartError> {
        let mut jobs = self.jobs.lock().map_err(|_| StartError::Busy)?;
        if jobs.iter().filter(|j| j.state() == State::Running).count() >= MAX_RUNNING {
            return Err(StartError::Busy);
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job {
            id: format!("bt_{:x}_{n}", crate::catalog::now_ms()),
            rule: spec.rule.clone(),
            version: spec.version,
            against: spec.against.as_ref().map(|a| a.0),
            created_by: created_by.to_string(),
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            outcome: Mutex::new((State::Running, None, None)),
        });
        jobs.push_back(job.clone());
        // Drop the oldest finished jobs beyond the limit.
        while jobs.len() > MAX_KEPT {
            match jobs.iter().position(|j| j.state() != State::Running) {
                Some(i) => {
                    jobs.remove(i);
                }
                None => break,
            }
        }
        let j = job.clone();
        tokio::task::spawn_blocking(move || match run(&j, spec) {
            Ok(Some(report)) => j.finish(State::Done, None, Some(report)),
            Ok(None) => j.finish(State::Cancelled, None, None),
            Err(e) => j.finish(State::Failed, Some(format!("{e:#}")), None),
        });
        Ok(job)
    }
}

/// A stable 64-bit identity of an alert's match (see [`Diff`]).
fn identity(a: &Alert) -> u64 {
    foldhash::fast::FixedState::with_seed(7).hash_one(vigil_replay::replay::alert_identity(a))
}

/// One engine over the events, with its decoder.
struct Lane {
    decoder: Decoder,
    engine: Engine,
}

impl Lane {
    /// An engine running `set` as `version` (alerts carry it, and their ids
    /// are computed with it), with the stored lists.
    fn new(set: &Arc<RuleSet>, version: u32, lists: &[(String, Vec<String>)]) -> Lane {
        let deployments = vec![
            Deployment {
                version,
                shadow: false
            };
            set.rules.len()
        ];
        let mut engine =
            Engine::with_deployments(set.clone(), EngineConfig::default(), &deployments);
        for (name, entries) in lists {
            engine.set_list(name, entries.iter().cloned());
        }
        engine.set_wall_clock(crate::catalog::now_ms());
        Lane {
            decoder: Decoder::new(set),
            engine,
        }
    }

    /// Feeds one line; false when it was rejected.
    fn push(&mut self, n: u64, line: &[u8]) -> bool {
        match self.decoder.decode(line, || format!("backtest:{n}")) {
            Ok(ev) => {
                self.engine.push(ev);
                true
            }
            Err(_) => false,
        }
    }
}

/// Runs a job; `None` when it was cancelled.
fn run(job: &Job, spec: Spec) -> anyhow::Result<Option<Report>> {
    let start = std::time::Instant::now();
    let (total, reader): (u64, Box<dyn BufRead>) = match spec.events {
        Events::Inline(bytes) => (count_lines(&bytes), Box::new(std::io::Cursor::new(bytes))),
        Events::File { path, lines } => {
            let count = match lines {
                Some(n) => n,
                None => std::io::BufReader::new(std::fs::File::open(&path)?)
                    .split(b'\n')
                    .filter(|l| l.as_ref().is_ok_and(|l| !blank(l)))
                    .count() as u64,
            };
            let f = std::fs::File::open(&path)?;
            (
                count,
                Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
            )
        }
    };
    job.total.store(total, Ordering::Relaxed);
    let mut new = Lane::new(&spec.set, spec.version, &spec.lists);
    let mut old = spec
        .against
        .as_ref()
        .map(|(v, set)| Lane::new(set, *v, &spec.lists));
    let mut acc = Acc {
        keep_for_score: spec.labels.is_some(),
        ..Acc::default()
    };
    let (mut events, mut rejected) = (0u64, 0u64);
    for line in reader.split(b'\n') {
        let line = line?;
        if blank(&line) {
            continue;
        }
        events += 1;
        if !new.push(events, &line) {
            rejected += 1;
        }
        if let Some(o) = &mut old {
            o.push(events, &line);
        }
        if events.is_multiple_of(1024) {
            if job.cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            job.done.store(events, Ordering::Relaxed);
            acc.take(&mut new, old.as_mut());
        }
    }
    new.engine.finish(false);
    if let Some(o) = &mut old {
        o.engine.finish(false);
    }
    acc.take(&mut new, old.as_mut());
    job.done.store(events, Ordering::Relaxed);
    let score = spec
        .labels
        .as_ref()
        .map(|l| l.score(&spec.rule, acc.scored.iter()));
    Ok(Some(acc.report(
        events,
        rejected,
        score,
        spec.against.map(|a| a.0),
        start.elapsed().as_secs_f64(),
    )))
}

fn blank(l: &[u8]) -> bool {
    l.iter().all(u8::is_ascii_whitespace)
}

/// Events in NDJSON text: its non-blank lines.
pub fn count_lines(bytes: &[u8]) -> u64 {
    bytes.split(|&b| b == b'\n').filter(|l| !blank(l)).count() as u64
}

/// What the run gathers; bounded except for the per-alert time stamps and
/// identities (16 bytes an alert).
#[derive(Default)]
struct Acc {
    alerts: u64,
    per_rule: std::collections::BTreeMap<String, u64>,
    times: Vec<i64>,
    sample: Vec<serde_json::Value>,
    /// Alerts kept for scoring (only when labels were given).
    scored: Vec<Alert>,
    keep_for_score: bool,
    new_ids: HashMap<u64, Option<serde_json::Value>>,
    old_ids: HashMap<u64, Option<serde_json::Value>>,
}

impl Acc {
    fn take(&mut self, new: &mut Lane, old: Option<&mut Lane>) {
        for a in new.engine.drain_alerts() {
            self.alerts += 1;
            *self.per_rule.entry(a.rule.clone()).or_insert(0) += 1;
            self.times.push(a.at);
            let json = serde_json::to_value(&a).unwrap_or_default();
            if self.sample.len() < SAMPLE_ALERTS {
                self.sample.push(json.clone());
            }
            let keep = (self.new_ids.len() < SAMPLE_ALERTS * 20).then_some(json);
            self.new_ids.entry(identity(&a)).or_insert(keep);
            if self.keep_for_score {
                self.scored.push(a);
            }
        }
        if let Some(old) = old {
            for a in old.engine.drain_alerts() {
                let keep = (self.old_ids.len() < SAMPLE_ALERTS * 20)
                    .then(|| serde_json::to_value(&a).unwrap_or_default());
                self.old_ids.entry(identity(&a)).or_insert(keep);
            }
        }
    }

    fn report(
        mut self,
        events: u64,
        rejected: u64,
        score: Option<vigil_replay::replay::Score>,
        against: Option<u32>,
        secs: f64,
    ) -> Report {
        let (bucket_ms, over_time) = buckets(&mut self.times);
        let diff = against.map(|against| {
            let only = |a: &HashMap<u64, Option<serde_json::Value>>,
                        b: &HashMap<u64, Option<serde_json::Value>>| {
                let mut n = 0u64;
                let mut list = vec![];
                for (id, json) in a {
                    if !b.contains_key(id) {
                        n += 1;
                        if list.len() < DIFF_ALERTS
                            && let Some(j) = json
                        {
                            list.push(j.clone());
                        }
                    }
                }
                list.sort_by(|x, y| x["at"].as_str().cmp(&y["at"].as_str()));
                (n, list)
            };
            let (only_new, only_new_alerts) = only(&self.new_ids, &self.old_ids);
            let (only_old, only_old_alerts) = only(&self.old_ids, &self.new_ids);
            let both = self.new_ids.len() as u64 - only_new;
            Diff {
                against,
                only_new,
                only_old,
                both,
                only_new_alerts,
                only_old_alerts,
            }
        });
        Report {
            events,
            rejected,
            alerts: self.alerts,
            per_rule: self.per_rule,
            bucket_ms,
            over_time,
            sample_alerts: self.sample,
            score,
            diff,
            secs,
        }
    }
}

/// Alerts per bar over the alerts' time range: a round bar width giving at
/// most [`TIME_BUCKETS`] bars.
fn buckets(times: &mut [i64]) -> (i64, Vec<Bucket>) {
    times.sort_unstable();
    let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
        return (0, vec![]);
    };
    const WIDTHS: [i64; 12] = [
        1_000,
        10_000,
        60_000,
        300_000,
        900_000,
        3_600_000,
        3 * 3_600_000,
        6 * 3_600_000,
        86_400_000,
        7 * 86_400_000,
        30 * 86_400_000,
        365 * 86_400_000,
    ];
    let span = last - first + 1;
    let width = WIDTHS
        .iter()
        .copied()
        .find(|w| (span + w - 1) / w <= TIME_BUCKETS)
        .unwrap_or(WIDTHS[WIDTHS.len() - 1]);
    let base = first.div_euclid(width) * width;
    let n = ((last - base) / width + 1) as usize;
    let mut counts = vec![0u64; n];
    for t in times.iter() {
        let i = ((t - base) / width) as usize;
        if let Some(c) = counts.get_mut(i) {
            *c += 1;
        }
    }
    let bars = counts
        .into_iter()
        .enumerate()
        .map(|(i, count)| Bucket {
            at: cep_engine::time::format_ms(base + i as i64 * width),
            count,
        })
        .collect();
    (width, bars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_have_a_round_width_and_cover_every_alert() {
        let mut t = vec![0, 59_000, 61_000, 3_599_999, 10];
        let (w, bars) = buckets(&mut t);
        assert_eq!(w, 300_000, "an hour in at most 48 bars: 5 minutes");
        assert_eq!(bars.iter().map(|b| b.count).sum::<u64>(), 5);
        assert_eq!(bars[0].count, 4);
        assert_eq!(bars.len(), 12);
        assert_eq!(buckets(&mut []).1.len(), 0);
    }
}

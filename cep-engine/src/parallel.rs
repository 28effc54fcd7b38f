//! One stream over several engines, one per core: the cluster's split by key
//! shard, in one process, for replays and backtests.
//!
//! The caller pushes events in input order ([`Parallel::push`]); that part is
//! sequential and cheap: it keeps the one watermark (highest `ts` minus the
//! allowed lateness), refuses late events, and queues each event's routed
//! copies (the [`Routes`] the gateway uses) for the worker that owns the
//! copy's key shard. [`Parallel::run`] then lets every worker work through
//! its queue on its own thread, each copy followed by the watermark it was
//! routed with, exactly as a node is driven by the gateway's clock.
//!
//! Why the split is exact: every piece of state is per (rule, key), and a
//! key's copies reach one worker in input order, each with a watermark that
//! is at most the single engine's at that point. A key therefore sees its
//! events in the same order, with its timers due before its next event fired
//! before it, as in one engine; the alerts are the same, ids included.
//!
//! The order of alerts: engines emit as they go, and workers go at their own
//! pace, so alerts come out in one defined order instead: by `at`, then rule
//! name, key and id. After a run every alert with `at` below the watermark is
//! final (a later event or timer can only produce an alert at or after it), so
//! those are handed out and the rest held until the next run or
//! [`Parallel::finish`]. The order does not depend on the number of workers.
//!
//! Differences from one engine, both outside the defaults' reach: the cap on
//! partial matches in the whole engine (`max_runs_total`) is split evenly over
//! the workers, and `idle_ms` is not used (one input, no wall clock).

use crate::alert::Alert;
use crate::engine::{Engine, EngineConfig, Metrics, Program, Route};
use crate::eval::Lists;
use crate::shard::{Routes, SHARDS};
use crate::value::Event;
use std::sync::Arc;

/// A routed copy and the watermark it was routed with.
struct Copy {
    ev: Event,
    route: Route,
    watermark: i64,
}

/// Several engines over one stream, split by key shard (see the module docs).
pub struct Parallel {
    program: Arc<Program>,
    routes: Routes,
    engines: Vec<Engine>,
    /// Per worker, the copies queued since the last run.
    queues: Vec<Vec<Copy>>,
    lateness_ms: i64,
    max_ts: Option<i64>,
    watermark: i64,
    /// Alerts at or after the watermark of the last run: not final yet.
    held: Vec<Alert>,
    /// What the dispatcher counts (arrivals, late, unused); the workers count
    /// the rest.
    events_in: u64,
    late: u64,
    unused: u64,
}

impl Parallel {
    /// `workers` engines (at least one) running `program`.
    pub fn new(program: Arc<Program>, config: EngineConfig, workers: usize) -> Parallel {
        let n = workers.max(1);
        let per_worker = EngineConfig {
            max_runs_total: config.max_runs_total.div_ceil(n),
            idle_ms: 0,
            ..config
        };
        let deployments = vec![crate::Deployment::default(); program.rules().rules.len()];
        Parallel {
            routes: Routes::new(program.rules()),
            engines: (0..n)
                .map(|_| Engine::with_program(program.clone(), per_worker.clone(), &deployments))
                .collect(),
            queues: (0..n).map(|_| Vec::new()).collect(),
            lateness_ms: config.lateness_ms,
            program,
            max_ts: None,
            watermark: i64::MIN,
            held: vec![],
            events_in: 0,
            late: 0,
            unused: 0,
        }
    }

    pub fn workers(&self) -> usize {
        self.engines.len()
    }

    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }

    /// The reference lists every worker reads (one shared table).
    pub fn set_lists(&mut self, lists: Arc<Lists>) {
        for e in &mut self.engines {
            e.set_lists(lists.clone());
        }
    }

    /// Sets the wall clock used for `detected_at`.
    pub fn set_wall_clock(&mut self, ms: i64) {
        for e in &mut self.engines {
            e.set_wall_clock(ms);
        }
    }

    /// Copies queued for the next [`Parallel::run`].
    pub fn queued(&self) -> usize {
        self.queues.iter().map(Vec::len).sum()
    }

    /// Takes one event (input order): false if it is late (behind the
    /// watermark) and was dropped, as one engine would.
    pub fn push(&mut self, ev: Event) -> bool {
        self.events_in += 1;
        if ev.ts < self.watermark {
            self.late += 1;
            return false;
        }
        let max_ts = self.max_ts.map_or(ev.ts, |m| m.max(ev.ts));
        self.max_ts = Some(max_ts);
        self.watermark = self.watermark.max(max_ts.saturating_sub(self.lateness_ms));
        let n = self.engines.len();
        let worker = |shard: u16| usize::from(shard) * n / usize::from(SHARDS);
        let mut targets = self.routes.targets(&ev).peekable();
        if targets.peek().is_none() {
            self.unused += 1;
            return true;
        }
        let targets: smallvec::SmallVec<[(Route, u16); 2]> = targets.collect();
        let last = targets.len() - 1;
        let mut ev = Some(ev);
        for (i, (route, shard)) in targets.into_iter().enumerate() {
            let copy = if i == last { ev.take() } else { ev.clone() };
            if let Some(ev) = copy {
                self.queues[worker(shard)].push(Copy {
                    ev,
                    route,
                    watermark: self.watermark,
                });
            }
        }
        true
    }

    /// Works through every queued copy, one thread per worker, and returns
    /// the alerts that are final, in order (`at`, rule, key, id).
    pub fn run(&mut self) -> Vec<Alert> {
        let watermark = self.watermark;
        self.run_to(watermark);
        self.take_final(Some(watermark))
    }

    /// End of input: the watermark moves to the highest `ts` seen (or to
    /// infinity with `to_infinity`, firing every timer), and every alert left
    /// is returned, in order.
    pub fn finish(&mut self, to_infinity: bool) -> Vec<Alert> {
        let end = if to_infinity {
            i64::MAX
        } else {
            self.max_ts.unwrap_or(self.watermark).max(self.watermark)
        };
        self.watermark = end;
        self.run_to(end);
        self.take_final(None)
    }

    /// Every queued copy processed, then every worker advanced to `wm`.
    fn run_to(&mut self, wm: i64) {
        // The queues keep their capacity from round to round.
        let work = |engine: &mut Engine, queue: &mut Vec<Copy>| -> Vec<Alert> {
            for c in queue.drain(..) {
                engine.push_routed(c.ev, c.route, c.watermark);
            }
            engine.advance_to(wm);
            engine.drain_alerts()
        };
        let queues = &mut self.queues;
        let alerts: Vec<Vec<Alert>> = if self.engines.len() == 1 {
            self.engines
                .iter_mut()
                .zip(queues)
                .map(|(e, q)| work(e, q))
                .collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = self
                    .engines
                    .iter_mut()
                    .zip(queues.iter_mut())
                    .map(|(e, q)| s.spawn(move || work(e, q)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        };
        self.held.extend(alerts.into_iter().flatten());
    }

    /// The held alerts with `at` below `bound` (all without one), in
    /// order; the rest stay held.
    fn take_final(&mut self, bound: Option<i64>) -> Vec<Alert> {
        let (mut out, held): (Vec<Alert>, Vec<Alert>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|a| bound.is_none_or(|b| a.at < b));
        self.held = held;
        out.sort_by(|a, b| (a.at, &a.rule, &a.key, &a.id).cmp(&(b.at, &b.rule, &b.key, &b.id)));
        out
    }

    /// The counters of all workers together, as one engine would report
    /// them.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::default();
        for e in &self.engines {
            let w = e.metrics();
            m.runs_started += w.runs_started;
            m.runs_dropped_cap += w.runs_dropped_cap;
            m.runs_refused_cap += w.runs_refused_cap;
            m.window_dropped_cap += w.window_dropped_cap;
            m.runs_dropped_events_cap += w.runs_dropped_events_cap;
            for (mine, theirs) in [
                (&mut m.matches, &w.matches),
                (&mut m.alerts, &w.alerts),
                (&mut m.suppressed, &w.suppressed),
            ] {
                for (rule, n) in theirs {
                    *mine.entry(rule.clone()).or_default() += n;
                }
            }
        }
        m.events_in = self.events_in;
        m.late = self.late;
        m.unused = self.unused;
        // One engine counts an event once however many copies it sends.
        m.events_processed = self.events_in - self.late - self.queued_events();
        m
    }

    /// Events taken but not processed yet (queued, or in a worker's reorder
    /// buffer): counted as one engine counts its reorder buffer.
    fn queued_events(&self) -> u64 {
        // Copies of one event go to different workers only when its rules
        // key on different fields; the count is exact for one copy per event
        // and an upper bound otherwise.
        let buffered: usize = self.engines.iter().map(Engine::buffered).sum();
        (self.queued() + buffered).min(usize::try_from(self.events_in - self.late).unwrap_or(0))
            as u64
    }
}

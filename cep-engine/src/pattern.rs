//! Pattern runs: the per-(rule, key) partial matches of a compiled NFA and how
//! one event moves them (spec §3.1).
//!
//! A run sits at a point of the program with its quantifier counters and the
//! events it has bound. For the next relevant event, in this order:
//! 1. an exit edge whose counter checks pass and whose step accepts the event
//!    takes it (alternation forks the run, one copy per accepting branch);
//! 2. otherwise a negation in force on an open edge kills the run;
//! 3. otherwise a quantified step below its maximum adds the event;
//! 4. otherwise a strict (`->>`) open edge kills the run;
//! 5. otherwise the event is skipped.
//!
//! After a consumption, a reachable `Accept` completes the run at once.

use crate::eval::{Env, EvalCtx, Which, aggregate, eval_bool};
use crate::value::Event;
use rule_lang::ast::AfterMatch;
use rule_lang::program::{
    AggFunc, BindingId, Choice, CounterOp, Edge, FieldRef, Kind, Pattern, StepId, Target,
};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::sync::Arc;

/// Counters of a run (one per quantified step or group).
pub type Counters = SmallVec<[u32; 4]>;

/// The events a run has bound: two inline (most patterns have two or three
/// steps and a run is mostly short-lived), so starting and ending a run
/// costs no allocation. Serialized as a plain sequence, like a `Vec`.
pub type Bound = SmallVec<[(StepId, Arc<Event>); 2]>;

/// The partial matches of one key: one inline (most keys hold one).
pub type Runs = SmallVec<[Run; 1]>;

/// A partial match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// `seq` of the event that started the run.
    pub start_seq: u64,
    pub start_ts: i64,
    /// Current point (0 = start, s + 1 = after step s).
    pub point: u16,
    pub counters: Counters,
    /// Bound events with the step that took them, in match order.
    pub events: Bound,
}

/// The partial matches of one (rule, key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PatternState {
    pub runs: Runs,
    /// `at` of the last alert actually emitted (for `suppress`).
    pub last_alert_at: Option<i64>,
}

/// A completed match that passed `where`.
#[derive(Debug, Clone)]
pub struct Match {
    pub run: Run,
    pub at: i64,
    /// For absence matches.
    pub absence: bool,
}

/// Evaluation context over a run's bound events.
pub struct RunCtx<'a> {
    pub pattern: &'a Pattern,
    pub events: &'a [(StepId, Arc<Event>)],
    pub current: Option<&'a Event>,
}

impl RunCtx<'_> {
    fn of_binding(&self, b: BindingId) -> impl Iterator<Item = &Event> + '_ {
        let step = self.pattern.bindings.get(b as usize).map(|b| b.step);
        self.events
            .iter()
            .filter(move |(s, _)| Some(*s) == step)
            .map(|(_, e)| &**e)
    }
}

impl EvalCtx for RunCtx<'_> {
    fn current(&self) -> Option<&Event> {
        self.current
    }

    fn binding(&self, b: BindingId, which: Which) -> Option<&Event> {
        match which {
            Which::First => self.of_binding(b).next(),
            Which::Last => self.of_binding(b).last(),
        }
    }

    fn agg(
        &self,
        func: AggFunc,
        b: BindingId,
        field: Option<FieldRef>,
        kind: Kind,
        env: &Env,
    ) -> crate::value::Value {
        aggregate(func, field, kind, self.of_binding(b), env)
    }
}

/// What happened to one run.
enum Outcome {
    Skip,
    Kill,
    /// New versions of the run (several when alternation forks); `true` = complete.
    Moved(SmallVec<[(Run, bool); 1]>),
}

/// Per-call limits and counters.
pub struct Limits {
    pub max_runs_per_key: usize,
    /// Events one run may hold: a run that reaches it without completing is
    /// dropped (counted in `event_capped`).
    pub max_run_events: usize,
    /// Whether a new run may start (global cap not reached).
    pub may_start: bool,
    pub dropped: u64,
    pub refused: u64,
    pub started: u64,
    /// Runs dropped at `max_run_events`.
    pub event_capped: u64,
}

/// Runs a compiled pattern.
pub struct Matcher<'a> {
    pub pattern: &'a Pattern,
    pub env: &'a Env<'a>,
}

fn apply_ops(ops: &[CounterOp], c: &mut Counters) -> bool {
    for op in ops {
        match *op {
            CounterOp::Inc(i) => c[i as usize] = c[i as usize].saturating_add(1),
            CounterOp::Reset(i) => c[i as usize] = 0,
            CounterOp::AtLeast(i, n) => {
                if c[i as usize] < n {
                    return false;
                }
            }
            CounterOp::Below(i, n) => {
                if c[i as usize] >= n {
                    return false;
                }
            }
        }
    }
    true
}

impl Matcher<'_> {
    fn step_accepts(&self, s: StepId, run_events: &[(StepId, Arc<Event>)], e: &Event) -> bool {
        let step = &self.pattern.steps[s as usize];
        if step.ty != e.ty {
            return false;
        }
        match &step.pred {
            None => true,
            Some(p) => eval_bool(
                p,
                &RunCtx {
                    pattern: self.pattern,
                    events: run_events,
                    current: Some(e),
                },
                self.env,
            ),
        }
    }

    /// Edges of `c` that accept `e`, with the counters after their operations.
    fn accepting(
        &self,
        c: &Choice,
        counters: &Counters,
        run_events: &[(StepId, Arc<Event>)],
        e: &Event,
        out: &mut SmallVec<[(StepId, Counters); 1]>,
    ) -> bool {
        match c {
            Choice::Edge(edge) => {
                let Target::Step(s) = edge.target else {
                    return false;
                };
                let mut cs = counters.clone();
                if !apply_ops(&edge.ops, &mut cs) || !self.step_accepts(s, run_events, e) {
                    return false;
                }
                out.push((s, cs));
                true
            }
            Choice::First(kids) => kids
                .iter()
                .any(|k| self.accepting(k, counters, run_events, e, out)),
            Choice::Fork(kids) => {
                let mut any = false;
                for k in kids {
                    any |= self.accepting(k, counters, run_events, e, out);
                }
                any
            }
        }
    }

    /// Calls `f` for every edge whose counter checks pass.
    fn open_edges(c: &Choice, counters: &Counters, f: &mut dyn FnMut(&Edge)) {
        match c {
            Choice::Edge(edge) => {
                let mut cs = counters.clone();
                if apply_ops(&edge.ops, &mut cs) {
                    f(edge);
                }
            }
            Choice::First(kids) | Choice::Fork(kids) => {
                kids.iter().for_each(|k| Self::open_edges(k, counters, f))
            }
        }
    }

    /// (accept reachable, absence reachable) at a point.
    pub fn epsilon(&self, point: u16, counters: &Counters) -> (bool, bool) {
        let (mut acc, mut abs) = (false, false);
        if let Some(p) = self.pattern.points.get(point as usize) {
            Self::open_edges(&p.exits, counters, &mut |e| match e.target {
                Target::Accept => acc = true,
                Target::Absence => abs = true,
                Target::Step(_) => {}
            });
        }
        (acc, abs)
    }

    fn negated(&self, n: u16, run_events: &[(StepId, Arc<Event>)], e: &Event) -> bool {
        let neg = &self.pattern.negations[n as usize];
        neg.ty == e.ty
            && neg.pred.as_ref().is_none_or(|p| {
                eval_bool(
                    p,
                    &RunCtx {
                        pattern: self.pattern,
                        events: run_events,
                        current: Some(e),
                    },
                    self.env,
                )
            })
    }

    /// Moves a run into step `s` with the event.
    fn take(&self, mut run: Run, s: StepId, mut counters: Counters, e: &Arc<Event>) -> (Run, bool) {
        let step = &self.pattern.steps[s as usize];
        counters[step.counter as usize] = 1;
        run.events.push((s, e.clone()));
        run.point = s + 1;
        run.counters = counters;
        let (acc, _) = self.epsilon(run.point, &run.counters);
        (run, acc)
    }

    /// Takes every accepted edge: the run moves into the last one, copies of it
    /// into the others (alternation forks).
    fn take_all(
        &self,
        run: Run,
        acc: SmallVec<[(StepId, Counters); 1]>,
        e: &Arc<Event>,
    ) -> SmallVec<[(Run, bool); 1]> {
        let n = acc.len();
        let mut out = SmallVec::new();
        let mut run = Some(run);
        for (i, (s, cs)) in acc.into_iter().enumerate() {
            let r = if i + 1 == n { run.take() } else { run.clone() };
            if let Some(r) = r {
                out.push(self.take(r, s, cs, e));
            }
        }
        out
    }

    fn advance(&self, run: &mut Run, e: &Arc<Event>) -> Outcome {
        if e.ts - run.start_ts > self.pattern.within_ms {
            return Outcome::Kill;
        }
        let point = &self.pattern.points[run.point as usize];
        let mut acc = SmallVec::new();
        if self.accepting(&point.exits, &run.counters, &run.events, e, &mut acc) {
            return Outcome::Moved(self.take_all(std::mem::replace(run, empty_run()), acc, e));
        }
        let mut negs: SmallVec<[u16; 2]> = SmallVec::new();
        let mut strict = false;
        Self::open_edges(&point.exits, &run.counters, &mut |edge| {
            negs.extend(edge.negations.iter().copied());
            strict |= edge.strict && matches!(edge.target, Target::Step(_));
        });
        if negs.iter().any(|n| self.negated(*n, &run.events, e)) {
            return Outcome::Kill;
        }
        if let Some(s) = point.repeat {
            let step = &self.pattern.steps[s as usize];
            let c = run.counters[step.counter as usize];
            if c < step.max && self.step_accepts(s, &run.events, e) {
                run.counters[step.counter as usize] = c + 1;
                run.events.push((s, e.clone()));
                let (acc, _) = self.epsilon(run.point, &run.counters);
                let mut v = SmallVec::new();
                v.push((std::mem::replace(run, empty_run()), acc));
                return Outcome::Moved(v);
            }
        }
        if strict { Outcome::Kill } else { Outcome::Skip }
    }

    /// Feeds one event (of a type the rule uses, with this key) to the key's runs.
    /// Returns the matches that completed and passed `where`, in order.
    pub fn on_event(
        &self,
        st: &mut PatternState,
        e: &Arc<Event>,
        limits: &mut Limits,
    ) -> SmallVec<[Match; 1]> {
        // Runs are updated in place (no allocation per event). Forked copies, a
        // rare case, go right after the run they were copied from, so the copies
        // of one run stay in preference order: earlier choices first, and at
        // each alternation the branch written first before the others.
        let mut done: SmallVec<[Run; 1]> = SmallVec::new();
        // (runs kept before the fork's place, the fork)
        let mut forks: Vec<(usize, Run)> = Vec::new();
        let mut kept = 0usize;
        let cap = limits.max_run_events.max(1);
        let mut capped = 0u64;
        st.runs.retain_mut(|run| {
            let keep = match self.advance(run, e) {
                Outcome::Skip => true,
                Outcome::Kill => false,
                Outcome::Moved(vs) => {
                    let mut keep = false;
                    for (r, complete) in vs {
                        if complete {
                            done.push(r);
                        } else if r.events.len() >= cap {
                            // At the cap and not complete: dropped.
                            capped += 1;
                        } else if !keep {
                            *run = r;
                            keep = true;
                        } else {
                            forks.push((kept + 1, r));
                        }
                    }
                    keep
                }
            };
            kept += usize::from(keep);
            keep
        });
        if !forks.is_empty() {
            let old = std::mem::take(&mut st.runs);
            let mut merged = Runs::with_capacity(old.len() + forks.len());
            let mut forks = forks.into_iter().peekable();
            for (i, run) in std::iter::once(None)
                .chain(old.into_iter().map(Some))
                .enumerate()
            {
                merged.extend(run);
                while let Some((_, f)) = forks.next_if(|(at, _)| *at <= i) {
                    merged.push(f);
                }
            }
            merged.extend(forks.map(|(_, f)| f));
            st.runs = merged;
        }
        let mut alive = std::mem::take(&mut st.runs);
        // Every event that can begin a match starts a run.
        let start = &self.pattern.points[0];
        let mut acc = SmallVec::new();
        let fresh = Run {
            start_seq: e.seq,
            start_ts: e.ts,
            point: 0,
            counters: SmallVec::from_elem(0, self.pattern.counters as usize),
            events: Bound::new(),
        };
        if self.accepting(&start.exits, &fresh.counters, &[], e, &mut acc) {
            if limits.may_start {
                for (r, complete) in self.take_all(fresh, acc, e) {
                    limits.started += 1;
                    if complete {
                        done.push(r)
                    } else if r.events.len() >= cap {
                        capped += 1;
                    } else {
                        alive.push(r)
                    }
                }
            } else {
                limits.refused += 1;
            }
        }
        if alive.len() > limits.max_runs_per_key {
            let excess = alive.len() - limits.max_runs_per_key;
            alive.drain(..excess);
            limits.dropped += excess as u64;
        }
        limits.event_capped += capped;
        st.runs = alive;
        self.complete(st, done.into_iter().map(|r| (r, e.ts, false)).collect())
    }

    /// Fires the window deadlines before `now`: expired runs are dropped, armed
    /// absence runs complete at `first.ts + within`.
    pub fn expire(&self, st: &mut PatternState, now: i64) -> SmallVec<[Match; 1]> {
        let within = self.pattern.within_ms;
        let mut done: SmallVec<[(Run, i64, bool); 1]> = SmallVec::new();
        // In place (no new vector per timer): an armed absence run is copied
        // out to complete, every other expired run is just dropped.
        st.runs.retain(|run| {
            let deadline = run.start_ts.saturating_add(within);
            if deadline >= now {
                return true;
            }
            if self.pattern.absence && self.epsilon(run.point, &run.counters).1 {
                done.push((run.clone(), deadline, true));
            }
            false
        });
        self.complete(st, done)
    }

    /// Applies `where` and the after-match skip to completed runs, oldest first.
    fn complete(
        &self,
        st: &mut PatternState,
        done: SmallVec<[(Run, i64, bool); 1]>,
    ) -> SmallVec<[Match; 1]> {
        let mut out = SmallVec::new();
        if done.is_empty() {
            return out;
        }
        let mut discarded = vec![false; done.len()];
        for (i, (run, at, absence)) in done.iter().enumerate() {
            if discarded[i] {
                continue;
            }
            let ok = self.pattern.where_.as_ref().is_none_or(|w| {
                eval_bool(
                    w,
                    &RunCtx {
                        pattern: self.pattern,
                        events: &run.events,
                        current: None,
                    },
                    self.env,
                )
            });
            if !ok {
                continue;
            }
            match self.pattern.after_match {
                AfterMatch::SkipPastLast => {
                    let last = run.events.last().map_or(run.start_seq, |(_, e)| e.seq);
                    st.runs.retain(|r| r.start_seq > last);
                    for (j, (r, _, _)) in done.iter().enumerate().skip(i + 1) {
                        if r.start_seq <= last {
                            discarded[j] = true;
                        }
                    }
                }
                AfterMatch::SkipToNext => {
                    st.runs.retain(|r| r.start_seq != run.start_seq);
                    for (j, (r, _, _)) in done.iter().enumerate().skip(i + 1) {
                        if r.start_seq == run.start_seq {
                            discarded[j] = true;
                        }
                    }
                }
                AfterMatch::NoSkip => {}
            }
            out.push(Match {
                run: run.clone(),
                at: *at,
                absence: *absence,
            });
        }
        out
    }
}

fn empty_run() -> Run {
    Run {
        start_seq: 0,
        start_ts: 0,
        point: 0,
        counters: SmallVec::new(),
        events: Bound::new(),
    }
}

//! Sliding event-time windows for aggregate rules (spec §3.2).
//!
//! The window of an arriving event `e` is the key's qualifying events with `ts`
//! in `(e.ts - D, e.ts]`. Count is the deque length; sums are compensated running
//! sums; min and max are monotonic deques; distinct counts are multiset maps —
//! all amortised O(1) per event.

use crate::eval::{Env, EvalCtx, Which};
use crate::value::{Event, Value};
use rule_lang::program::{AggFunc, Aggregate, BindingId, FieldRef, Kind};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Most event ids an aggregate alert lists in `matched`.
pub const MATCHED_LIMIT: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    ev: Arc<Event>,
    vals: SmallVec<[Value; 2]>,
}

/// Hashable form of a value for distinct counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum DKey {
    Str(Arc<str>),
    Int(i64),
    Float(u64),
    Bool(bool),
}

fn dkey(v: &Value) -> Option<DKey> {
    Some(match v {
        Value::Str(s) => DKey::Str(s.clone()),
        Value::Int(i) | Value::Time(i) => DKey::Int(*i),
        Value::Float(f) => DKey::Float(if *f == 0.0 { 0 } else { f.to_bits() }),
        Value::Bool(b) => DKey::Bool(*b),
        Value::Missing => return None,
    })
}

/// Per tracked field: running aggregates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FieldAgg {
    present: u64,
    sum_i: i64,
    /// Neumaier compensated sum.
    sum_f: f64,
    comp: f64,
    mins: VecDeque<(u64, Value)>,
    maxs: VecDeque<(u64, Value)>,
    #[serde(with = "crate::value::map_as_pairs")]
    distinct: HashMap<DKey, u32>,
}

impl FieldAgg {
    fn add_f(&mut self, x: f64) {
        let t = self.sum_f + x;
        if self.sum_f.abs() >= x.abs() {
            self.comp += (self.sum_f - t) + x;
        } else {
            self.comp += (x - t) + self.sum_f;
        }
        self.sum_f = t;
    }
}

/// The window of one (rule, key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    entries: VecDeque<Entry>,
    fields: Vec<FieldAgg>,
    pub last_alert_at: Option<i64>,
}

fn less(a: &Value, b: &Value) -> bool {
    crate::eval::order(a, b) == Some(std::cmp::Ordering::Less)
}

impl WindowState {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Newest event time in the window.
    pub fn newest_ts(&self) -> Option<i64> {
        self.entries.back().map(|e| e.ev.ts)
    }

    /// Adds a qualifying event and evicts what fell out of `(ts - D, ts]`.
    /// Returns how many entries were dropped by the size cap.
    pub fn push(&mut self, agg: &Aggregate, e: &Arc<Event>, env: &Env, cap: usize) -> u64 {
        if self.fields.len() != agg.tracked.len() {
            self.fields = vec![FieldAgg::default(); agg.tracked.len()];
        }
        let vals: SmallVec<[Value; 2]> = agg.tracked.iter().map(|t| env.read(e, t.field)).collect();
        for ((t, f), v) in agg
            .tracked
            .iter()
            .zip(self.fields.iter_mut())
            .zip(vals.iter())
        {
            if v.is_missing() {
                continue;
            }
            f.present += 1;
            if t.sum {
                match *v {
                    Value::Int(i) | Value::Time(i) => {
                        f.sum_i = f.sum_i.wrapping_add(i);
                        f.add_f(i as f64);
                    }
                    Value::Float(x) => f.add_f(x),
                    _ => {}
                }
            }
            if t.min {
                while f.mins.back().is_some_and(|(_, b)| !less(b, v)) {
                    f.mins.pop_back();
                }
                f.mins.push_back((e.seq, v.clone()));
            }
            if t.max {
                while f.maxs.back().is_some_and(|(_, b)| !less(v, b)) {
                    f.maxs.pop_back();
                }
                f.maxs.push_back((e.seq, v.clone()));
            }
            if t.distinct
                && let Some(k) = dkey(v)
            {
                *f.distinct.entry(k).or_insert(0) += 1;
            }
        }
        self.entries.push_back(Entry {
            ev: e.clone(),
            vals,
        });
        let lower = e.ts.saturating_sub(agg.over_ms);
        let mut dropped = 0;
        while let Some(front) = self.entries.front() {
            let too_old = front.ev.ts <= lower;
            let too_many = self.entries.len() > cap;
            if !too_old && !too_many {
                break;
            }
            if too_many && !too_old {
                dropped += 1;
            }
            self.pop_front(agg);
        }
        dropped
    }

    fn pop_front(&mut self, agg: &Aggregate) {
        let Some(old) = self.entries.pop_front() else {
            return;
        };
        for ((t, f), v) in agg
            .tracked
            .iter()
            .zip(self.fields.iter_mut())
            .zip(old.vals.iter())
        {
            if v.is_missing() {
                continue;
            }
            f.present -= 1;
            if t.sum {
                match *v {
                    Value::Int(i) | Value::Time(i) => {
                        f.sum_i = f.sum_i.wrapping_sub(i);
                        f.add_f(-(i as f64));
                    }
                    Value::Float(x) => f.add_f(-x),
                    _ => {}
                }
                if f.present == 0 {
                    f.sum_f = 0.0;
                    f.comp = 0.0;
                    f.sum_i = 0;
                }
            }
            if f.mins.front().is_some_and(|(s, _)| *s == old.ev.seq) {
                f.mins.pop_front();
            }
            if f.maxs.front().is_some_and(|(s, _)| *s == old.ev.seq) {
                f.maxs.pop_front();
            }
            if t.distinct
                && let Some(k) = dkey(v)
                && let Some(c) = f.distinct.get_mut(&k)
            {
                *c -= 1;
                if *c == 0 {
                    f.distinct.remove(&k);
                }
            }
        }
    }

    /// The ids for `matched`: the newest [`MATCHED_LIMIT`], oldest first.
    /// The events behind [`WindowState::matched_ids`] (the alert's evidence).
    pub fn matched_events(&self) -> Vec<Arc<crate::value::Event>> {
        let skip = self.entries.len().saturating_sub(MATCHED_LIMIT);
        self.entries
            .iter()
            .skip(skip)
            .map(|e| e.ev.clone())
            .collect()
    }

    pub fn matched_ids(&self) -> Vec<Arc<str>> {
        let skip = self.entries.len().saturating_sub(MATCHED_LIMIT);
        self.entries
            .iter()
            .skip(skip)
            .map(|e| e.ev.id.clone())
            .collect()
    }
}

/// Evaluation context: the window plus the triggering event.
pub struct WindowCtx<'a> {
    pub agg: &'a Aggregate,
    pub window: &'a WindowState,
    pub trigger: &'a Event,
}

impl EvalCtx for WindowCtx<'_> {
    fn current(&self) -> Option<&Event> {
        Some(self.trigger)
    }

    /// `first(t)` / `last(t)`: the oldest / newest event in the window.
    fn binding(&self, _b: BindingId, which: Which) -> Option<&Event> {
        match which {
            Which::First => self.window.entries.front().map(|e| &*e.ev),
            Which::Last => self.window.entries.back().map(|e| &*e.ev),
        }
    }

    fn agg(
        &self,
        func: AggFunc,
        _b: BindingId,
        field: Option<FieldRef>,
        kind: Kind,
        _env: &Env,
    ) -> Value {
        let w = self.window;
        if func == AggFunc::Count {
            return Value::Int(w.entries.len() as i64);
        }
        let Some(field) = field else {
            return Value::Missing;
        };
        let Some(j) = self.agg.tracked.iter().position(|t| t.field == field) else {
            return Value::Missing;
        };
        let Some(f) = w.fields.get(j) else {
            return Value::Missing;
        };
        match func {
            AggFunc::Sum if kind == Kind::Int => Value::Int(f.sum_i),
            AggFunc::Sum => Value::Float(f.sum_f + f.comp),
            AggFunc::Avg if f.present == 0 => Value::Missing,
            AggFunc::Avg => Value::Float((f.sum_f + f.comp) / f.present as f64),
            AggFunc::Min => f.mins.front().map_or(Value::Missing, |(_, v)| v.clone()),
            AggFunc::Max => f.maxs.front().map_or(Value::Missing, |(_, v)| v.clone()),
            AggFunc::DistinctCount => Value::Int(f.distinct.len() as i64),
            AggFunc::Count => Value::Int(w.entries.len() as i64),
        }
    }
}

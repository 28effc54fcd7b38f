//! The recent-events sample: the newest accepted events, raw, kept for rule
//! diffs (`GET /v1/rules/{name}/diff`) and tests.
//!
//! Bounded by count *and* bytes: a burst of large events cannot pin more
//! than `max_bytes` (oldest out first), and an event larger than the whole
//! budget is not kept at all. Events are shared (`Arc<[u8]>`): a reader gets
//! the current sample by cloning pointers, never the bytes, so the router
//! thread answers a diff request in time proportional to the count.

use std::collections::VecDeque;
use std::sync::Arc;

/// Bytes an event costs in the sample besides its text (the pointer and the
/// queue slot), so that many empty events are bounded too.
const ENTRY_OVERHEAD: usize = 32;

#[derive(Debug)]
pub struct Sample {
    events: VecDeque<Arc<[u8]>>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

impl Sample {
    pub fn new(max_events: usize, max_bytes: usize) -> Sample {
        Sample {
            events: VecDeque::new(),
            bytes: 0,
            max_events,
            max_bytes,
        }
    }

    fn cost(event: &[u8]) -> usize {
        event.len() + ENTRY_OVERHEAD
    }

    /// Keeps `event` as the newest, dropping the oldest until both bounds
    /// hold. An event that alone exceeds the byte budget is not kept (the
    /// older ones stay).
    pub fn push(&mut self, event: &[u8]) {
        let cost = Sample::cost(event);
        if self.max_events == 0 || cost > self.max_bytes {
            return;
        }
        while self.events.len() >= self.max_events || self.bytes + cost > self.max_bytes {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.bytes -= Sample::cost(&old);
        }
        self.bytes += cost;
        self.events.push_back(event.into());
    }

    /// The events, oldest first (shared, not copied).
    pub fn snapshot(&self) -> Vec<Arc<[u8]>> {
        self.events.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Bytes held, as counted against the budget (text plus a fixed
    /// per-event overhead).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &Sample) -> Vec<String> {
        s.snapshot()
            .iter()
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect()
    }

    #[test]
    fn keeps_the_newest_events_by_count() {
        let mut s = Sample::new(3, 1 << 20);
        for i in 0..5 {
            s.push(format!("e{i}").as_bytes());
        }
        assert_eq!(texts(&s), ["e2", "e3", "e4"]);
        assert_eq!(s.bytes(), 3 * (2 + ENTRY_OVERHEAD));
    }

    #[test]
    fn large_events_are_bounded_by_bytes() {
        // 600 events of 1 MiB used to be held whole (10,000 slots).
        let budget = 4 << 20;
        let mut s = Sample::new(10_000, budget);
        let big = vec![b'x'; 1 << 20];
        for _ in 0..600 {
            s.push(&big);
            assert!(s.bytes() <= budget, "{} > {budget}", s.bytes());
        }
        assert_eq!(s.len(), 3, "three 1 MiB events fit in 4 MiB");
        // Small events fit beside them; another big one pushes the oldest
        // big one out.
        for i in 0..10 {
            s.push(format!("small{i}").as_bytes());
        }
        assert_eq!(s.len(), 13);
        s.push(&big);
        assert_eq!(s.len(), 13);
        assert_eq!(texts(&s)[2], "small0");
        let small: usize = (0..10)
            .map(|i| format!("small{i}").len() + ENTRY_OVERHEAD)
            .sum();
        assert_eq!(s.bytes(), 3 * ((1 << 20) + ENTRY_OVERHEAD) + small);
    }

    #[test]
    fn an_event_over_the_whole_budget_is_not_kept_and_evicts_nothing() {
        let mut s = Sample::new(10, 100);
        s.push(b"a");
        s.push(&[b'x'; 200]);
        assert_eq!(texts(&s), ["a"]);
        let mut off = Sample::new(0, 100);
        off.push(b"a");
        assert!(off.is_empty());
    }

    #[test]
    fn snapshots_share_the_events() {
        let mut s = Sample::new(10, 1 << 20);
        s.push(b"{}");
        let a = s.snapshot();
        let b = s.snapshot();
        assert!(Arc::ptr_eq(&a[0], &b[0]));
    }
}

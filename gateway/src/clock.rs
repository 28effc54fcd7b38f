//! The gateway's wall clock, read through a handle so tests can set it
//! instead of sleeping (the router never calls the system clock directly).
//!
//! It serves two rules: an event more than `--max-future` ahead of it is
//! refused (`ts_in_future`), and the event-time clock of an idle gateway
//! follows it across restarts (see `docs/operations.md`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Epoch milliseconds, from the system or from a test.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl WallClock {
    /// The system's UTC clock.
    pub fn system() -> WallClock {
        WallClock(Arc::new(|| chrono::Utc::now().timestamp_millis()))
    }

    /// A clock a test moves by hand: reads `ms` as it is at each call.
    pub fn manual(ms: Arc<AtomicI64>) -> WallClock {
        WallClock(Arc::new(move || ms.load(Ordering::Relaxed)))
    }

    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::system()
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WallClock({})", self.now_ms())
    }
}

//! Logging a burst of handshake failures once.
//!
//! A scanner, a misconfigured client fleet or an expired certificate makes every connection fail
//! the same way, thousands a second; one `warn!` line per connection would flood the log and cost
//! more than the handshakes. So the first failure of a burst is logged at `warn`, the others of the
//! next [`WINDOW`] only at `debug` (the metrics count every one), and the first line after that
//! says how many were not logged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one logged line stands for the failures after it.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The state of one burst log (one per listener side, one per backend server).
#[derive(Debug, Default)]
pub struct BurstLog {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last `warn` line was written.
    logged_at: Option<Instant>,
    /// Failures since then that were not logged at `warn`.
    quiet: u64,
}

impl BurstLog {
    /// A log with no burst yet.
    pub fn new() -> BurstLog {
        BurstLog::default()
    }

    /// Records one failure at `now`; `Some(n)` when this one is to be logged at `warn`, `n` being
    /// the failures not logged since the previous line.
    pub fn record(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.logged_at {
            Some(at) if now.saturating_duration_since(at) < WINDOW => {
                s.quiet += 1;
                None
            }
            _ => {
                s.logged_at = Some(now);
                Some(std::mem::take(&mut s.quiet))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_then_the_count_of_the_quiet_ones() {
        let log = BurstLog::new();
        let t0 = Instant::now();
        assert_eq!(log.record(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(log.record(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(log.record(t0 + WINDOW), Some(500));
        assert_eq!(log.record(t0 + WINDOW + Duration::from_secs(1)), None);
        assert_eq!(log.record(t0 + WINDOW * 3), Some(1));
    }
}

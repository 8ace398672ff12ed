//! Server health: `failure_limit` consecutive failures (connect errors, timeouts, lost
//! connections) mark a server down for `retry_timeout`; after that, requests probe it again and
//! one success marks it up. Failures are not reset by the retry, so a failed probe marks it down
//! again at once (twemproxy behaves the same way).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::ServerMetrics;

/// Bumped whenever any server goes down or up, so ejecting pools know to rebuild their ring.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The current health generation.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Milliseconds on a monotonic clock (never 0, so 0 can mean "not down").
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Health of one server.
#[derive(Debug)]
pub struct Health {
    address: String,
    failures: AtomicU32,
    /// Monotonic ms until which the server is down; 0 = up.
    down_until: AtomicU64,
    failure_limit: u32,
    retry_timeout: Duration,
}

impl Health {
    /// A healthy server.
    pub fn new(address: &str, failure_limit: u32, retry_timeout: Duration) -> Health {
        Health {
            address: address.to_string(),
            failures: AtomicU32::new(0),
            down_until: AtomicU64::new(0),
            failure_limit: failure_limit.max(1),
            retry_timeout,
        }
    }

    /// True while marked down and the retry time has not come.
    pub fn is_down(&self) -> bool {
        let until = self.down_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Monotonic ms at which a down server is tried again (`None` when up).
    pub fn retry_at(&self) -> Option<u64> {
        match self.down_until.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Records a failure; marks the server down at the limit.
    pub fn record_failure(&self, metrics: &ServerMetrics) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures < self.failure_limit {
            return;
        }
        let now = now_ms();
        let until = now + self.retry_timeout.as_millis() as u64;
        let previous = self.down_until.swap(until, Ordering::AcqRel);
        if previous == 0 || previous <= now {
            metrics.up.set(0);
            if previous == 0 {
                metrics.marked_down.inc();
                tracing::warn!(server = %self.address, failures, retry_in = ?self.retry_timeout, "server marked down");
            }
            GENERATION.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Records a good answer; marks the server up if it was down.
    pub fn record_success(&self, metrics: &ServerMetrics) {
        if self.failures.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.failures.store(0, Ordering::Relaxed);
        if self.down_until.swap(0, Ordering::AcqRel) != 0 {
            metrics.up.set(1);
            tracing::info!(server = %self.address, "server up");
            GENERATION.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn marked_down_at_the_limit_and_up_after_success() {
        let metrics = Metrics::new().server("s");
        let h = Health::new("s", 3, Duration::from_secs(60));
        h.record_failure(&metrics);
        h.record_failure(&metrics);
        assert!(!h.is_down());
        h.record_failure(&metrics);
        assert!(h.is_down());
        assert_eq!(metrics.up.get(), 0);
        assert_eq!(metrics.marked_down.get(), 1);
        h.record_success(&metrics);
        assert!(!h.is_down());
        assert_eq!(metrics.up.get(), 1);
    }

    #[test]
    fn a_failed_probe_marks_down_again_at_once() {
        let metrics = Metrics::new().server("s");
        let h = Health::new("s", 2, Duration::from_millis(0));
        h.record_failure(&metrics);
        h.record_failure(&metrics);
        // retry_timeout 0: the retry time has come, the server is probed
        assert!(!h.is_down());
        let h = Health::new("s", 2, Duration::from_secs(60));
        h.failures.store(5, Ordering::Relaxed);
        h.record_failure(&metrics);
        assert!(h.is_down());
    }
}

//! Server health, a small state machine (documented for operators in deploy/README.md):
//!
//! - **up**: requests are sent. `failure_limit` consecutive failures — a connect error, a
//!   request timing out (each fails at its own deadline, so each failure takes at most
//!   `timeout`), a connection lost with requests in flight, a protocol error — mark it down.
//!   An answer a client was waiting for resets the count; a late answer to a timed-out request
//!   does not (the client saw an error).
//! - **down** for `retry_timeout`: its keys fail fast with `SERVER_ERROR backend marked down`
//!   (or, with `eject = true`, leave the ring). A failure meanwhile (a reconnect refused, an
//!   old request timing out) starts the wait again.
//! - **probing**: the retry time has come and the server's prober ([`super::server`]) sends one
//!   request of its own. Client keys keep failing fast: a probe is one request, not all of them.
//!   The probe's answer marks the server up; its failure marks it down for another
//!   `retry_timeout`.
//!
//! The probe does not depend on client traffic, so a replica that `/readyz` took out of a load
//! balancer still finds out that its servers came back.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::Notify;

use super::settings::ServerSettings;
use crate::metrics::ServerMetrics;

/// Bumped whenever any server goes down or up, so ejecting pools know to rebuild their ring.
static HEALTH_CHANGES: AtomicU64 = AtomicU64::new(0);

/// How many times any server has gone down or up (not a snapshot generation: those count
/// config reloads).
pub fn health_changes() -> u64 {
    HEALTH_CHANGES.load(Ordering::Acquire)
}

/// Milliseconds on a monotonic clock (never 0, so 0 can mean "not down").
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Where a server stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests are sent.
    Up,
    /// Marked down; its retry time has not come.
    Down,
    /// Marked down and due a probe (or being probed); still refusing client requests.
    Probing,
}

/// Health of one server.
#[derive(Debug)]
pub struct Health {
    settings: Arc<ServerSettings>,
    failures: AtomicU32,
    /// Monotonic ms at which a down server is due a probe; 0 = up.
    down_until: AtomicU64,
    /// Woken when the server is marked down (the prober waits on it).
    marked_down: Notify,
}

impl Health {
    /// A healthy server.
    pub fn new(settings: Arc<ServerSettings>) -> Health {
        Health {
            settings,
            failures: AtomicU32::new(0),
            down_until: AtomicU64::new(0),
            marked_down: Notify::new(),
        }
    }

    /// Where the server stands now.
    pub fn state(&self) -> State {
        match self.down_until.load(Ordering::Acquire) {
            0 => State::Up,
            until if now_ms() < until => State::Down,
            _ => State::Probing,
        }
    }

    /// True while down or being probed: client requests are refused.
    pub fn is_down(&self) -> bool {
        self.down_until.load(Ordering::Acquire) != 0
    }

    /// Monotonic ms at which a down server is probed (`None` when up).
    pub fn retry_at(&self) -> Option<u64> {
        match self.down_until.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// Records a failure; marks the server down at the limit, or keeps a down server down for
    /// another `retry_timeout`.
    pub fn record_failure(&self, metrics: &ServerMetrics) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures < self.settings.failure_limit.max(1) {
            return;
        }
        let retry_timeout = self.settings.retry_timeout;
        let until = now_ms() + retry_timeout.as_millis() as u64;
        if self.down_until.swap(until, Ordering::AcqRel) == 0 {
            metrics.up.set(0);
            metrics.marked_down.inc();
            tracing::warn!(server = %self.settings.address, failures, retry_in = ?retry_timeout, "server marked down");
            HEALTH_CHANGES.fetch_add(1, Ordering::AcqRel);
            self.marked_down.notify_waiters();
        }
    }

    /// Records an answer a client (or the prober) waited for; marks the server up if it was down.
    pub fn record_success(&self, metrics: &ServerMetrics) {
        if self.failures.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.failures.store(0, Ordering::Release);
        if self.down_until.swap(0, Ordering::AcqRel) != 0 {
            metrics.up.set(1);
            tracing::info!(server = %self.settings.address, "server up");
            HEALTH_CHANGES.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Waits until the server is marked down.
    pub async fn wait_down(&self) {
        loop {
            let notified = self.marked_down.notified();
            if self.is_down() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::time::Duration;

    fn health(failure_limit: u32, retry_timeout: Duration) -> Health {
        Health::new(Arc::new(ServerSettings {
            failure_limit,
            retry_timeout,
            ..ServerSettings::test("s")
        }))
    }

    /// A server's health after `failures` failed requests in a row, and the metrics that
    /// counted them.
    fn after_failures(
        failure_limit: u32,
        retry_timeout: Duration,
        failures: u32,
    ) -> (Health, ServerMetrics) {
        let metrics = Metrics::new().backend.server("s");
        let h = health(failure_limit, retry_timeout);
        for _ in 0..failures {
            h.record_failure(&metrics);
        }
        (h, metrics)
    }

    #[test]
    fn marked_down_at_the_limit_and_up_after_success() {
        let (h, metrics) = after_failures(3, Duration::from_secs(60), 2);
        assert_eq!(h.state(), State::Up);
        h.record_failure(&metrics);
        assert_eq!(h.state(), State::Down);
        assert!(h.is_down());
        assert_eq!(metrics.up.get(), 0);
        assert_eq!(metrics.marked_down.get(), 1);
        h.record_success(&metrics);
        assert_eq!(h.state(), State::Up);
        assert_eq!(metrics.up.get(), 1);
    }

    #[test]
    fn a_due_server_is_probing_and_still_refuses_requests() {
        let (h, metrics) = after_failures(2, Duration::from_millis(0), 2);
        // retry_timeout 0: the retry time has come; the server is probed, clients still refused.
        assert_eq!(h.state(), State::Probing);
        assert!(h.is_down());
        assert_eq!(metrics.up.get(), 0);
        // A failed probe: down again, counted once as marked down.
        let h = health(2, Duration::from_secs(60));
        h.failures.store(5, Ordering::Relaxed);
        h.down_until.store(1, Ordering::Relaxed);
        h.record_failure(&metrics);
        assert_eq!(h.state(), State::Down);
        assert_eq!(metrics.marked_down.get(), 1);
    }
}

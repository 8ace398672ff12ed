//! Fair shares of the backends between client sessions.
//!
//! Every session's requests go through the same few shared backend connections, and memcached
//! answers each connection in order. A session that pipelines a thousand gets puts a thousand
//! requests in front of every other client's next one, so a few hundred greedy clients (say,
//! ones that pipeline megabytes of gets and never read) made every other client wait seconds.
//! memcached itself serves each connection at most a few requests per turn; memroute does the
//! same in its own terms: while the requests in flight from all sessions stay under
//! [`THRESHOLD`], each session may have up to `max_inflight`; above it, each session active
//! (with requests in flight) gets an equal share of [`THRESHOLD`], at least [`MIN_SHARE`]. A
//! client with one request at a time always gets its one, and waits behind at most about
//! [`THRESHOLD`] requests of the others, instead of behind all of theirs.
//!
//! The counts are process-wide and updated once per batch of requests a session sends or gets
//! answered (two atomic additions per wake-up, not per request). A session publishes its count
//! through a [`Share`], which takes it back when the session ends.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Requests in flight from all sessions above which each session gets an equal share. Above
/// the pipeline depth that keeps a backend busy (workload (b) of the benchmark: 50 clients x 16
/// pipelined = 800), so normal loads never feel it.
pub const THRESHOLD: usize = 1024;

/// The smallest share: a client always has at least this many requests in flight.
pub const MIN_SHARE: usize = 1;

/// Requests in flight from all sessions.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Sessions with at least one request in flight.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// One session's part of the counts.
#[derive(Debug, Default)]
pub struct Share {
    /// What this session has added to [`IN_FLIGHT`].
    published: usize,
}

impl Share {
    /// A session with nothing in flight.
    pub fn new() -> Share {
        Share::default()
    }

    /// How many requests this session may have in flight now (`max_inflight` when the
    /// backends are not contended).
    pub fn window(&self, max_inflight: usize) -> usize {
        let total = IN_FLIGHT.load(Ordering::Relaxed);
        if total <= THRESHOLD {
            return max_inflight;
        }
        let active = ACTIVE.load(Ordering::Relaxed).max(1);
        (THRESHOLD / active).clamp(MIN_SHARE.min(max_inflight), max_inflight)
    }

    /// The session has `now` requests in flight.
    pub fn publish(&mut self, now: usize) {
        if now == self.published {
            return;
        }
        if now > self.published {
            IN_FLIGHT.fetch_add(now - self.published, Ordering::Relaxed);
        } else {
            IN_FLIGHT.fetch_sub(self.published - now, Ordering::Relaxed);
        }
        match (self.published, now) {
            (0, _) => {
                ACTIVE.fetch_add(1, Ordering::Relaxed);
            }
            (_, 0) => {
                ACTIVE.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.published = now;
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.publish(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the counts are process-wide, and parallel tests would see each other's.
    #[test]
    fn shares_open_fully_below_the_threshold_and_split_it_above() {
        let mut light = Share::new();
        light.publish(1);
        assert_eq!(light.window(1024), 1024);
        let mut greedy: Vec<Share> = (0..200).map(|_| Share::new()).collect();
        for g in &mut greedy {
            g.publish(1000);
        }
        // 201 active sessions over the threshold share it equally, never below the minimum.
        let share = (THRESHOLD / 201).max(MIN_SHARE);
        assert_eq!(light.window(1024), share);
        assert_eq!(light.window(1), 1);
        for g in greedy.iter_mut().take(190) {
            g.publish(0);
        }
        // 11 active, still over the threshold (10 x 1000 in flight).
        assert_eq!(light.window(1024), (THRESHOLD / 11).max(MIN_SHARE));
        for g in greedy.iter_mut().skip(190) {
            g.publish(THRESHOLD / 20);
        }
        // Still 11 active, but the total is back under the threshold: wide open.
        const { assert!(10 * (THRESHOLD / 20) < THRESHOLD) };
        assert_eq!(light.window(1024), 1024);
        drop(greedy);
        assert_eq!(light.window(1024), 1024);
        drop(light);
        assert_eq!(IN_FLIGHT.load(Ordering::Relaxed), 0);
        assert_eq!(ACTIVE.load(Ordering::Relaxed), 0);
    }
}

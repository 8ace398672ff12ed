//! Fair shares of the proxy between client sessions.
//!
//! Every session's requests go through the same few shared backend connections, and memcached
//! answers each connection in order. A session that pipelines a thousand gets puts a thousand
//! requests in front of every other client's next one, and the CPU time memroute spends on
//! them comes before the other clients' turn. memcached itself serves each connection a few
//! requests per turn (`reqs_per_event`); memroute does the same in two ways:
//!
//! - **Pacing** ([`Pace`]): a session sends at most [`LIGHT_TURN`] requests per turn of the
//!   scheduler. One that has more ready after that is *heavy*, and sends only while it holds one
//!   of [`HEAVY_TURNS`] turns, [`HEAVY_TURN`] requests per turn, first come first served. It gives
//!   the turn back once those requests are answered, when its client stops taking replies, or
//!   after [`TURN_HOLD`]; then it queues again. Light sessions (a client with a request or a
//!   pipeline of up to [`LIGHT_TURN`] at a time) never wait for a turn, so a few hundred greedy
//!   clients cost them at most a few turns of [`HEAVY_TURN`] requests, in the scheduler's queue and
//!   on the backend connections. When nobody waits for a turn, a heavy session keeps its turn
//!   (a lone bulk loader pipelines as deep as `max_inflight`).
//! - **Shares** ([`Share`]): while the requests in flight from all sessions stay under
//!   [`THRESHOLD`], each session may have up to `max_inflight`; above it, each session active
//!   (with requests in flight) gets an equal share of [`THRESHOLD`], at least [`MIN_SHARE`]. That
//!   bounds the queues when thousands of light sessions each pipeline a little.
//!
//! The counts are process-wide and updated once per batch of requests a session sends or gets
//! answered (two atomic additions per wake-up, not per request). A session publishes its count
//! through a [`Share`], which takes it back when the session ends.

use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Semaphore, SemaphorePermit};

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

/// Heavy sessions that may send at once.
pub const HEAVY_TURNS: usize = 2;

/// Requests a session sends per turn of the scheduler before it lets the others run; one that
/// has more ready after that is heavy. Above the pipelines of ordinary clients (16 in the
/// benchmark's workload b, 11 in a batch of quiet meta gets).
pub const LIGHT_TURN: usize = 32;

/// Requests a heavy session sends per heavy turn.
pub const HEAVY_TURN: usize = 16;

/// The longest a heavy session holds a turn waiting for its answers: a server that stalls keeps
/// one heavy session's requests waiting, not everyone's turns.
pub const TURN_HOLD: Duration = Duration::from_millis(2);

/// The heavy turns; tokio's semaphore hands them out first come, first served.
static TURNS: Semaphore = Semaphore::const_new(HEAVY_TURNS);

/// One of the [`HEAVY_TURNS`], held by a heavy session while it sends.
#[derive(Debug)]
pub struct Turn(#[allow(dead_code)] SemaphorePermit<'static>);

/// Waits for a heavy turn.
pub async fn next_turn() -> Turn {
    // The semaphore is a static that nothing closes, so acquiring cannot fail.
    Turn(
        TURNS
            .acquire()
            .await
            .expect("the heavy turns are never closed"),
    )
}

/// Whether a heavy session waits for a turn now.
fn turns_contended() -> bool {
    TURNS.available_permits() == 0
}

/// How a session paces what it sends (see the module doc).
#[derive(Debug, Default)]
pub enum Pace {
    /// Sends up to [`LIGHT_TURN`] requests per turn of the scheduler.
    #[default]
    Light,
    /// Has more ready than a light turn sends: waits for a heavy turn.
    Heavy,
    /// Holds a heavy turn in which it has sent `sent` requests.
    Turn { _turn: Turn, sent: usize },
}

impl Pace {
    /// How many requests the session may send now.
    pub fn limit(&self) -> usize {
        match self {
            Pace::Light => LIGHT_TURN,
            Pace::Heavy => 0,
            Pace::Turn { sent, .. } => HEAVY_TURN.saturating_sub(*sent),
        }
    }

    /// The session sent `sent` requests; `drained`: it sent every complete request it had.
    /// Returns whether it should yield (let the others run before it sends more).
    pub fn sent(&mut self, sent: usize, drained: bool) -> bool {
        if drained {
            *self = Pace::Light;
            return false;
        }
        match self {
            Pace::Light if sent >= LIGHT_TURN => {
                *self = Pace::Heavy;
                true
            }
            Pace::Light | Pace::Heavy => false,
            Pace::Turn { sent: total, .. } => {
                *total += sent;
                if *total >= HEAVY_TURN && !turns_contended() {
                    // Nobody waits: this turn goes on after the other sessions ran.
                    *total = 0;
                    return true;
                }
                false
            }
        }
    }

    /// Whether the session reads more input: only when it is light (a heavy one has complete
    /// requests left).
    pub fn reads(&self) -> bool {
        matches!(self, Pace::Light)
    }

    /// Whether the session waits for a heavy turn.
    pub fn wants_turn(&self) -> bool {
        matches!(self, Pace::Heavy)
    }

    /// Whether the session holds a turn.
    pub fn holds_turn(&self) -> bool {
        matches!(self, Pace::Turn { .. })
    }

    /// The session got a turn.
    pub fn start(&mut self, turn: Turn) {
        *self = Pace::Turn {
            _turn: turn,
            sent: 0,
        };
    }

    /// The session took answers: a turn goes back once all its requests are answered
    /// (`answered`), or when the client does not take the replies (`client_behind`).
    pub fn answered(&mut self, answered: bool, client_behind: bool) {
        if self.holds_turn() && (answered || client_behind) {
            *self = Pace::Heavy;
        }
    }

    /// The session held its turn for [`TURN_HOLD`]: it goes back.
    pub fn expire(&mut self) {
        if self.holds_turn() {
            *self = Pace::Heavy;
        }
    }
}

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

    // One test takes the heavy turns: they are process-wide as well.
    #[tokio::test(flavor = "current_thread")]
    async fn heavy_sessions_take_turns_and_light_ones_never_wait() {
        use futures_util::FutureExt;

        let mut a = Pace::default();
        assert_eq!(a.limit(), LIGHT_TURN);
        // Fewer than a light turn, or everything it had: light, and it reads on.
        assert!(!a.sent(3, true) && a.reads());
        // A full light turn with more left: it yields and becomes heavy.
        assert!(a.sent(LIGHT_TURN, false));
        assert!(a.wants_turn() && !a.reads() && a.limit() == 0);
        a.start(next_turn().await);
        assert_eq!(a.limit(), HEAVY_TURN);
        // Nobody waits for a turn: a used-up one goes on after a yield.
        assert!(a.sent(HEAVY_TURN, false));
        assert!(a.holds_turn() && a.limit() == HEAVY_TURN);

        let mut b = Pace::Heavy;
        b.start(next_turn().await);
        let mut waiting = Box::pin(next_turn());
        assert!(waiting.as_mut().now_or_never().is_none(), "all turns taken");
        // Used up while another session waits: held until its requests are answered.
        assert!(!a.sent(HEAVY_TURN - 1, false));
        assert_eq!(a.limit(), 1);
        assert!(!a.sent(1, false));
        assert_eq!(a.limit(), 0);
        a.answered(false, false);
        assert!(a.holds_turn());
        a.answered(true, false);
        assert!(a.wants_turn());
        // a's turn went to the session that waited, first come first served.
        let turn = waiting.as_mut().now_or_never().expect("a's turn");
        // A client that stops taking replies gives its turn back at once.
        b.answered(false, true);
        assert!(b.wants_turn());
        let mut c = Pace::Heavy;
        c.start(turn);
        c.expire();
        assert!(c.wants_turn());
        // Everything sent: light again from any state, and no turn is held.
        b.start(next_turn().await);
        assert!(!b.sent(2, true) && b.reads());
        assert_eq!(TURNS.available_permits(), HEAVY_TURNS);
    }
}

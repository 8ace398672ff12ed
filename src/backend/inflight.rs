//! The in-flight queue of one backend connection: the FIFO of written requests, which of them
//! have timed out, and the timer for the next deadline.
//!
//! A connection answers in request order, so its requests are a queue. When a request's
//! deadline passes its client is answered `SERVER_ERROR timeout` at once (the entry's waiter is
//! taken), but the entry keeps its place so the late answer is read and thrown away and the
//! requests behind it still get their own answers (DESIGN §3; twemproxy closes the connection
//! instead). Timed-out entries always form a prefix of the queue, because deadlines never
//! decrease from front to back (see [`InFlightQueue::push`]). When the oldest answer is overdue
//! by the stuck limit the connection is given up ([`Expiry::Stuck`]).
//!
//! The queue owns its timer, and every push and pop re-arms it, so no request waits past its
//! own deadline whatever happened to the ones before it. Re-arming resets the timer only when
//! the next wake-up moved earlier; when it moved later the timer fires early once, finds nothing
//! due and is set again. That keeps the timer wheel off the per-answer path (one reset per
//! `timeout` under steady traffic instead of one per answer).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::batch::InFlight;
use super::error::{BackendError, ErrorKind, Origin};

/// What the timer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Entries whose deadline passed were failed with `timeout`: `commands` backend commands
    /// carrying `requests` client requests (a merged get carries several).
    TimedOut {
        /// Commands that timed out.
        commands: u64,
        /// Client requests answered `timeout`.
        requests: u64,
    },
    /// The oldest answer is overdue by the stuck limit: the connection should be reopened.
    Stuck,
}

/// The FIFO of one connection's written requests, with their deadlines.
pub struct InFlightQueue {
    entries: VecDeque<InFlight>,
    /// How many entries at the front have timed out (their answers are still owed).
    timed_out: usize,
    stuck_limit: Duration,
    /// Created at the first arming (an idle connection has none).
    timer: Option<Pin<Box<Sleep>>>,
    /// When the timer fires, if it is armed. Never later than [`Self::next_wake`].
    armed: Option<Instant>,
}

impl InFlightQueue {
    /// An empty queue; a connection whose oldest answer is `stuck_limit` past its deadline is
    /// stuck.
    pub fn new(stuck_limit: Duration) -> InFlightQueue {
        InFlightQueue {
            entries: VecDeque::new(),
            timed_out: 0,
            stuck_limit,
            timer: None,
            armed: None,
        }
    }

    /// Appends a written request. Its deadline is raised to the one before it if that is later,
    /// so deadlines never decrease along the queue: sessions on other threads take the clock
    /// and then queue, so two requests can arrive microseconds out of order.
    pub fn push(&mut self, mut entry: InFlight) {
        if let Some(back) = self.entries.back() {
            entry.deadline = entry.deadline.max(back.deadline);
        }
        self.entries.push_back(entry);
        self.rearm();
    }

    /// The oldest entry, whose answer comes next.
    pub fn front(&self) -> Option<&InFlight> {
        self.entries.front()
    }

    /// The newest entry (a retrieval being merged into is always the newest).
    pub fn back_mut(&mut self) -> Option<&mut InFlight> {
        self.entries.back_mut()
    }

    /// Takes the oldest entry off once its answer is in. Its waiter is [`Waiter::Gone`]
    /// (super::batch::Waiter::Gone) if it had timed out.
    pub fn pop(&mut self) -> Option<InFlight> {
        let entry = self.entries.pop_front()?;
        self.timed_out = self.timed_out.saturating_sub(1);
        self.rearm();
        Some(entry)
    }

    /// Entries still owed an answer.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no answer is owed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Fails every entry still waiting with `error` (the connection is gone); returns how many
    /// client requests there were. Entries that never reached the wire (at or past `written`
    /// bytes of the stream) say a retry is safe.
    pub fn fail_all(&mut self, error: &BackendError, written: u64) -> u64 {
        self.timed_out = 0;
        self.armed = None;
        self.entries
            .drain(..)
            .map(|f| {
                let e = error.clone().written(f.offset < written);
                f.waiter.fail(e)
            })
            .sum()
    }

    /// When something is due next: the first live entry's deadline, or the moment the oldest
    /// timed-out entry becomes stuck.
    fn next_wake(&self) -> Option<Instant> {
        let live = self.entries.get(self.timed_out).map(|f| f.deadline);
        let stuck = match self.timed_out {
            0 => None,
            _ => self.entries.front().map(|f| f.deadline + self.stuck_limit),
        };
        match (live, stuck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn rearm(&mut self) {
        let Some(next) = self.next_wake() else {
            return; // an armed timer fires once for nothing
        };
        if self.armed.is_none_or(|a| next < a) {
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(next),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(next))),
            }
            self.armed = Some(next);
        }
    }

    /// Waits for the next deadline and fails the requests it finds due (cancel safe: nothing is
    /// lost if the future is dropped, the next call waits again).
    pub fn expired(&mut self) -> impl Future<Output = Expiry> + '_ {
        std::future::poll_fn(|cx| self.poll_expired(cx))
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expiry> {
        loop {
            let (Some(_), Some(timer)) = (self.armed, self.timer.as_mut()) else {
                // Nothing to wait for; a push re-arms, and the connection task (the only one
                // that pushes) polls again after it.
                return Poll::Pending;
            };
            ready!(timer.as_mut().poll(cx));
            self.armed = None;
            let now = Instant::now();
            let (mut commands, mut requests) = (0, 0);
            while let Some(f) = self.entries.get_mut(self.timed_out) {
                if f.deadline > now {
                    break;
                }
                let n = f
                    .waiter
                    .take()
                    .fail(BackendError::new(ErrorKind::Timeout, Origin::Deadline).written(true));
                if n > 0 {
                    commands += 1;
                    requests += n;
                }
                self.timed_out += 1;
            }
            let stuck = self.timed_out > 0
                && self
                    .entries
                    .front()
                    .is_some_and(|f| f.deadline + self.stuck_limit <= now);
            self.rearm();
            if stuck {
                return Poll::Ready(Expiry::Stuck);
            }
            if commands > 0 {
                return Poll::Ready(Expiry::TimedOut { commands, requests });
            }
            // Fired early (the entry it was set for has been answered): wait again.
        }
    }
}

#[cfg(test)]
mod tests;

//! The stop signal of one listener: at shutdown, or when a reload removes the listener, every
//! session of it reads nothing more and drains.
//!
//! A `tokio::sync::watch` channel did this before, at a price paid on every wake-up of every
//! session: `select!` builds a new `changed()` future each time, which locks the channel's
//! waiter list to register and again to deregister (about 540 instructions per request, 4.6 %
//! of a one-request-per-round-trip load, by callgrind). Here a session registers its task's
//! waker once; a poll is then one atomic load and a pointer comparison, and the lock is taken
//! only when the waker changes, at the stop, and when the session ends.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The owner's side: [`Stopper::stop`] (or dropping it) stops every [`StopWatch`] made from it.
#[derive(Debug)]
pub struct Stopper {
    inner: Arc<Inner>,
}

/// A handle to make [`StopWatch`]es from (one per session); cheap to clone.
#[derive(Debug, Clone)]
pub struct StopSignal {
    inner: Arc<Inner>,
}

/// One waiter's registration. Dropping it removes the registration.
#[derive(Debug)]
pub struct StopWatch {
    inner: Arc<Inner>,
    /// Once registered: its place in the waiter list, and the waker put there (to tell whether
    /// a poll brings a different one).
    registered: Option<(usize, Waker)>,
}

#[derive(Debug, Default)]
struct Inner {
    stopped: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    wakers: Vec<Option<Waker>>,
    /// Slots given back by ended watches, reused first.
    free: Vec<usize>,
}

/// A new, not yet stopped, signal.
pub fn channel() -> (Stopper, StopSignal) {
    let inner = Arc::new(Inner::default());
    (
        Stopper {
            inner: inner.clone(),
        },
        StopSignal { inner },
    )
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Waiters> {
        // A panic while the list is held leaves it consistent (every step is one assignment).
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let wakers: Vec<Waker> = self
            .lock()
            .wakers
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        // Woken outside the lock: a woken session may run at once on another worker.
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Stopper {
    /// Stops every watch, now and for those made later.
    pub fn stop(&self) {
        self.inner.stop();
    }
}

impl Drop for Stopper {
    /// An owner that goes away stops its sessions too (as a dropped `watch::Sender` did).
    fn drop(&mut self) {
        self.inner.stop();
    }
}

impl StopSignal {
    /// A watch for one waiter; it registers at its first poll.
    pub fn watch(&self) -> StopWatch {
        StopWatch {
            inner: self.inner.clone(),
            registered: None,
        }
    }
}

impl StopWatch {
    /// Whether the stop has come.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    /// Ready once stopped. Cancel safe: the registration outlives the future.
    pub fn stopped(&mut self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| self.poll_stopped(cx))
    }

    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_stopped() {
            return Poll::Ready(());
        }
        if !self
            .registered
            .as_ref()
            .is_some_and(|(_, w)| w.will_wake(cx.waker()))
        {
            let waker = cx.waker().clone();
            let mut waiters = self.inner.lock();
            let slot = match &self.registered {
                Some((slot, _)) => *slot,
                None => {
                    let slot = waiters.free.pop().unwrap_or(waiters.wakers.len());
                    if slot == waiters.wakers.len() {
                        waiters.wakers.push(None);
                    }
                    slot
                }
            };
            waiters.wakers[slot] = Some(waker.clone());
            drop(waiters);
            self.registered = Some((slot, waker));
            // The stopper sets the flag before it takes the list: if it took the list before we
            // put our waker in, the flag is visible now.
            if self.is_stopped() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        if let Some((slot, _)) = self.registered {
            let mut waiters = self.inner.lock();
            waiters.wakers[slot] = None;
            waiters.free.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_stop_wakes_every_registered_waiter_and_later_ones_see_it() {
        let (stopper, signal) = channel();
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let mut watch = signal.watch();
                tokio::spawn(async move { watch.stopped().await })
            })
            .collect();
        // A watch that ended gives its slot back without waking anyone.
        drop(signal.watch());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(tasks.iter().all(|t| !t.is_finished()));
        stopper.stop();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("woken")
                .expect("no panic");
        }
        let mut late = signal.watch();
        assert!(late.is_stopped());
        late.stopped().await;
    }

    #[tokio::test]
    async fn dropping_the_stopper_stops() {
        let (stopper, signal) = channel();
        let mut watch = signal.watch();
        let task = tokio::spawn(async move { watch.stopped().await });
        tokio::task::yield_now().await;
        drop(stopper);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("woken")
            .expect("no panic");
    }

    #[test]
    fn ended_watches_give_their_slots_back() {
        let (_stopper, signal) = channel();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..100 {
            let mut w = signal.watch();
            assert!(w.poll_stopped(&mut cx).is_pending());
        }
        assert_eq!(signal.inner.lock().wakers.len(), 1);
    }
}

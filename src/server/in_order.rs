//! The replies a session still owes, oldest first.
//!
//! Only the oldest is polled. Replies go out in request order anyway, and a plain request's
//! backend work starts when it is dispatched (its answer waits in a channel until polled), so
//! polling the younger ones would only cost wake-ups. This replaced `FuturesOrdered`, which
//! allocated a task per request and routed every wake-up through a shared queue. A request on a
//! tiered route does its work when polled, so it starts once the replies before it are out: a
//! little later than it could, never out of order.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Futures completed strictly in the order they were pushed.
pub struct InOrder<F> {
    queue: VecDeque<F>,
}

impl<F: Future + Unpin> InOrder<F> {
    /// An empty queue (allocates nothing until the first push).
    pub fn new() -> Self {
        InOrder {
            queue: VecDeque::new(),
        }
    }

    /// Adds a future behind the others.
    pub fn push_back(&mut self, future: F) {
        self.queue.push_back(future);
    }

    /// Futures not yet completed.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The oldest future's output once it completes; `None` when the queue is empty.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let Some(front) = self.queue.front_mut() else {
            return Poll::Ready(None);
        };
        let output = std::task::ready!(Pin::new(front).poll(cx));
        self.queue.pop_front();
        Poll::Ready(Some(output))
    }

    /// Waits for the oldest future's output.
    pub async fn next(&mut self) -> Option<F::Output> {
        poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl<F: Future + Unpin> Default for InOrder<F> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn outputs_come_in_push_order_whatever_order_they_complete_in() {
        let mut q = InOrder::new();
        let (tx1, rx1) = oneshot::channel::<u32>();
        let (tx2, rx2) = oneshot::channel::<u32>();
        q.push_back(rx1);
        q.push_back(rx2);
        tx2.send(2).unwrap();
        // The second is ready, the first is not: nothing comes out.
        assert!(q.next().now_or_never().is_none());
        tx1.send(1).unwrap();
        assert_eq!(q.next().await, Some(Ok(1)));
        assert_eq!(q.next().await, Some(Ok(2)));
        assert_eq!(q.next().await, None);
        assert!(q.is_empty());
    }
}

//! Deadlines on tokio's paused clock: time only moves when every task waits, and then jumps to
//! the next timer, so "fails at 100 ms" is exact and nothing sleeps.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, advance};

use super::*;
use crate::backend::batch::Waiter;
use crate::backend::conn::Answer;
use crate::protocol::backend::Response;
use crate::protocol::command::ReplyKind;

const TIMEOUT: Duration = Duration::from_millis(100);
const STUCK: Duration = Duration::from_millis(500);

fn entry(deadline: Instant) -> (InFlight, oneshot::Receiver<Answer>) {
    let (tx, rx) = oneshot::channel();
    let entry = InFlight {
        kind: ReplyKind::Line,
        keys: Vec::new(),
        waiter: Waiter::One(tx),
        deadline,
        offset: 0,
    };
    (entry, rx)
}

fn timed_out(rx: &mut oneshot::Receiver<Answer>) -> bool {
    matches!(rx.try_recv(), Ok(Err(e)) if e.kind == ErrorKind::Timeout)
}

/// Queues a request due in `TIMEOUT` and checks that it, alone, fails exactly then.
async fn fails_alone_at_its_deadline(q: &mut InFlightQueue) {
    let sent = Instant::now();
    let (e, mut rx) = entry(sent + TIMEOUT);
    q.push(e);
    let e = q.expired().await;
    assert_eq!(
        e,
        Expiry::TimedOut {
            commands: 1,
            requests: 1
        }
    );
    assert_eq!(sent.elapsed(), TIMEOUT);
    assert!(timed_out(&mut rx));
}

#[tokio::test(start_paused = true)]
async fn one_timeout_then_a_late_answer_then_a_stall() {
    let mut q = InFlightQueue::new(STUCK);
    // No answer: the request fails at its deadline, to the millisecond.
    fails_alone_at_its_deadline(&mut q).await;
    // Its answer comes late (250 ms) and is taken off without a waiter.
    advance(Duration::from_millis(150)).await;
    let late = q.pop().expect("the late entry");
    assert!(!late.waiter.is_waiting());
    // The next request on the stalled connection fails at its own deadline, not at a recheck.
    fails_alone_at_its_deadline(&mut q).await;
}

#[tokio::test(start_paused = true)]
async fn each_request_fails_at_its_own_deadline_never_later() {
    let start = Instant::now();
    let mut q = InFlightQueue::new(Duration::from_secs(60));
    let mut waiting = Vec::new();
    // Ten requests 10 ms apart; every third is answered in time, which moves the front and
    // leaves the armed timer early (it must fire, find nothing, and re-arm).
    for i in 0..10u32 {
        let (e, rx) = entry(Instant::now() + TIMEOUT);
        q.push(e);
        waiting.push((i, Instant::now() + TIMEOUT, rx));
        advance(Duration::from_millis(10)).await;
    }
    let mut answered = Vec::new();
    for (i, _, rx) in waiting.iter_mut() {
        if *i % 3 == 0 && *i < 6 {
            // Answered at once, in order: only the front can be answered.
            let f = q.pop().expect("front");
            f.waiter
                .deliver(Response::Line(bytes::Bytes::from_static(b"STORED\r\n")));
            assert!(matches!(rx.try_recv(), Ok(Ok(_))));
            answered.push(*i);
        } else {
            break;
        }
    }
    while q.len() > q.timed_out {
        q.expired().await;
        let now = Instant::now();
        for (i, deadline, rx) in waiting.iter_mut() {
            if answered.contains(i) {
                continue;
            }
            if timed_out(rx) {
                // At its own deadline: ± 1 ms of timer granularity, never later.
                assert!(now >= *deadline, "request {i} failed early");
                assert!(
                    now - *deadline <= Duration::from_millis(1),
                    "request {i} late by {:?}",
                    now - *deadline
                );
                answered.push(*i);
            }
        }
    }
    assert_eq!(answered.len(), 10);
    assert!(start.elapsed() <= Duration::from_millis(100) + Duration::from_millis(91));
}

#[tokio::test(start_paused = true)]
async fn a_connection_is_stuck_when_the_oldest_answer_is_overdue_by_the_limit() {
    let start = Instant::now();
    let mut q = InFlightQueue::new(STUCK);
    let (a, _ra) = entry(start + TIMEOUT);
    q.push(a);
    assert_eq!(
        q.expired().await,
        Expiry::TimedOut {
            commands: 1,
            requests: 1
        }
    );
    // A request sent later still fails at its own deadline first.
    advance(Duration::from_millis(100)).await;
    let (b, mut rb) = entry(Instant::now() + TIMEOUT);
    q.push(b);
    assert_eq!(
        q.expired().await,
        Expiry::TimedOut {
            commands: 1,
            requests: 1
        }
    );
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert!(timed_out(&mut rb));
    // Then nothing more comes: stuck at the oldest deadline + the limit, with no traffic.
    assert_eq!(q.expired().await, Expiry::Stuck);
    assert_eq!(start.elapsed(), TIMEOUT + STUCK);
}

#[tokio::test(start_paused = true)]
async fn answers_in_time_neither_fail_nor_wake_anything() {
    let mut q = InFlightQueue::new(STUCK);
    for _ in 0..3 {
        let (e, mut rx) = entry(Instant::now() + TIMEOUT);
        q.push(e);
        advance(Duration::from_millis(50)).await;
        q.pop()
            .expect("front")
            .waiter
            .deliver(Response::Values(Vec::new()));
        assert!(matches!(rx.try_recv(), Ok(Ok(_))));
    }
    // Empty: the early-armed timer fires once for nothing and the queue waits for ever.
    let waited = tokio::time::timeout(Duration::from_secs(3600), q.expired()).await;
    assert!(waited.is_err());
}

#[test]
fn deadlines_never_decrease_along_the_queue() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let now = Instant::now();
        let mut q = InFlightQueue::new(STUCK);
        q.push(entry(now + Duration::from_millis(200)).0);
        q.push(entry(now + Duration::from_millis(150)).0);
        q.pop();
        assert_eq!(
            q.front().map(|f| f.deadline),
            Some(now + Duration::from_millis(200))
        );
    });
}

#[test]
fn failing_all_says_which_requests_reached_the_wire() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut q = InFlightQueue::new(STUCK);
        let (mut a, mut ra) = entry(Instant::now() + TIMEOUT);
        let (mut b, mut rb) = entry(Instant::now() + TIMEOUT);
        a.offset = 0;
        b.offset = 100;
        q.push(a);
        q.push(b);
        let error = BackendError::new(ErrorKind::Closed, Origin::Write);
        assert_eq!(q.fail_all(&error, 100), 2);
        assert!(q.is_empty());
        let ea = ra.try_recv().unwrap().unwrap_err();
        let eb = rb.try_recv().unwrap().unwrap_err();
        assert!(!ea.retry_safe(), "a's bytes were written");
        assert!(eb.retry_safe(), "b never reached the wire");
    });
}

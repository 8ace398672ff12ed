//! One shared, pipelined connection to a memcached server.
//!
//! Requests from every client arrive on an unbounded channel (each client caps its own in-flight
//! requests, so the total is bounded by `max_connections × max_inflight`). The writer drains the
//! channel into one buffer and writes it with one syscall ([`super::batch`], which also merges
//! adjacent `get`s into one command); before writing it appends the requests to the in-flight
//! FIFO, which the reader uses to parse each answer by the shape its request expects (pelikan's
//! `ClientSession { pending }`).
//!
//! Timeouts: every request carries a deadline. When it passes, the client is answered
//! `SERVER_ERROR timeout` at once, but the request keeps its place in the FIFO so its late answer
//! is read and thrown away, and the requests behind it still get their own answers (twemproxy
//! closes the whole connection instead). Only when the oldest answer is overdue by
//! [`stuck_limit`] is the connection given up and reopened.
//!
//! Reconnects back off from 20 ms to 1 s. While disconnected, requests fail at once.
//!
//! With the pool's `tls`, a new connection does the TLS handshake (within the same timeout as
//! the connect) before it serves; the pipelining and FIFO above are the same on TLS.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::BackendError;
use super::batch::{Batch, InFlight};
use super::health::Health;
use crate::metrics::ServerMetrics;
use crate::protocol::backend::{Response, parse};
use crate::protocol::command::Op;

/// The answer to one backend request.
pub type Reply = Result<Response, BackendError>;

/// A request on its way to a connection.
pub struct Job {
    /// What to send.
    pub op: Op,
    /// Where the answer goes.
    pub tx: oneshot::Sender<Reply>,
    /// When the client stops waiting.
    pub deadline: Instant,
}

/// Writes are flushed once this much is buffered even if more requests are queued.
const WRITE_BATCH: usize = 256 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long past its deadline the oldest answer may be before the connection is reopened.
pub fn stuck_limit(timeout: Duration) -> Duration {
    (timeout * 10).max(Duration::from_secs(5))
}

/// What a connection needs to know about its server.
#[derive(Clone)]
pub struct Target {
    /// `host:port`, resolved on every connect.
    pub address: String,
    /// The pool's per-request timeout (also the connect timeout).
    pub timeout: Duration,
    /// Shared with the server.
    pub health: Arc<Health>,
    /// Per-server metric handles.
    pub metrics: ServerMetrics,
    /// Merge adjacent retrievals into one command (the pool's `merge_gets`).
    pub merge_gets: bool,
    /// TLS to the server (the pool's `tls`), shared by the server's connections.
    pub tls: Option<Arc<crate::tls::connect::ServerTls>>,
    /// Longest value accepted from the server (the listener's `max_value_size`).
    pub max_value_size: usize,
}

/// Starts a connection task; it ends when every sender is dropped and its answers are in.
pub fn spawn(target: Target) -> mpsc::UnboundedSender<Job> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(target, rx));
    tx
}

enum Ended {
    /// The channel closed and every answer came back.
    Drained,
    /// The connection failed with this error.
    Failed(BackendError),
}

async fn run(target: Target, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        // What requests arriving during the backoff below are told.
        let mut refused = BackendError::Connect;
        match tokio::time::timeout(target.timeout, TcpStream::connect(&target.address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                tracing::debug!(server = %target.address, "connected");
                let ended = match &target.tls {
                    None => {
                        backoff = BACKOFF_MIN;
                        let (rd, wr) = stream.into_split();
                        Some(serve(rd, wr, &mut rx, &target).await)
                    }
                    Some(tls) => {
                        match tokio::time::timeout(target.timeout, tls.connect(stream)).await {
                            Ok(Ok(stream)) => {
                                backoff = BACKOFF_MIN;
                                let (rd, wr) = crate::tls::split::split(stream);
                                Some(serve(rd, wr, &mut rx, &target).await)
                            }
                            Ok(Err(e)) => {
                                tls.log_failure(&target.address, &e);
                                None
                            }
                            Err(_) => {
                                let e = crate::tls::connect::ConnectError::Timeout;
                                tls.log_failure(&target.address, &e);
                                None
                            }
                        }
                    }
                };
                match ended {
                    Some(Ended::Drained) => return,
                    Some(Ended::Failed(e)) => {
                        tracing::debug!(server = %target.address, error = %e, "connection lost");
                        if e == BackendError::Tls {
                            refused = BackendError::Tls;
                        }
                    }
                    None => {
                        target.metrics.tls_errors.inc();
                        target.health.record_failure(&target.metrics);
                        refused = BackendError::Tls;
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(server = %target.address, error = %e, "connect failed");
                target.metrics.connect_errors.inc();
                target.health.record_failure(&target.metrics);
            }
            Err(_) => {
                tracing::debug!(server = %target.address, "connect timed out");
                target.metrics.connect_errors.inc();
                target.health.record_failure(&target.metrics);
            }
        }
        // Back off; requests arriving meanwhile fail at once rather than wait.
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                job = rx.recv() => match job {
                    Some(job) => { let _ = job.tx.send(Err(refused)); }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Runs one connection (the halves of a TCP or TLS stream) until it fails or the channel is
/// drained.
async fn serve(
    mut rd: impl AsyncRead + Unpin,
    mut wr: impl AsyncWrite + Unpin,
    rx: &mut mpsc::UnboundedReceiver<Job>,
    target: &Target,
) -> Ended {
    let inflight: Mutex<VecDeque<InFlight>> = Mutex::new(VecDeque::new());
    let pushed = Notify::new();

    let writer = async {
        let mut wbuf = BytesMut::with_capacity(16 * 1024);
        loop {
            let Some(job) = rx.recv().await else {
                // Drained: wait for the answers still owed, then close.
                while !lock(&inflight).is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return Ended::Drained;
            };
            // Let the other ready tasks (client sessions) run first, so requests from many
            // clients go out in one write instead of one syscall each: tokio runs a woken task
            // right after its waker, which would otherwise write every request alone.
            yield_once().await;
            {
                let mut q = lock(&inflight);
                let mut batch = Batch::new(target.merge_gets);
                batch.push(&mut q, &mut wbuf, job, &target.metrics);
                while wbuf.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(&mut q, &mut wbuf, job, &target.metrics),
                        Err(_) => break,
                    }
                }
            }
            pushed.notify_one();
            // The flush is free on TCP; TLS keeps what the socket did not take until then.
            if wr.write_all(&wbuf).await.is_err() || wr.flush().await.is_err() {
                return Ended::Failed(BackendError::Closed);
            }
            wbuf.clear();
        }
    };

    let reader = async {
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        // Timed-out requests always form a prefix of the FIFO (deadlines grow with send order).
        let mut timed_out = 0usize;
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        // When the timer fires next, if armed. Deadlines grow with send order, so a timer armed
        // for an older deadline fires early at worst; re-arming only when the next deadline is
        // earlier than the armed one keeps timer resets off the per-answer path.
        let mut armed: Option<Instant> = None;
        loop {
            // Take every complete answer off the buffer.
            loop {
                let parsed = {
                    let q = lock(&inflight);
                    let Some(front) = q.front() else {
                        break;
                    };
                    parse(front.expect(target.max_value_size), &mut rbuf)
                };
                match parsed {
                    Ok(Some(response)) => {
                        let front = lock(&inflight).pop_front();
                        timed_out = timed_out.saturating_sub(1);
                        if let Some(f) = front {
                            target.health.record_success(&target.metrics);
                            f.waiter.deliver(response);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(server = %target.address, error = %e, "closing backend connection");
                        target.metrics.protocol_errors.inc();
                        return Ended::Failed(BackendError::Protocol);
                    }
                }
            }
            let (next_deadline, empty) = {
                let q = lock(&inflight);
                (q.get(timed_out).map(|f| f.deadline), q.is_empty())
            };
            if !rbuf.is_empty() && empty {
                target.metrics.protocol_errors.inc();
                tracing::warn!(server = %target.address, "unsolicited backend data");
                return Ended::Failed(BackendError::Protocol);
            }
            if let Some(d) = next_deadline {
                if armed.is_none_or(|a| d < a) {
                    sleep.as_mut().reset(d);
                    armed = Some(d);
                }
            }
            tokio::select! {
                r = rd.read_buf(&mut rbuf) => match r {
                    Ok(0) => return Ended::Failed(BackendError::Closed),
                    Err(e) => return Ended::Failed(read_error(target, &e)),
                    Ok(_) => {}
                },
                _ = &mut sleep, if armed.is_some() => {
                    armed = None;
                    let now = Instant::now();
                    let mut q = lock(&inflight);
                    while let Some(f) = q.get_mut(timed_out) {
                        if f.deadline > now {
                            break;
                        }
                        let n = f.waiter.take().fail(BackendError::Timeout);
                        if n > 0 {
                            target.metrics.timeouts.inc_by(n);
                            target.health.record_failure(&target.metrics);
                        }
                        timed_out += 1;
                    }
                    if q.front().is_some_and(|f| f.deadline + stuck_limit(target.timeout) <= now) {
                        tracing::warn!(server = %target.address, "backend stuck, reconnecting");
                        return Ended::Failed(BackendError::Timeout);
                    }
                    if timed_out > 0 {
                        // Check the stuck limit later even if no new request comes.
                        let recheck = q[0].deadline + stuck_limit(target.timeout);
                        sleep.as_mut().reset(recheck);
                        armed = Some(recheck);
                    }
                },
                // New requests need a timer when none is armed. An armed deadline is an older
                // request's, never later than a new one's, except the stuck-limit recheck after
                // timeouts. (Not waiting on every loop saves registering a waiter per answer.)
                _ = pushed.notified(), if armed.is_none() || timed_out > 0 => {}
            }
        }
    };

    let ended = tokio::select! {
        e = writer => e,
        e = reader => e,
    };
    // Whatever is still owed an answer fails; count it against the server.
    let owed: Vec<InFlight> = lock(&inflight).drain(..).collect();
    let mut failed = false;
    let error = match &ended {
        Ended::Failed(e) => *e,
        Ended::Drained => BackendError::Closed,
    };
    for f in owed {
        let n = f.waiter.fail(error);
        if n > 0 {
            failed = true;
            target.metrics.closed.inc_by(n);
        }
    }
    // An idle connection closed by the server (restart, idle timeout) is not a failure by
    // itself; the reconnect that follows tells whether the server is really gone.
    if failed {
        target.health.record_failure(&target.metrics);
    }
    ended
}

/// Why a read failed. A TLS 1.3 server refuses a client certificate (or its absence) only after
/// the handshake, on the first read: that is a TLS failure, counted and answered as one.
fn read_error(target: &Target, e: &std::io::Error) -> BackendError {
    match &target.tls {
        Some(tls) if tls.session_failed(&target.address, e) => {
            target.metrics.tls_errors.inc();
            BackendError::Tls
        }
        _ => BackendError::Closed,
    }
}

/// Returns `Pending` once, waking itself at once: the task goes to the back of the run queue,
/// behind the sessions that are ready to queue more requests. (`tokio::task::yield_now` defers
/// its wake-up to the worker's next park, which stalled connections under load in tests.)
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// The FIFO lock is never held across an await; a poisoned lock still holds a valid queue.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

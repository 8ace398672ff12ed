//! One shared, pipelined connection to a memcached server.
//!
//! Requests from every client arrive on an unbounded channel (each client caps its own in-flight
//! requests, so the total is bounded by `max_connections × max_inflight`). One task owns the
//! socket: it drains the channel into one buffer ([`super::batch`], which also merges adjacent
//! `get`s into one command), writes it with one syscall, and parses each answer by the shape its
//! request expects, oldest first ([`InFlightQueue`], pelikan's `ClientSession { pending }`),
//! with every request failing at its own deadline.
//!
//! A protocol error (an answer that is not what the oldest request expects) means the stream
//! is out of step: every request in flight gets `SERVER_ERROR`, nothing more read from the
//! socket reaches a client, the connection is closed and reopened with backoff, and it counts as
//! a failure of the server. The task is supervised ([`spawn`]): whatever ends a connection,
//! a panic included, a new one is opened while the server is still in the config.
//!
//! Reconnects back off from 20 ms to 1 s ([`Backoff`]). While disconnected, requests fail at once.
//!
//! With the pool's `tls`, a new connection does the TLS handshake (within the same timeout as
//! the connect) before it serves; the pipelining and FIFO above are the same on TLS.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::batch::Batch;
use super::error::{BackendError, ErrorKind, Origin};
use super::health::Health;
use super::inflight::{Expiry, InFlightQueue};
use super::settings::ServerSettings;
use crate::io::{write_or_flush, yield_once};
use crate::metrics::ServerMetrics;
use crate::protocol::backend::{Response, parse};
use crate::protocol::command::Op;

/// The answer to one backend request.
pub type Answer = Result<Response, BackendError>;

/// A request on its way to a connection.
pub struct Job {
    /// What to send.
    pub op: Op,
    /// Where the answer goes.
    pub tx: oneshot::Sender<Answer>,
    /// When the client stops waiting.
    pub deadline: Instant,
}

/// Writes are flushed once this much is buffered even if more requests are queued.
const WRITE_BATCH: usize = 256 * 1024;

/// How long past its deadline the oldest answer may be before the connection is reopened.
pub fn stuck_limit(timeout: Duration) -> Duration {
    (timeout * 10).max(Duration::from_secs(5))
}

/// Reconnect delays: 20 ms, doubling up to 1 s; back to 20 ms once a connection works.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// Shortest delay.
    pub const MIN: Duration = Duration::from_millis(20);
    /// Longest delay.
    pub const MAX: Duration = Duration::from_secs(1);

    /// Starts at [`Backoff::MIN`].
    pub fn new() -> Backoff {
        Backoff { next: Backoff::MIN }
    }

    /// The delay before the next attempt; the one after is twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        d
    }

    /// A connection worked: start over.
    pub fn reset(&mut self) {
        self.next = Backoff::MIN;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

/// What a connection needs to know about its server.
#[derive(Clone)]
pub struct Target {
    /// The server's settings (address, timeout, merging, value limit), shared with the server.
    pub settings: Arc<ServerSettings>,
    /// Shared with the server.
    pub health: Arc<Health>,
    /// Per-server metric handles.
    pub metrics: ServerMetrics,
    /// TLS to the server (the pool's `tls`), shared by the server's connections.
    pub tls: Option<Arc<crate::tls::connect::ServerTls>>,
}

/// Starts a supervised connection; it ends when every sender is dropped and its answers are in.
pub fn spawn(target: Target) -> mpsc::UnboundedSender<Job> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(supervise(target, rx));
    tx
}

/// How one connection ended.
enum Ended {
    /// The channel closed and every answer came back.
    Drained,
    /// The connection failed with this error (already counted against the server).
    Failed(BackendError),
}

/// Keeps a connection open for as long as the channel is: connects, serves, and after any end —
/// an error, a refused connect, a panic — backs off and connects again. The channel's receiver
/// lives here, outside the connection, so a panic loses only the requests in flight (their
/// clients get `SERVER_ERROR backend connection closed`), never the server.
async fn supervise(target: Target, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut backoff = Backoff::new();
    loop {
        // What requests arriving during the backoff below are told.
        let mut refused = ErrorKind::Connect;
        let attempt = AssertUnwindSafe(connect_and_serve(&target, &mut rx, &mut backoff));
        match attempt.catch_unwind().await {
            Ok(Ended::Drained) => return,
            Ok(Ended::Failed(e)) => {
                tracing::debug!(server = %target.settings.address, error = %e, "backend connection ended");
                if e.kind == ErrorKind::Tls {
                    refused = ErrorKind::Tls;
                }
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(server = %target.settings.address, panic = %what, "backend connection task panicked; reconnecting");
                target.health.record_failure(&target.metrics);
            }
        }
        // Back off; requests arriving meanwhile fail at once rather than wait.
        let sleep = tokio::time::sleep(backoff.next_delay());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                job = rx.recv() => match job {
                    Some(job) => {
                        let _ = job.tx.send(Err(BackendError::new(refused, Origin::Connect)));
                    }
                    None => return,
                },
            }
        }
    }
}

/// Opens one connection and serves it until it ends.
async fn connect_and_serve(
    target: &Target,
    rx: &mut mpsc::UnboundedReceiver<Job>,
    backoff: &mut Backoff,
) -> Ended {
    let connect = tokio::time::timeout(
        target.settings.timeout,
        TcpStream::connect(&target.settings.address),
    );
    let stream = match connect.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let e = BackendError::new(ErrorKind::Connect, Origin::Connect).because(e);
            tracing::debug!(server = %target.settings.address, error = %e, "connect failed");
            target.metrics.connect_errors.inc();
            target.health.record_failure(&target.metrics);
            return Ended::Failed(e);
        }
        Err(elapsed) => {
            let e = BackendError::new(ErrorKind::Connect, Origin::Connect).because(elapsed);
            tracing::debug!(server = %target.settings.address, error = %e, "connect timed out");
            target.metrics.connect_errors.inc();
            target.health.record_failure(&target.metrics);
            return Ended::Failed(e);
        }
    };
    let _ = stream.set_nodelay(true);
    tracing::debug!(server = %target.settings.address, "connected");
    let Some(tls) = &target.tls else {
        backoff.reset();
        let (rd, wr) = stream.into_split();
        return Connection::new(target).serve(rd, wr, rx).await;
    };
    let failed = match tokio::time::timeout(target.settings.timeout, tls.connect(stream)).await {
        Ok(Ok(stream)) => {
            backoff.reset();
            let (rd, wr) = crate::tls::split::split(stream);
            return Connection::new(target).serve(rd, wr, rx).await;
        }
        Ok(Err(e)) => {
            tls.log_failure(&target.settings.address, &e);
            BackendError::new(ErrorKind::Tls, Origin::Connect).because(e)
        }
        Err(_) => {
            let e = crate::tls::connect::ConnectError::Timeout;
            tls.log_failure(&target.settings.address, &e);
            BackendError::new(ErrorKind::Tls, Origin::Connect).because(e)
        }
    };
    target.metrics.tls_errors.inc();
    target.health.record_failure(&target.metrics);
    Ended::Failed(failed)
}

/// The state of one open connection.
struct Connection<'a> {
    target: &'a Target,
    queue: InFlightQueue,
    rbuf: BytesMut,
    /// Encoded requests not yet written; `wbuf[0]` is byte `written` of the stream.
    wbuf: BytesMut,
    written: u64,
}

impl<'a> Connection<'a> {
    fn new(target: &'a Target) -> Connection<'a> {
        Connection {
            target,
            queue: InFlightQueue::new(stuck_limit(target.settings.timeout)),
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(16 * 1024),
            written: 0,
        }
    }

    /// Serves the halves of a TCP or TLS stream until it fails or the channel is drained.
    async fn serve(
        mut self,
        mut rd: impl AsyncRead + Unpin,
        mut wr: impl AsyncWrite + Unpin,
        rx: &mut mpsc::UnboundedReceiver<Job>,
    ) -> Ended {
        let mut open = true;
        // Written but not flushed: TLS keeps what the socket did not take until a flush (on TCP
        // the flush is free).
        let mut unflushed = false;
        let ended = loop {
            if let Err(e) = self.take_answers() {
                break e;
            }
            if !open && self.queue.is_empty() && self.wbuf.is_empty() && !unflushed {
                return Ended::Drained;
            }
            let writing = !self.wbuf.is_empty() || unflushed;
            tokio::select! {
                r = rd.read_buf(&mut self.rbuf) => match r {
                    Ok(0) => break BackendError::new(ErrorKind::Closed, Origin::Read),
                    Ok(_) => {}
                    Err(e) => break read_error(self.target, e),
                },
                // Both halves are cancel safe: a write that did not complete wrote nothing, a
                // flush dropped keeps its data buffered.
                r = write_or_flush(&mut wr, &mut self.wbuf), if writing => match r {
                    Ok(n) => {
                        self.written += n as u64;
                        unflushed = n > 0;
                    }
                    Err(e) => break BackendError::new(ErrorKind::Closed, Origin::Write).because(e),
                },
                job = rx.recv(), if open && self.wbuf.len() < WRITE_BATCH => match job {
                    Some(job) => self.queue_batch(job, rx).await,
                    // Drained: wait for the answers still owed, then close.
                    None => open = false,
                },
                expiry = self.queue.expired() => match expiry {
                    Expiry::TimedOut { commands, requests } => {
                        self.target.metrics.timeouts.inc_by(requests);
                        for _ in 0..commands {
                            self.target.health.record_failure(&self.target.metrics);
                        }
                    }
                    Expiry::Stuck => {
                        tracing::warn!(server = %self.target.settings.address, "backend stuck, reconnecting");
                        self.target.health.record_failure(&self.target.metrics);
                        break BackendError::new(ErrorKind::Timeout, Origin::Deadline);
                    }
                },
            }
        };
        self.fail(ended)
    }

    /// Takes every complete answer off the read buffer and hands it over.
    fn take_answers(&mut self) -> Result<(), BackendError> {
        let max = self.target.settings.max_value_size;
        while let Some(front) = self.queue.front() {
            match parse(front.expect(max), &mut self.rbuf) {
                Ok(Some(response)) => {
                    if let Some(f) = self.queue.pop() {
                        // A late answer (its client already got `timeout`) proves nothing about
                        // the server's health: only answers a client waited for are successes.
                        if f.waiter.is_waiting() {
                            self.target.health.record_success(&self.target.metrics);
                        }
                        f.waiter.deliver(response);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(server = %self.target.settings.address, error = %e, "backend protocol error, closing the connection");
                    self.target.metrics.protocol_errors.inc();
                    self.target.health.record_failure(&self.target.metrics);
                    return Err(BackendError::new(ErrorKind::Protocol, Origin::Parse).because(e));
                }
            }
        }
        if self.queue.is_empty() && !self.rbuf.is_empty() {
            let e = crate::protocol::backend::ProtocolError("data nobody asked for".into());
            tracing::warn!(server = %self.target.settings.address, error = %e, "backend protocol error, closing the connection");
            self.target.metrics.protocol_errors.inc();
            self.target.health.record_failure(&self.target.metrics);
            return Err(BackendError::new(ErrorKind::Protocol, Origin::Parse).because(e));
        }
        Ok(())
    }

    /// Encodes `job` and whatever else is queued into one write.
    async fn queue_batch(&mut self, job: Job, rx: &mut mpsc::UnboundedReceiver<Job>) {
        // Let the other ready tasks (client sessions) run first, so requests from many clients
        // go out in one write instead of one syscall each: tokio runs a woken task right after
        // its waker, which would otherwise write every request alone.
        yield_once().await;
        let offset = self.written;
        let mut batch = Batch::new(self.target.settings.merge_gets);
        let metrics = &self.target.metrics;
        batch.push(&mut self.queue, &mut self.wbuf, offset, job, metrics);
        while self.wbuf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(&mut self.queue, &mut self.wbuf, offset, job, metrics),
                Err(_) => break,
            }
        }
    }

    /// The connection is over: whatever is still owed an answer fails with `error`.
    fn fail(mut self, error: BackendError) -> Ended {
        let owed = self.queue.fail_all(&error, self.written);
        if owed > 0 {
            self.target.metrics.closed.inc_by(owed);
            // An idle connection closed by the server (restart, idle timeout) is not a failure
            // by itself: the reconnect that follows tells whether the server is really gone.
            // Protocol errors and stuck connections were counted where they were found.
            if matches!(error.kind, ErrorKind::Closed | ErrorKind::Tls) {
                self.target.health.record_failure(&self.target.metrics);
            }
        }
        Ended::Failed(error)
    }
}

/// Why a read failed. A TLS 1.3 server refuses a client certificate (or its absence) only after
/// the handshake, on the first read: that is a TLS failure, counted and answered as one.
fn read_error(target: &Target, e: std::io::Error) -> BackendError {
    match &target.tls {
        Some(tls) if tls.session_failed(&target.settings.address, &e) => {
            target.metrics.tls_errors.inc();
            BackendError::new(ErrorKind::Tls, Origin::Read).because(e)
        }
        _ => BackendError::new(ErrorKind::Closed, Origin::Read).because(e),
    }
}

#[cfg(test)]
mod tests;

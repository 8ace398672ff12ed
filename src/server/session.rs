//! One client connection.
//!
//! Requests are parsed and dispatched as they arrive (pipelining): each becomes a future in an
//! [`InOrder`] queue, so answers from different servers arrive concurrently but are written in
//! request order. Ready replies are gathered into one buffer and written with one syscall.
//! Back-pressure: at `max_inflight` outstanding requests, when the answers on their way would
//! exceed `max_client_output` bytes ([`OutputBudget`]), or while the client is not reading its
//! replies, the session stops reading from the client. Replies always leave the backend
//! connections at once; they wait for a slow client here, bounded by that budget: a write the
//! socket does not take at once goes on in the background while the session keeps taking
//! answers off the backends into its write buffer (so they never pin a backend connection's
//! read buffer), and those unread replies count against `max_inflight` and the byte cap.
//! When sessions compete for the backends, each has a fair share of the requests in flight
//! ([`super::fair`]), and a session sends at most `DISPATCH_PER_POLL` requests per turn.
//!
//! Requests on tiered routes take several backend round trips; one of them is a barrier: nothing
//! after it is dispatched until it completes, so a pipelined `incr` then `get` on a migrating key
//! behaves as it would on one memcached. A config reload is a barrier too: requests dispatched on
//! the new snapshot wait until those in flight on the old one are answered.
//!
//! Ending: after `quit` (or an input it cannot resync after) the session parses nothing more.
//! When the client half-closes, or at shutdown, it reads nothing more but still answers every
//! complete request it has received, including, at shutdown, what already sits in the socket.
//! Then it sends FIN and waits briefly for the client to close its side (see [`close`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::fair::Share;
use super::in_order::InOrder;
use super::local;
use super::output::OutputBudget;
use super::stream::{ClientRead, ClientStream};
use crate::config::ListenAddress;
use crate::metrics::Cmd;
use crate::protocol::command::Command;
use crate::protocol::reply::{self, Reply};
use crate::protocol::request::{Decoder, Invalid, Limits, Request};
use crate::route::{self, ReplyFuture, Router, ready};
use crate::state::{Shared, Snapshot};

/// Bookkeeping carried with each outstanding request.
struct RequestInfo {
    cmd: Cmd,
    start: Instant,
    noreply: bool,
    /// Keys asked for (retrievals), for hit/miss counts.
    keys: u32,
    /// Close the connection after this reply.
    close: bool,
    /// This request is a barrier (tiered route).
    barrier: bool,
}

/// A reply future with its bookkeeping, without a second allocation.
struct InFlight {
    fut: ReplyFuture,
    info: Option<RequestInfo>,
}

impl Future for InFlight {
    type Output = (Reply, RequestInfo);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let reply = std::task::ready!(self.fut.as_mut().poll(cx));
        // `info` is only taken here, once, when the future completes.
        let info = self.info.take().expect("polled after completion");
        Poll::Ready((reply, info))
    }
}

/// Runs a client session until the client leaves, sends `quit`, or shutdown drains it.
pub async fn run<S: ClientStream>(
    stream: S,
    shared: Arc<Shared>,
    lane: crate::backend::Lane,
    mut shutdown: watch::Receiver<bool>,
    listener: Arc<ListenAddress>,
) {
    let listen = shared.snapshot().config.listen.clone();
    let limits = Limits {
        max_value_size: listen.max_value_size,
        max_line_size: listen.max_line_size,
    };
    let max_inflight = listen.max_inflight.max(1);
    let mut budget = OutputBudget::new(listen.max_client_output, listen.max_value_size);
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = Decoder::new(limits);
    let mut pending: InOrder<InFlight> = InOrder::new();
    // This session's part of the requests in flight from all sessions (see `fair`).
    let mut share = Share::new();
    // Buffers are allocated when there is something to hold and given back once empty, so an
    // idle connection costs little memory.
    let mut out = BytesMut::new();
    // Replies in `out` (whole or in part) the client has not taken yet: they count against
    // `max_inflight` with the requests still in flight.
    let mut unread = 0usize;
    // Written but not flushed: TLS keeps what the socket did not take until a flush (on TCP
    // the flush is free).
    let mut unflushed = false;
    // `quit` or an input we cannot resync after: nothing after it is parsed; pending requests
    // are answered, then we close.
    let mut closing = false;
    // The client half-closed, or shutdown: no more reads, but every complete request already
    // received is still answered.
    let mut input_done = false;
    // The client closed its side: nothing to wait for when we close.
    let mut eof = false;
    let mut barrier = false;
    // The snapshot generation of the requests in `pending`.
    let mut generation = shared.snapshot().generation;

    loop {
        let window = share.window(max_inflight);
        let may_send =
            |pending: &InOrder<InFlight>, unread: usize, out: &BytesMut, budget: &OutputBudget| {
                pending.len() + unread < window && budget.may_send(out.len())
            };
        let mut sent = 0;
        while !closing
            && !barrier
            && sent < DISPATCH_PER_POLL
            && may_send(&pending, unread, &out, &budget)
        {
            let snapshot = shared.current();
            if snapshot.generation != generation && !pending.is_empty() {
                // A reload: what is in flight went out on the previous snapshot. Let it finish
                // before anything goes out on the new one, so a client's requests never run on
                // two configs at once. A server whose settings changed is a new set of backend
                // connections, and a pipelined `get` on one could overtake the `set` before it
                // on the other.
                barrier = true;
                break;
            }
            let Some(parsed) = decoder.next_request() else {
                break;
            };
            generation = snapshot.generation;
            let router = snapshot.router_for(&listener);
            let in_flight = dispatch(parsed, &snapshot, router, &shared, lane);
            let info = in_flight.info.as_ref().expect("fresh");
            closing |= info.close;
            barrier |= info.barrier;
            budget.sent(info.keys);
            pending.push_back(in_flight);
            sent += 1;
        }
        share.publish(pending.len());
        // An idle connection keeps no buffer: it is allocated again by the next read (a malloc
        // is far cheaper than the syscalls around it, and 10,000 idle clients cost 160 MB less).
        decoder.release_if_empty(0);
        let writing = !out.is_empty() || unflushed;
        // With nothing pending, the loop above stopped only because no complete request is left.
        if pending.is_empty() && !writing && (closing || input_done) {
            drop(share);
            // Boxed: the closing steps are large and run once; keeping them inline made every
            // idle session future (one per client) bigger.
            Box::pin(close(rd, wr, eof)).await;
            return;
        }
        if sent == DISPATCH_PER_POLL {
            // More may be parsed, but other sessions come first: their requests queue on the
            // same backend connections (memcached, too, serves a connection a few requests per
            // turn). The replies and reads below wait one turn of the scheduler.
            yield_once().await;
            continue;
        }
        let can_read =
            !closing && !input_done && !barrier && may_send(&pending, unread, &out, &budget);
        tokio::select! {
            // Answers are taken into the write buffer up to DRAIN_LIMIT bytes; past that they
            // wait in `pending` (counted by the budget) until the client reads, so a client
            // that does not read large values never makes the buffer grow by doubling.
            Some((reply, info)) = pending.next(), if !pending.is_empty() && out.len() < DRAIN_LIMIT => {
                finish(&shared, &mut out, &mut budget, reply, info);
                unread += 1;
                while out.len() < DRAIN_LIMIT {
                    let Some(Some((reply, info))) = pending.next().now_or_never() else {
                        break;
                    };
                    finish(&shared, &mut out, &mut budget, reply, info);
                    unread += 1;
                }
                share.publish(pending.len());
                if pending.is_empty() {
                    barrier = false;
                }
                // Written at once when the socket takes it (the usual case: one syscall per
                // batch of ready replies, flushed once); what it does not take is written by
                // the branch below while answers keep being taken off the backends.
                if write_now(&mut wr, &mut out, &mut unflushed).is_err() {
                    return;
                }
                if out.is_empty() {
                    unread = 0;
                }
            }
            // Cancel safe: a write that did not complete wrote nothing; a dropped flush keeps
            // its data buffered.
            r = write_or_flush(&mut wr, &mut out), if writing => match r {
                Ok(n) => {
                    unflushed = n > 0 || !out.is_empty();
                    if out.is_empty() {
                        unread = 0;
                        out = BytesMut::new();
                    }
                }
                Err(_) => return,
            },
            // Wait for input before reserving the read buffer: an idle client holds none.
            r = rd.readable(), if can_read => {
                if r.is_err() {
                    return;
                }
                match read_now(&mut rd, decoder.buffer()) {
                    // A half-closed client (`printf … | nc`) still gets its replies.
                    Some(Ok(0)) => {
                        input_done = true;
                        eof = true;
                    }
                    Some(Ok(_)) | None => {}
                    Some(Err(_)) => return,
                }
            },
            changed = shutdown.changed(), if !closing && !input_done => {
                if changed.is_err() || *shutdown.borrow() {
                    // Requests the client sent before the shutdown may still sit in the socket
                    // (unread because of back-pressure, or ready at the same moment): take them
                    // too, so everything sent before the signal is answered.
                    let limit = FINAL_READ_LIMIT.max(limits.max_value_size);
                    eof = rd.read_arrived(decoder.buffer(), limit);
                    input_done = true;
                }
            }
        }
    }
}

/// Replies taken into the write buffer before it is written: about a thousand small answers,
/// or one large value beyond it.
const DRAIN_LIMIT: usize = 256 * 1024;

/// At most this many requests are parsed and sent on per turn of a session; then it lets
/// the other sessions run (see [`super::fair`]).
const DISPATCH_PER_POLL: usize = 64;

/// Writes `out` as far as the socket takes it now, flushing once it is all written; never
/// waits. `unflushed` says whether a flush is still owed.
fn write_now(
    wr: &mut (impl AsyncWrite + Unpin),
    out: &mut BytesMut,
    unflushed: &mut bool,
) -> std::io::Result<()> {
    loop {
        match write_or_flush(wr, out).now_or_never() {
            Some(Ok(0)) => {
                *unflushed = false;
                *out = BytesMut::new();
                return Ok(());
            }
            Some(Ok(_)) => *unflushed = true,
            Some(Err(e)) => return Err(e),
            None => {
                *unflushed = true;
                return Ok(());
            }
        }
    }
}

/// Writes what is buffered (returns the bytes taken), or flushes once it is all written
/// (returns 0).
async fn write_or_flush(
    wr: &mut (impl AsyncWrite + Unpin),
    out: &mut BytesMut,
) -> std::io::Result<usize> {
    if out.is_empty() {
        wr.flush().await?;
        return Ok(0);
    }
    match wr.write_buf(out).await? {
        0 => Err(std::io::ErrorKind::WriteZero.into()),
        n => Ok(n),
    }
}

/// Returns `Pending` once, waking itself at once: the session goes to the back of the run
/// queue, behind the other ready sessions.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Bytes reserved for each read from a client that is in the middle of a request.
const READ_CHUNK: usize = 16 * 1024;

/// A read into an empty buffer goes through this much stack first.
const SMALL_READ: usize = 2048;

/// One poll of a read, never a wait (`None`: nothing there after all): the session must keep
/// writing replies while the client sends nothing more, and a readiness can be stale after a
/// read that filled the buffer. Polled through `AsyncRead` rather than `try_read`: tokio clears
/// the readiness after a short read, which saves a `recv` that would return `EAGAIN`.
///
/// Most reads start with an empty buffer (the previous requests were all parsed) and bring a
/// few small requests: those are read on the stack and copied into a buffer of their own size,
/// instead of allocating (and freeing, once parsed) a 16 KiB buffer for every request.
fn read_now(rd: &mut impl ClientRead, buf: &mut BytesMut) -> Option<std::io::Result<usize>> {
    if buf.is_empty() {
        let mut small = [0u8; SMALL_READ];
        let read = rd.read(&mut small).now_or_never();
        if let Some(Ok(n)) = read {
            buf.extend_from_slice(&small[..n]);
        }
        return read;
    }
    buf.reserve(READ_CHUNK);
    rd.read_buf(buf).now_or_never()
}

/// At shutdown, at most this much already-received input is still read (more if a single
/// value may be larger).
const FINAL_READ_LIMIT: usize = 4 * 1024 * 1024;

/// How long a closing session keeps reading (and discarding) input, waiting for the client to
/// close its side.
const LINGER: Duration = Duration::from_secs(1);

/// Closes a session after its last reply: FIN first, then read and discard whatever the client
/// still sends until it closes too (at most [`LINGER`]). Closing a socket with unread input makes
/// the kernel send a reset, which can destroy replies the client has not received yet.
async fn close(mut rd: impl ClientRead, mut wr: impl AsyncWrite + Unpin, eof_seen: bool) {
    let _ = wr.shutdown().await;
    if eof_seen {
        return;
    }
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Counts a finished request and appends its reply.
fn finish(
    shared: &Shared,
    out: &mut BytesMut,
    budget: &mut OutputBudget,
    reply: Reply,
    info: RequestInfo,
) {
    let m = shared.metrics.client.cmd(info.cmd);
    m.latency.observe(info.start.elapsed().as_secs_f64());
    if reply.is_server_error() {
        m.server_errors.inc();
    } else if reply.is_client_error() {
        m.client_errors.inc();
    }
    // Keys of a failed retrieval are neither hits nor misses (the error counters have them).
    if info.keys > 0 && !reply.is_server_error() {
        let hits = match &reply {
            Reply::Values(v) => v.len() as u64,
            _ => 0,
        };
        shared.metrics.client.get_hits.inc_by(hits);
        shared
            .metrics
            .client
            .get_misses
            .inc_by(u64::from(info.keys).saturating_sub(hits));
    }
    local::count_result(&shared.metrics, info.cmd, &reply);
    let before = out.len();
    if !info.noreply {
        reply.write_to(out);
    }
    budget.answered(info.keys, out.len() - before);
}

/// Turns one parsed request into a reply future (already sent to its backends).
fn dispatch(
    parsed: Result<Request, Invalid>,
    snapshot: &Snapshot,
    router: &Router,
    shared: &Arc<Shared>,
    lane: crate::backend::Lane,
) -> InFlight {
    let start = Instant::now();
    let info = |cmd, noreply| RequestInfo {
        cmd,
        start,
        noreply,
        keys: 0,
        close: false,
        barrier: false,
    };
    let request = match parsed {
        Ok(r) => r,
        Err(invalid) => {
            shared.metrics.client.cmd(Cmd::Invalid).requests.inc();
            let mut m = info(Cmd::Invalid, invalid.noreply);
            m.close = invalid.close;
            let line = invalid.reply;
            let fut = match invalid.forget {
                // A refused `set` removes the old value, as memcached does.
                Some(forget) => {
                    let (delete, barrier) = route::dispatch(Command::Keyed(*forget), router, lane);
                    m.barrier = barrier;
                    Box::pin(async move {
                        delete.await;
                        Reply::Static(line)
                    })
                }
                None => ready(Reply::Static(line)),
            };
            return InFlight { fut, info: Some(m) };
        }
    };
    let (fut, info) = match request {
        Request::Op { op, noreply } => {
            let cmd = Cmd::from(&op);
            let mut m = info(cmd, noreply);
            if let Command::Retrieve(crate::protocol::command::Retrieve { keys, .. }) = &op {
                m.keys = keys.len() as u32;
            }
            let (fut, barrier) = route::dispatch(op, router, lane);
            m.barrier = barrier;
            (fut, m)
        }
        Request::Version => (
            ready(Reply::Static(local::VERSION)),
            info(Cmd::Version, false),
        ),
        Request::Verbosity { noreply } => (
            ready(Reply::Static(reply::OK)),
            info(Cmd::Verbosity, noreply),
        ),
        Request::Quit => {
            let mut m = info(Cmd::Quit, true);
            m.close = true;
            (ready(Reply::None), m)
        }
        Request::Stats { group } => (
            ready(local::stats(shared, group.as_deref())),
            info(Cmd::Stats, false),
        ),
        Request::FlushAll { delay, noreply } => (
            local::flush_all(snapshot, lane, delay),
            info(Cmd::FlushAll, noreply),
        ),
        Request::CacheMemlimit { megabytes, noreply } => (
            local::cache_memlimit(snapshot, lane, megabytes),
            info(Cmd::CacheMemlimit, noreply),
        ),
        Request::MetaNoop => (
            ready(Reply::Static(reply::META_NOOP)),
            info(Cmd::MetaNoop, false),
        ),
        Request::Answered(line) => (ready(Reply::Static(line)), info(Cmd::Get, false)),
    };
    shared.metrics.client.cmd(info.cmd).requests.inc();
    InFlight {
        fut,
        info: Some(info),
    }
}

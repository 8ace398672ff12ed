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
//! Sessions are paced ([`super::fair`]): a session sends a few requests per turn of the
//! scheduler, one that pipelines more than that sends only in one of a few heavy turns, and
//! when sessions compete for the backends each has a fair share of the requests in flight.
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

use super::fair::{self, Pace, Share};
use super::in_order::InOrder;
use super::local;
use super::output::OutputBudget;
use super::replies::Replies;
use super::stop::StopWatch;
use super::stream::{ClientRead, ClientStream};
use crate::backend::Lane;
use crate::config::ListenAddress;
use crate::io::yield_once;
use crate::metrics::Cmd;
use crate::protocol::command::{Command, Retrieve};
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

impl RequestInfo {
    fn new(cmd: Cmd, start: Instant, noreply: bool) -> Self {
        RequestInfo {
            cmd,
            start,
            noreply,
            keys: 0,
            close: false,
            barrier: false,
        }
    }
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
    lane: Lane,
    mut shutdown: StopWatch,
    listener: Arc<ListenAddress>,
) {
    let mut session = Session::<S>::new(stream, shared, lane, listener);
    loop {
        match session.send_ready() {
            Next::Wait => {}
            Next::Yield => {
                yield_once().await;
                continue;
            }
            Next::Close => {
                let Session { rd, wr, flags, .. } = session;
                // Boxed: the closing steps are large and run once; keeping them inline made
                // every idle session future (one per client) bigger.
                Box::pin(close(rd, wr, flags.eof)).await;
                return;
            }
        }
        if session.wait(&mut shutdown).await.is_err() {
            return;
        }
    }
}

/// What a session does after sending what it could.
enum Next {
    /// Wait for answers, the client, a heavy turn or shutdown.
    Wait,
    /// Let the other sessions run first: it has more ready to send.
    Yield,
    /// Everything is answered and nothing more will be read: close.
    Close,
}

/// The client went away or its socket failed: the session ends without a goodbye.
struct Gone;

/// Where a session is in its life.
#[derive(Debug, Default)]
struct Flags {
    /// Written but not flushed: TLS keeps what the socket did not take until a flush (on TCP
    /// the flush is free).
    unflushed: bool,
    /// `quit` or an input we cannot resync after: nothing after it is parsed; pending requests
    /// are answered, then we close.
    closing: bool,
    /// The client half-closed, or shutdown: no more reads, but every complete request already
    /// received is still answered.
    input_done: bool,
    /// The client closed its side: nothing to wait for when we close.
    eof: bool,
    /// A barrier request (tiered route) or a reload is in flight: nothing more is sent until
    /// what is pending is answered.
    barrier: bool,
}

/// One client connection's state between two wake-ups.
struct Session<S: ClientStream> {
    rd: S::Read,
    wr: S::Write,
    shared: Arc<Shared>,
    listener: Arc<ListenAddress>,
    lane: Lane,
    limits: Limits,
    max_inflight: usize,
    decoder: Decoder,
    pending: InOrder<InFlight>,
    budget: OutputBudget,
    /// This session's part of the requests in flight from all sessions (see `fair`).
    share: Share,
    pace: Pace,
    /// When the heavy turn this session holds goes back at the latest.
    turn_until: Instant,
    /// Replies not yet written. Buffers are allocated when there is something to hold and
    /// given back once empty, so an idle connection costs little memory.
    out: Replies,
    /// Replies in `out` (whole or in part) the client has not taken yet: they count against
    /// `max_inflight` with the requests still in flight.
    unread: usize,
    flags: Flags,
    /// The snapshot generation of the requests in `pending`.
    generation: u64,
}

impl<S: ClientStream> Session<S> {
    fn new(stream: S, shared: Arc<Shared>, lane: Lane, listener: Arc<ListenAddress>) -> Self {
        let snapshot = shared.snapshot();
        let listen = &snapshot.config.listen;
        let limits = Limits {
            max_value_size: listen.max_value_size,
            max_line_size: listen.max_line_size,
        };
        let (rd, wr) = stream.into_split();
        Session {
            rd,
            wr,
            lane,
            limits,
            max_inflight: listen.max_inflight.max(1),
            decoder: Decoder::new(limits),
            pending: InOrder::new(),
            budget: OutputBudget::new(listen.max_client_output, listen.max_value_size),
            share: Share::new(),
            pace: Pace::default(),
            turn_until: Instant::now(),
            out: Replies::new(),
            unread: 0,
            flags: Flags::default(),
            generation: snapshot.generation,
            listener,
            shared: shared.clone(),
        }
    }

    /// Whether one more request may go out: under the session's window (its share of the
    /// requests in flight, replies the client has not read included) and its byte budget.
    fn may_send(&self, window: usize) -> bool {
        self.pending.len() + self.unread < window && self.budget.may_send(self.out.len())
    }

    /// Parses and sends on what the pace allows, then says what to do next.
    fn send_ready(&mut self) -> Next {
        let window = self.share.window(self.max_inflight);
        let limit = self.pace.limit();
        let (mut sent, mut drained) = (0, false);
        while !self.flags.closing && !self.flags.barrier && sent < limit && self.may_send(window) {
            let snapshot = self.shared.current();
            if snapshot.generation != self.generation && !self.pending.is_empty() {
                // A reload: what is in flight went out on the previous snapshot. Let it finish
                // before anything goes out on the new one, so a client's requests never run on
                // two configs at once. A server whose settings changed is a new set of backend
                // connections, and a pipelined `get` on one could overtake the `set` before it
                // on the other.
                self.flags.barrier = true;
                break;
            }
            let Some(parsed) = self.decoder.next_request() else {
                drained = true;
                break;
            };
            self.generation = snapshot.generation;
            let router = snapshot.router_for(&self.listener);
            let in_flight = dispatch(parsed, &snapshot, router, &self.shared, self.lane);
            let info = in_flight.info.as_ref().expect("fresh");
            self.flags.closing |= info.close;
            self.flags.barrier |= info.barrier;
            self.budget.sent(info.keys);
            self.pending.push_back(in_flight);
            sent += 1;
        }
        let yield_now = self.pace.sent(sent, drained);
        if yield_now && self.pace.holds_turn() {
            self.turn_until = Instant::now() + fair::TURN_HOLD;
        }
        self.share.publish(self.pending.len());
        // An idle connection keeps no buffer: it is allocated again by the next read (a malloc
        // is far cheaper than the syscalls around it, and 10,000 idle clients cost 160 MB less).
        self.decoder.release_if_empty(0);
        let writing = !self.out.is_empty() || self.flags.unflushed;
        let flags = &self.flags;
        // With nothing pending, the loop above stopped only because no complete request is left.
        if self.pending.is_empty() && !writing && (flags.closing || flags.input_done) {
            return Next::Close;
        }
        if yield_now {
            // More may be parsed, but other sessions come first: their requests queue on the
            // same backend connections (memcached, too, serves a connection a few requests per
            // turn). The replies and reads wait one turn of the scheduler.
            return Next::Yield;
        }
        Next::Wait
    }

    /// Waits for the first of: answers to take, the socket taking replies, client input, a
    /// heavy turn, the end of a held turn, shutdown.
    async fn wait(&mut self, shutdown: &mut StopWatch) -> Result<(), Gone> {
        let window = self.share.window(self.max_inflight);
        let flags = &self.flags;
        let can_send = !flags.closing && !flags.barrier && self.may_send(window);
        let writing = !self.out.is_empty() || flags.unflushed;
        let can_read = can_send && !flags.input_done && self.pace.reads();
        // A heavy session queues for a turn only when it could use one: its client has taken
        // every reply, and there is room for more.
        let wants_turn = can_send && !writing && self.pace.wants_turn();
        let holds_turn = self.pace.holds_turn();
        let drain = !self.pending.is_empty() && self.out.len() < DRAIN_LIMIT;
        let watch_shutdown = !flags.closing && !flags.input_done;
        tokio::select! {
            // Answers are taken into the write buffer up to DRAIN_LIMIT bytes; past that they
            // wait in `pending` (counted by the budget) until the client reads, so a client
            // that does not read large values never makes the buffer grow by doubling.
            Some((reply, info)) = self.pending.next(), if drain => self.take_answers(reply, info),
            // Cancel safe: a write that did not complete wrote nothing; a dropped flush keeps
            // its data buffered.
            r = self.out.write_or_flush(&mut self.wr), if writing => {
                let n = r.map_err(|_| Gone)?;
                self.flags.unflushed = n > 0 || !self.out.is_empty();
                if self.out.is_empty() {
                    self.unread = 0;
                    self.out.release_if_empty();
                }
                Ok(())
            }
            // Wait for input before reserving the read buffer: an idle client holds none.
            r = self.rd.readable(), if can_read => {
                r.map_err(|_| Gone)?;
                match read_now(&mut self.rd, self.decoder.buffer()) {
                    // A half-closed client (`printf … | nc`) still gets its replies.
                    Some(Ok(0)) => {
                        self.flags.input_done = true;
                        self.flags.eof = true;
                    }
                    Some(Ok(_)) | None => {}
                    Some(Err(_)) => return Err(Gone),
                }
                Ok(())
            }
            turn = fair::next_turn(), if wants_turn => {
                self.pace.start(turn);
                self.turn_until = Instant::now() + fair::TURN_HOLD;
                Ok(())
            }
            () = turn_ends(self.turn_until), if holds_turn => {
                self.pace.expire();
                Ok(())
            }
            () = shutdown.stopped(), if watch_shutdown => {
                // Requests the client sent before the shutdown may still sit in the socket
                // (unread because of back-pressure, or ready at the same moment): take them
                // too, so everything sent before the signal is answered.
                let limit = FINAL_READ_LIMIT.max(self.limits.max_value_size);
                self.flags.eof = self.rd.read_arrived(self.decoder.buffer(), limit);
                self.flags.input_done = true;
                Ok(())
            }
        }
    }

    /// Takes the first ready answer and every other one ready behind it into the write buffer,
    /// and writes what the socket takes at once.
    fn take_answers(&mut self, reply: Reply, info: RequestInfo) -> Result<(), Gone> {
        finish(&self.shared, &mut self.out, &mut self.budget, reply, info);
        self.unread += 1;
        while self.out.len() < DRAIN_LIMIT {
            let Some(Some((reply, info))) = self.pending.next().now_or_never() else {
                break;
            };
            finish(&self.shared, &mut self.out, &mut self.budget, reply, info);
            self.unread += 1;
        }
        self.share.publish(self.pending.len());
        if self.pending.is_empty() {
            self.flags.barrier = false;
        }
        // Written at once when the socket takes it (the usual case: one syscall per batch of
        // ready replies, flushed once); what it does not take is written by `wait` while
        // answers keep being taken off the backends.
        write_now(&mut self.wr, &mut self.out, &mut self.flags.unflushed).map_err(|_| Gone)?;
        if self.out.is_empty() {
            self.unread = 0;
        }
        // A turn goes back once its requests are answered, or as soon as the client stops
        // taking replies: a client that does not read holds no turn.
        self.pace
            .answered(self.pending.is_empty(), !self.out.is_empty());
        Ok(())
    }
}

/// Replies taken into the write buffer before it is written: about a thousand small answers,
/// or one large value beyond it.
const DRAIN_LIMIT: usize = 256 * 1024;

/// Writes `out` as far as the socket takes it now, flushing once it is all written; never
/// waits. `unflushed` says whether a flush is still owed.
fn write_now(
    wr: &mut (impl AsyncWrite + Unpin),
    out: &mut Replies,
    unflushed: &mut bool,
) -> std::io::Result<()> {
    loop {
        match out.write_or_flush(wr).now_or_never() {
            Some(Ok(0)) => {
                *unflushed = false;
                out.release_if_empty();
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

/// Waits until a held heavy turn goes back. An async fn, so a session that holds no turn does
/// not build a timer on every wake-up: `select!` evaluates every branch's future, enabled or
/// not, and `sleep_until` looks up the runtime's timer as it is built. The timer is boxed: it
/// is only built for heavy sessions, and inline it made every session future (one per client,
/// tests/session_size.rs) bigger.
async fn turn_ends(at: Instant) {
    Box::pin(tokio::time::sleep_until(at.into())).await
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
    out: &mut Replies,
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
        out.push(&reply);
    }
    budget.answered(info.keys, out.len() - before);
}

/// Turns one parsed request into a reply future (already sent to its backends).
fn dispatch(
    parsed: Result<Request, Invalid>,
    snapshot: &Snapshot,
    router: &Router,
    shared: &Arc<Shared>,
    lane: Lane,
) -> InFlight {
    let start = Instant::now();
    let (fut, info) = match parsed {
        Ok(request) => answer(request, snapshot, router, shared, lane, start),
        Err(invalid) => refuse(invalid, router, lane, start),
    };
    shared.metrics.client.cmd(info.cmd).requests.inc();
    InFlight {
        fut,
        info: Some(info),
    }
}

/// A valid request: routed to the backends, or answered by memroute itself.
fn answer(
    request: Request,
    snapshot: &Snapshot,
    router: &Router,
    shared: &Arc<Shared>,
    lane: Lane,
    start: Instant,
) -> (ReplyFuture, RequestInfo) {
    let info = |cmd, noreply| RequestInfo::new(cmd, start, noreply);
    match request {
        Request::Op { op, noreply } => {
            let mut m = info(Cmd::from(&op), noreply);
            if let Command::Retrieve(Retrieve { keys, .. }) = &op {
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
    }
}

/// An invalid request: memcached's error line.
fn refuse(
    invalid: Invalid,
    router: &Router,
    lane: Lane,
    start: Instant,
) -> (ReplyFuture, RequestInfo) {
    let mut m = RequestInfo::new(Cmd::Invalid, start, invalid.noreply);
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
    (fut, m)
}

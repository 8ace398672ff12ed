//! One client connection.
//!
//! Requests are parsed and dispatched as they arrive (pipelining): each becomes a future in a
//! `FuturesOrdered`, so answers from different servers complete concurrently but are written in
//! request order. Ready replies are gathered into one buffer and written with one syscall.
//! Back-pressure: at `max_inflight` outstanding requests, or while the client is not reading its
//! replies, the session stops reading from the client.
//!
//! Requests on tiered routes take several backend round trips; one of them is a barrier: nothing
//! after it is dispatched until it completes, so a pipelined `incr` then `get` on a migrating key
//! behaves as it would on one memcached. A config reload is a barrier too: requests dispatched on
//! the new snapshot wait until those in flight on the old one are answered.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use futures_util::FutureExt;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::local;
use crate::metrics::Cmd;
use crate::protocol::command::{Op, Retrieval, Storage};
use crate::protocol::reply::{self, Reply};
use crate::protocol::request::{Decoder, Invalid, Limits, Request};
use crate::route::forward::{self, ReplyFuture, ready};
use crate::route::tiers;
use crate::runtime::{Shared, Snapshot};

/// Bookkeeping carried with each outstanding request.
struct Meta {
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
struct Tagged {
    fut: ReplyFuture,
    meta: Option<Meta>,
}

impl Future for Tagged {
    type Output = (Reply, Meta);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let reply = std::task::ready!(self.fut.as_mut().poll(cx));
        // `meta` is only taken here, once, when the future completes.
        let meta = self.meta.take().expect("polled after completion");
        Poll::Ready((reply, meta))
    }
}

/// Runs a client session until the client leaves, sends `quit`, or shutdown drains it.
pub async fn run(
    stream: TcpStream,
    shared: Arc<Shared>,
    lane: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let listen = shared.snapshot().config.listen.clone();
    let limits = Limits {
        max_value_size: listen.max_value_size,
        max_line_size: listen.max_line_size,
    };
    let max_inflight = listen.max_inflight.max(1);
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = Decoder::new(limits);
    let mut pending: FuturesOrdered<Tagged> = FuturesOrdered::new();
    let mut out = BytesMut::with_capacity(16 * 1024);
    // No more requests are read once this is set; pending ones are answered, then we close.
    let mut closing = false;
    let mut barrier = false;
    // The snapshot generation of the requests in `pending`.
    let mut generation = shared.snapshot().generation;

    loop {
        while !closing && !barrier && pending.len() < max_inflight {
            let snapshot = shared.snapshot();
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
            let tagged = dispatch(parsed, &snapshot, &shared, lane);
            let meta = tagged.meta.as_ref().expect("fresh");
            closing |= meta.close;
            barrier |= meta.barrier;
            pending.push_back(tagged);
        }
        if closing && pending.is_empty() {
            let _ = wr.shutdown().await;
            return;
        }
        let can_read = !closing && !barrier && pending.len() < max_inflight;
        tokio::select! {
            Some((reply, meta)) = pending.next(), if !pending.is_empty() => {
                finish(&shared, &mut out, reply, meta);
                while let Some(Some((reply, meta))) = pending.next().now_or_never() {
                    finish(&shared, &mut out, reply, meta);
                }
                if pending.is_empty() {
                    barrier = false;
                }
                if !out.is_empty() {
                    if wr.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            }
            r = rd.read_buf(decoder.buffer()), if can_read => match r {
                // A half-closed client (`printf … | nc`) still gets its replies.
                Ok(0) => closing = true,
                Ok(_) => {}
                Err(_) => return,
            },
            changed = shutdown.changed(), if !closing => {
                closing = changed.is_err() || *shutdown.borrow();
            }
        }
    }
}

/// Counts a finished request and appends its reply.
fn finish(shared: &Shared, out: &mut BytesMut, reply: Reply, meta: Meta) {
    let m = shared.metrics.cmd(meta.cmd);
    m.latency.observe(meta.start.elapsed().as_secs_f64());
    if reply.is_server_error() {
        m.server_errors.inc();
    } else if reply.is_client_error() {
        m.client_errors.inc();
    }
    // Keys of a failed retrieval are neither hits nor misses (the error counters have them).
    if meta.keys > 0 && !reply.is_server_error() {
        let hits = match &reply {
            Reply::Values(v) => v.len() as u64,
            _ => 0,
        };
        shared.metrics.get_hits.inc_by(hits);
        shared
            .metrics
            .get_misses
            .inc_by(u64::from(meta.keys).saturating_sub(hits));
    }
    if !meta.noreply {
        reply.write_to(out);
    }
}

/// Turns one parsed request into a reply future (already sent to its backends).
fn dispatch(
    parsed: Result<Request, Invalid>,
    snapshot: &Snapshot,
    shared: &Arc<Shared>,
    lane: usize,
) -> Tagged {
    let start = Instant::now();
    let meta = |cmd, noreply| Meta {
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
            shared.metrics.cmd(Cmd::Invalid).requests.inc();
            let mut m = meta(Cmd::Invalid, invalid.noreply);
            m.close = invalid.close;
            let line = invalid.reply;
            let fut = match invalid.forget {
                // A refused `set` removes the old value, as memcached does.
                Some(key) => {
                    let (delete, barrier) = route_op(Op::Delete { key }, snapshot, lane);
                    m.barrier = barrier;
                    Box::pin(async move {
                        delete.await;
                        Reply::Static(line)
                    })
                }
                None => ready(Reply::Static(line)),
            };
            return Tagged { fut, meta: Some(m) };
        }
    };
    let (fut, meta) = match request {
        Request::Op { op, noreply } => {
            let cmd = op_cmd(&op);
            let mut m = meta(cmd, noreply);
            if let Op::Get { keys, .. } = &op {
                m.keys = keys.len() as u32;
            }
            let (fut, barrier) = route_op(op, snapshot, lane);
            m.barrier = barrier;
            (fut, m)
        }
        Request::Version => (
            ready(Reply::Static(local::VERSION)),
            meta(Cmd::Version, false),
        ),
        Request::Verbosity { noreply } => (
            ready(Reply::Static(reply::OK)),
            meta(Cmd::Verbosity, noreply),
        ),
        Request::Quit => {
            let mut m = meta(Cmd::Quit, true);
            m.close = true;
            (ready(Reply::None), m)
        }
        Request::Stats { group } => (
            ready(local::stats(shared, group.as_deref())),
            meta(Cmd::Stats, false),
        ),
        Request::FlushAll { delay, noreply } => (
            local::flush_all(snapshot, lane, delay),
            meta(Cmd::FlushAll, noreply),
        ),
        Request::Fixed(line) => (ready(Reply::Static(line)), meta(Cmd::Get, false)),
    };
    shared.metrics.cmd(meta.cmd).requests.inc();
    Tagged {
        fut,
        meta: Some(meta),
    }
}

/// Routes a keyed op; the flag says whether it is a barrier (tiered route).
fn route_op(op: Op, snapshot: &Snapshot, lane: usize) -> (ReplyFuture, bool) {
    let router = &snapshot.router;
    if let Op::Get {
        kind,
        exptime,
        keys,
    } = op
    {
        if keys
            .iter()
            .any(|k| router.route(k).is_some_and(|r| r.is_tiered()))
        {
            return (tiers::retrieve(router, lane, kind, exptime, keys), true);
        }
        return (forward::multi_get(router, lane, kind, exptime, keys), false);
    }
    let Some(route) = op.key().and_then(|k| router.route(k)) else {
        return (ready(Reply::Static(reply::NO_ROUTE)), false);
    };
    if route.is_tiered() {
        (tiers::dispatch(route.clone(), lane, op), true)
    } else {
        (forward::single(route, lane, op), false)
    }
}

fn op_cmd(op: &Op) -> Cmd {
    match op {
        Op::Get {
            kind: Retrieval::Get,
            ..
        } => Cmd::Get,
        Op::Get {
            kind: Retrieval::Gets,
            ..
        } => Cmd::Gets,
        Op::Get {
            kind: Retrieval::Gat,
            ..
        } => Cmd::Gat,
        Op::Get {
            kind: Retrieval::Gats,
            ..
        } => Cmd::Gats,
        Op::Store { kind, .. } => match kind {
            Storage::Set => Cmd::Set,
            Storage::Add => Cmd::Add,
            Storage::Replace => Cmd::Replace,
            Storage::Append => Cmd::Append,
            Storage::Prepend => Cmd::Prepend,
            Storage::Cas => Cmd::Cas,
        },
        Op::Delete { .. } => Cmd::Delete,
        Op::Arith { incr: true, .. } => Cmd::Incr,
        Op::Arith { incr: false, .. } => Cmd::Decr,
        Op::Touch { .. } => Cmd::Touch,
        Op::MetaGet { .. } => Cmd::Get,
        Op::FlushAll { .. } => Cmd::FlushAll,
    }
}

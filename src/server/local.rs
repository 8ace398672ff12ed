//! Commands the proxy answers itself: `version`, the `stats` family ([`stats`]), and the admin
//! commands that fan out to every backend server (`flush_all`, `cache_memlimit`).
//!
//! The fan-out commands change every server of every pool, so they share one switch,
//! `[listen] allow_flush_all` (off by default): while it is off they are refused with a
//! `SERVER_ERROR … disabled` line and no backend sees them.

pub mod stats;

use std::collections::HashSet;
use std::sync::Arc;

use crate::backend::{Lane, Server};
use crate::metrics::{Cmd, Metrics};
use crate::protocol::command::Op;
use crate::protocol::reply::{self, Reply};
use crate::route::{ReplyFuture, ready, to_reply};
use crate::state::Snapshot;

pub use stats::stats;

/// `cache_memlimit` while `[listen] allow_flush_all` is false.
pub const MEMLIMIT_DISABLED: &[u8] = b"SERVER_ERROR cache_memlimit disabled\r\n";

/// `VERSION <memroute version>`.
pub const VERSION: &[u8] = concat!("VERSION ", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes();

/// `flush_all`: refused unless allowed; otherwise sent to every server of every pool, `OK` only
/// if every server answered `OK`.
pub fn flush_all(snapshot: &Snapshot, lane: Lane, delay: Option<i32>) -> ReplyFuture {
    if !snapshot.config.listen.allow_flush_all {
        return ready(Reply::Static(reply::FLUSH_DISABLED));
    }
    fan_out(snapshot, lane, Op::FlushAll { delay })
}

/// `cache_memlimit <mb>`: behind the same switch as `flush_all`; sent to every server, `OK`
/// only if every server answered `OK`, else the first other answer (memcached's own
/// `MEMLIMIT_TOO_SMALL …` for a limit under 8 MB, a `SERVER_ERROR` for a server that is down).
pub fn cache_memlimit(snapshot: &Snapshot, lane: Lane, megabytes: u64) -> ReplyFuture {
    if !snapshot.config.listen.allow_flush_all {
        return ready(Reply::Static(MEMLIMIT_DISABLED));
    }
    fan_out(snapshot, lane, Op::CacheMemlimit { megabytes })
}

/// Sends `op` to every distinct server of every pool at once; `OK` if all said `OK`.
fn fan_out(snapshot: &Snapshot, lane: Lane, op: Op) -> ReplyFuture {
    let mut seen = HashSet::new();
    let servers: Vec<Arc<Server>> = snapshot
        .pools
        .values()
        .flat_map(|p| p.servers.iter())
        .filter(|s| seen.insert(s.address().to_string()))
        .cloned()
        .collect();
    let sent: Vec<_> = servers.iter().map(|s| s.send(lane, op.clone())).collect();
    Box::pin(async move {
        for pending in sent {
            let answer = match pending {
                Ok(p) => to_reply(p.wait().await),
                Err(e) => Reply::Static(e.reply()),
            };
            let ok = matches!(&answer, Reply::Line(l) if &l[..] == reply::OK);
            if !ok {
                return answer;
            }
        }
        Reply::Static(reply::OK)
    })
}

/// Counts what the cache answered to `delete`, `incr`, `decr`, `cas` and `touch`, for the
/// memcached `*_hits` / `*_misses` / `cas_badval` stats. Errors count as neither.
pub fn count_result(metrics: &Metrics, cmd: Cmd, reply: &Reply) {
    let line: &[u8] = match reply {
        Reply::Static(l) => l,
        Reply::Line(l) => l,
        Reply::Values(_) | Reply::None => return,
    };
    let r = &metrics.client.results;
    let number = line.first().is_some_and(u8::is_ascii_digit);
    let counter = match (cmd, line) {
        (Cmd::Delete, reply::DELETED) => &r.delete_hits,
        (Cmd::Delete, reply::NOT_FOUND) => &r.delete_misses,
        (Cmd::Incr, _) if number => &r.incr_hits,
        (Cmd::Incr, reply::NOT_FOUND) => &r.incr_misses,
        (Cmd::Decr, _) if number => &r.decr_hits,
        (Cmd::Decr, reply::NOT_FOUND) => &r.decr_misses,
        (Cmd::Cas, reply::STORED) => &r.cas_hits,
        (Cmd::Cas, reply::NOT_FOUND) => &r.cas_misses,
        (Cmd::Cas, reply::EXISTS) => &r.cas_badval,
        (Cmd::Touch, reply::TOUCHED) => &r.touch_hits,
        (Cmd::Touch, reply::NOT_FOUND) => &r.touch_misses,
        _ => return,
    };
    counter.inc();
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn results_count_memcached_hits_misses_and_badval() {
        let m = Metrics::new();
        count_result(&m, Cmd::Cas, &Reply::Static(reply::EXISTS));
        count_result(&m, Cmd::Cas, &Reply::Static(reply::STORED));
        count_result(&m, Cmd::Incr, &Reply::Line(Bytes::from_static(b"12\r\n")));
        count_result(&m, Cmd::Incr, &Reply::Static(reply::NOT_FOUND));
        count_result(&m, Cmd::Delete, &Reply::Static(reply::FLUSH_DISABLED));
        let r = &m.client.results;
        assert_eq!(r.cas_badval.get(), 1);
        assert_eq!(r.cas_hits.get(), 1);
        assert_eq!(r.cas_misses.get(), 0);
        assert_eq!(r.incr_hits.get(), 1);
        assert_eq!(r.incr_misses.get(), 1);
        assert_eq!(r.delete_hits.get() + r.delete_misses.get(), 0);
    }
}

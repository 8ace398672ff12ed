//! Commands the proxy answers itself.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;

use crate::backend::Server;
use crate::metrics::{Cmd, Metrics};
use crate::protocol::command::Op;
use crate::protocol::reply::{self, Reply};
use crate::route::forward::{ReplyFuture, ready, to_reply};
use crate::runtime::{Shared, Snapshot, unix_now};

/// `VERSION <memroute version>`.
pub const VERSION: &[u8] = concat!("VERSION ", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes();

/// `stats`: the proxy's own counters under memcached's names where one fits.
pub fn stats(shared: &Shared, group: Option<&[u8]>) -> Reply {
    if group.is_some() {
        // memcached answers ERROR for a stats group it does not know; the proxy has no groups.
        return Reply::Static(reply::ERROR);
    }
    let m: &Metrics = &shared.metrics;
    let count = |cmds: &[Cmd]| cmds.iter().map(|c| m.cmd(*c).requests.get()).sum::<u64>();
    let hits = m.get_hits.get();
    let misses = m.get_misses.get();
    let snapshot = shared.snapshot();
    let servers: usize = snapshot.pools.values().map(|p| p.servers.len()).sum();
    let rows: Vec<(&str, String)> = vec![
        ("pid", std::process::id().to_string()),
        ("uptime", shared.started.elapsed().as_secs().to_string()),
        ("time", unix_now().to_string()),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("pointer_size", (usize::BITS).to_string()),
        ("curr_connections", m.connections.get().to_string()),
        ("total_connections", m.connections_total.get().to_string()),
        (
            "rejected_connections",
            m.connections_refused.get().to_string(),
        ),
        ("cmd_get", (hits + misses).to_string()),
        (
            "cmd_set",
            count(&[
                Cmd::Set,
                Cmd::Add,
                Cmd::Replace,
                Cmd::Append,
                Cmd::Prepend,
                Cmd::Cas,
            ])
            .to_string(),
        ),
        ("cmd_flush", count(&[Cmd::FlushAll]).to_string()),
        (
            "cmd_touch",
            count(&[Cmd::Touch, Cmd::Gat, Cmd::Gats]).to_string(),
        ),
        ("get_hits", hits.to_string()),
        ("get_misses", misses.to_string()),
        ("cmd_delete", count(&[Cmd::Delete]).to_string()),
        ("cmd_incr", count(&[Cmd::Incr]).to_string()),
        ("cmd_decr", count(&[Cmd::Decr]).to_string()),
        ("fallback_copies", m.copies_ok.get().to_string()),
        ("pools", snapshot.pools.len().to_string()),
        ("servers", servers.to_string()),
        (
            "config_loaded_at",
            snapshot
                .loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string(),
        ),
    ];
    let mut text = String::with_capacity(1024);
    for (name, value) in rows {
        let _ = write!(text, "STAT {name} {value}\r\n");
    }
    text.push_str("END\r\n");
    Reply::Line(Bytes::from(text))
}

/// `flush_all`: refused unless allowed; otherwise sent to every server of every pool, `OK` only
/// if every server answered `OK`.
pub fn flush_all(snapshot: &Snapshot, lane: usize, delay: Option<i32>) -> ReplyFuture {
    if !snapshot.config.listen.allow_flush_all {
        return ready(Reply::Static(reply::FLUSH_DISABLED));
    }
    let mut seen = HashSet::new();
    let servers: Vec<Arc<Server>> = snapshot
        .pools
        .values()
        .flat_map(|p| p.servers.iter())
        .filter(|s| seen.insert(s.address.clone()))
        .cloned()
        .collect();
    let sent: Vec<_> = servers
        .iter()
        .map(|s| s.send(lane, Op::FlushAll { delay }))
        .collect();
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

//! memcached's `stats` family, answered by the proxy from its own state.
//!
//! Which subcommand says what (also in README, "memcached's stats"):
//!
//! | command | memroute answers |
//! |---|---|
//! | `stats` | its own counters under memcached's names where the meaning is the same, then memroute's (`pools`, `servers`, …) |
//! | `stats settings` | its own settings under memcached's names (`maxconns`, `tcpport`, `item_size_max`, `flush_enabled`, …) |
//! | `stats slabs`, `stats items` | `END`: a proxy stores no items, so it has no slab classes (the backends' own stats have them) |
//! | `stats sizes` | `STAT sizes_status disabled` + `END`, as memcached with size tracking off |
//! | `stats conns` | one entry per listening socket and client connection, by file descriptor |
//! | `stats cachedump <class> <limit>` | memcached's argument errors, else `END` (no items) |
//! | `stats detail on\|off\|dump` | `dump`: `END`; `off`: `OK`; `on`: `SERVER_ERROR` (per-prefix stats are not collected) |
//! | `stats reset` | `RESET`; the counters of `stats` restart from zero (the Prometheus counters never go back) |
//!
//! Anything else is `ERROR`, as memcached answers a group it does not know.

use std::collections::HashMap;
use std::fmt::Write as _;

use bytes::Bytes;

use crate::metrics::{Cmd, Metrics};
use crate::protocol::exptime::unix_now;
use crate::protocol::number::parse_u32;
use crate::protocol::reply::{self, Reply};
use crate::state::Shared;

/// memcached's `MAX_NUMBER_OF_SLAB_CLASSES`: `stats cachedump` refuses a class id at or above it.
const SLAB_CLASSES: u32 = 64;

/// `stats sizes`: memcached with `-o track_sizes` off answers this.
const SIZES: &[u8] = b"STAT sizes_status disabled\r\nEND\r\n";
/// `stats cachedump` with fewer than two arguments.
const CACHEDUMP_USAGE: &[u8] = b"CLIENT_ERROR bad command line\r\n";
/// `stats cachedump` with a class id of 64 or more.
const ILLEGAL_SLAB: &[u8] = b"CLIENT_ERROR Illegal slab id\r\n";
/// `stats detail` without `on`, `off` or `dump`.
const DETAIL_USAGE: &[u8] = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n";
/// `stats detail on`: memroute does not keep per-prefix counters, so it says so.
const DETAIL_UNSUPPORTED: &[u8] = b"SERVER_ERROR stats detail is not collected by memroute\r\n";

/// `stats [group args…]`.
pub fn stats(shared: &Shared, group: Option<&[u8]>) -> Reply {
    let Some(group) = group else {
        return general(shared);
    };
    let mut args = group.split(|&b| b == b' ').filter(|a| !a.is_empty());
    let sub = args.next().unwrap_or_default();
    let args: Vec<&[u8]> = args.collect();
    match sub {
        b"settings" => settings(shared),
        b"slabs" | b"items" => Reply::Static(reply::END),
        b"sizes" => Reply::Static(SIZES),
        b"conns" => conns(shared),
        b"cachedump" => cachedump(&args),
        b"detail" => detail(&args),
        b"reset" => {
            shared.metrics.stats_baseline.set(counters(&shared.metrics));
            Reply::Static(reply::RESET)
        }
        _ => Reply::Static(reply::ERROR),
    }
}

/// The counters `stats reset` sets back to zero, by their memcached names.
fn counters(m: &Metrics) -> HashMap<&'static str, u64> {
    let count = |cmds: &[Cmd]| {
        cmds.iter()
            .map(|c| m.client.cmd(*c).requests.get())
            .sum::<u64>()
    };
    let r = &m.client.results;
    let hits = m.client.get_hits.get();
    let misses = m.client.get_misses.get();
    HashMap::from([
        ("total_connections", m.client.connections_total.get()),
        ("rejected_connections", m.client.connections_refused.get()),
        ("cmd_get", hits + misses),
        (
            "cmd_set",
            count(&[
                Cmd::Set,
                Cmd::Add,
                Cmd::Replace,
                Cmd::Append,
                Cmd::Prepend,
                Cmd::Cas,
            ]),
        ),
        ("cmd_flush", count(&[Cmd::FlushAll])),
        ("cmd_touch", count(&[Cmd::Touch, Cmd::Gat, Cmd::Gats])),
        ("get_hits", hits),
        ("get_misses", misses),
        ("delete_misses", r.delete_misses.get()),
        ("delete_hits", r.delete_hits.get()),
        ("incr_misses", r.incr_misses.get()),
        ("incr_hits", r.incr_hits.get()),
        ("decr_misses", r.decr_misses.get()),
        ("decr_hits", r.decr_hits.get()),
        ("cas_misses", r.cas_misses.get()),
        ("cas_hits", r.cas_hits.get()),
        ("cas_badval", r.cas_badval.get()),
        ("touch_hits", r.touch_hits.get()),
        ("touch_misses", r.touch_misses.get()),
        ("cmd_delete", count(&[Cmd::Delete])),
        ("cmd_incr", count(&[Cmd::Incr])),
        ("cmd_decr", count(&[Cmd::Decr])),
        ("cmd_mg", count(&[Cmd::MetaGet])),
        ("cmd_ms", count(&[Cmd::MetaSet])),
        ("cmd_md", count(&[Cmd::MetaDelete])),
        ("cmd_ma", count(&[Cmd::MetaArith])),
        ("cmd_mn", count(&[Cmd::MetaNoop])),
        ("cmd_me", count(&[Cmd::MetaDebug])),
        ("fallback_copies", m.tiers.copies_ok.get()),
    ])
}

/// Tokio's worker count: the proxy's `threads`.
fn threads() -> usize {
    tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers())
}

/// `stats`: memcached's names and order first, then memroute's own.
fn general(shared: &Shared) -> Reply {
    let m: &Metrics = &shared.metrics;
    let snapshot = shared.snapshot();
    let now = counters(m);
    let base = shared.metrics.stats_baseline.get();
    let counter = |name: &'static str| {
        let v = now.get(name).copied().unwrap_or(0);
        v.saturating_sub(base.get(name).copied().unwrap_or(0))
            .to_string()
    };
    let servers: usize = snapshot.pools.values().map(|p| p.servers.len()).sum();
    let mut rows: Vec<(&str, String)> = vec![
        ("pid", std::process::id().to_string()),
        ("uptime", shared.started.elapsed().as_secs().to_string()),
        ("time", unix_now().to_string()),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("pointer_size", (usize::BITS).to_string()),
        (
            "max_connections",
            snapshot.config.listen.max_connections.to_string(),
        ),
        ("curr_connections", m.client.connections.get().to_string()),
    ];
    for name in [
        "total_connections",
        "rejected_connections",
        "cmd_get",
        "cmd_set",
        "cmd_flush",
        "cmd_touch",
        "get_hits",
        "get_misses",
        "delete_misses",
        "delete_hits",
        "incr_misses",
        "incr_hits",
        "decr_misses",
        "decr_hits",
        "cas_misses",
        "cas_hits",
        "cas_badval",
        "touch_hits",
        "touch_misses",
    ] {
        rows.push((name, counter(name)));
    }
    rows.push(("accepting_conns", u8::from(shared.is_serving()).to_string()));
    rows.push(("threads", threads().to_string()));
    // memroute's own, after memcached's.
    // Meta commands by command: memcached folds them into its classic counters.
    for name in [
        "cmd_delete",
        "cmd_incr",
        "cmd_decr",
        "cmd_mg",
        "cmd_ms",
        "cmd_md",
        "cmd_ma",
        "cmd_mn",
        "cmd_me",
        "fallback_copies",
    ] {
        rows.push((name, counter(name)));
    }
    rows.push(("pools", snapshot.pools.len().to_string()));
    rows.push(("servers", servers.to_string()));
    rows.push((
        "config_loaded_at",
        snapshot
            .loaded_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string(),
    ));
    lines(rows)
}

/// `stats settings`: the running config under memcached's setting names.
fn settings(shared: &Shared) -> Reply {
    let snapshot = shared.snapshot();
    let listen = &snapshot.config.listen;
    let (host, port) = listen
        .address
        .rsplit_once(':')
        .unwrap_or((listen.address.as_str(), "0"));
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    lines(vec![
        ("maxconns", listen.max_connections.to_string()),
        ("tcpport", port.to_string()),
        ("udpport", "0".to_string()),
        ("inter", host.trim_matches(['[', ']']).to_string()),
        ("domain_socket", "NULL".to_string()),
        ("num_threads", threads().to_string()),
        ("detail_enabled", "no".to_string()),
        ("cas_enabled", "yes".to_string()),
        ("tcp_backlog", "1024".to_string()),
        ("binding_protocol", "ascii".to_string()),
        ("item_size_max", listen.max_value_size.to_string()),
        ("flush_enabled", yes_no(listen.allow_flush_all)),
        // memroute's own.
        ("max_line_size", listen.max_line_size.to_string()),
        ("max_inflight", listen.max_inflight.to_string()),
    ])
}

/// `stats conns`: `<fd>:addr`, `<fd>:listen_addr`, `<fd>:state` as memcached lists them.
fn conns(shared: &Shared) -> Reply {
    let mut text = String::with_capacity(256);
    for (fd, e) in shared.connections.list() {
        let _ = write!(text, "STAT {fd}:addr {}\r\n", e.addr);
        match e.listen_addr {
            Some(l) => {
                let _ = write!(text, "STAT {fd}:listen_addr {l}\r\n");
                let _ = write!(text, "STAT {fd}:state conn_parse_cmd\r\n");
            }
            None => {
                let _ = write!(text, "STAT {fd}:state conn_listening\r\n");
            }
        }
    }
    text.push_str("END\r\n");
    Reply::Line(Bytes::from(text))
}

/// `stats cachedump <class> <limit>`: memcached's checks, then no items.
fn cachedump(args: &[&[u8]]) -> Reply {
    let [class, limit, ..] = args else {
        return Reply::Static(CACHEDUMP_USAGE);
    };
    let (Some(class), Some(_)) = (parse_u32(class), parse_u32(limit)) else {
        return Reply::Static(reply::BAD_FORMAT);
    };
    if class >= SLAB_CLASSES {
        return Reply::Static(ILLEGAL_SLAB);
    }
    Reply::Static(reply::END)
}

/// `stats detail on|off|dump`.
fn detail(args: &[&[u8]]) -> Reply {
    match args.first().copied() {
        Some(b"dump") => Reply::Static(reply::END),
        Some(b"off") => Reply::Static(reply::OK),
        Some(b"on") => Reply::Static(DETAIL_UNSUPPORTED),
        _ => Reply::Static(DETAIL_USAGE),
    }
}

fn lines(rows: Vec<(&str, String)>) -> Reply {
    let mut text = String::with_capacity(rows.len() * 32 + 8);
    for (name, value) in rows {
        let _ = write!(text, "STAT {name} {value}\r\n");
    }
    text.push_str("END\r\n");
    Reply::Line(Bytes::from(text))
}

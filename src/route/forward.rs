//! Plain routing: every op goes to tier 0 of its route. This is the whole request path for
//! single-tier routes, so it does the minimum: locate, queue on the server's connection (at
//! dispatch time, so a client's requests reach each server in the order it sent them), then
//! await the answer.

use std::sync::Arc;

use bytes::Bytes;

use super::{ReplyFuture, Route, Router, ready, to_reply};
use crate::backend::{BackendError, ErrorKind, Lane, Server, server::Pending};
use crate::protocol::backend::{Response, Value, pair};
use crate::protocol::command::{Keyed, Op, Retrieval, Retrieve};
use crate::protocol::reply::{NO_ROUTE, Reply};

/// Sends a single-key command to tier 0 of `route`.
pub fn single(route: &Arc<Route>, lane: Lane, keyed: Keyed) -> ReplyFuture {
    let sent = super::gutter::send(route.owner(), route.gutter.as_ref(), lane, keyed);
    match sent {
        Ok(pending) => Box::pin(async move { to_reply(pending.wait().await) }),
        Err(e) => ready(Reply::Static(e.reply())),
    }
}

/// A retrieval's groups, the group of each key in the client's order, and the gutter TTL.
type Grouped = (Vec<Group>, Vec<u16>, Option<u32>);

/// One server's share of a multi-key retrieval.
struct Group {
    server: Arc<Server>,
    route: Arc<Route>,
    keys: Vec<Bytes>,
}

/// A retrieval whose keys all route to single-tier routes: one request per server, sent at
/// once, answers merged in the client's key order.
pub fn multi_get(router: &Router, lane: Lane, get: Retrieve) -> ReplyFuture {
    let Retrieve {
        kind,
        exptime,
        keys,
    } = get;
    if keys.len() == 1 {
        // The common `get <key>`: no grouping, no extra vectors.
        let Some(route) = router.route(&keys[0]) else {
            return ready(Reply::Static(NO_ROUTE));
        };
        return match super::gutter::locate(route.owner(), route.gutter.as_ref(), &keys[0]) {
            Ok((server, gutter)) => {
                let exptime = gutter_exptime(kind, exptime, gutter);
                let (server, route) = (server.clone(), route.clone());
                send_counted(
                    route,
                    &server,
                    lane,
                    Op::Get {
                        kind,
                        exptime,
                        keys,
                    },
                    1,
                )
            }
            Err(e) => ready(Reply::Static(e.reply())),
        };
    }
    let (mut groups, key_group, gutter_ttl) = match group_by_server(router, &keys) {
        Ok(grouped) => grouped,
        Err(reply) => return ready(reply),
    };
    if groups.len() == 1 {
        let g = groups.pop().expect("one group");
        let exptime = group_exptime(gutter_ttl, &g, kind, exptime);
        let asked = g.keys.len();
        return send_counted(
            g.route,
            &g.server,
            lane,
            Op::Get {
                kind,
                exptime,
                keys,
            },
            asked,
        );
    }
    // (route, keys asked, answer to come); the group's keys move into its request.
    let sent: Vec<(Arc<Route>, usize, Result<Pending, BackendError>)> = groups
        .into_iter()
        .map(|g| {
            let asked = g.keys.len();
            let op = Op::Get {
                kind,
                exptime: group_exptime(gutter_ttl, &g, kind, exptime),
                keys: g.keys,
            };
            (g.route, asked, g.server.send(lane, op))
        })
        .collect();
    Box::pin(gather(sent, key_group))
}

/// Sends `op` to `server` and answers with what it says, counting `asked` tier-0 lookups.
fn send_counted(
    route: Arc<Route>,
    server: &Server,
    lane: Lane,
    op: Op,
    asked: usize,
) -> ReplyFuture {
    match server.send(lane, op) {
        Ok(pending) => Box::pin(async move {
            let answer = pending.wait().await;
            count_tier0(&route, asked, &answer);
            to_reply(answer)
        }),
        Err(e) => ready(Reply::Static(e.reply())),
    }
}

/// The keys of a retrieval grouped by the server that owns each (gutter included), with the
/// group of each key in the client's order, and the gutter TTL if some key went to a gutter.
/// `Err`: the reply when a key has no route or no server.
fn group_by_server(router: &Router, keys: &[Bytes]) -> Result<Grouped, Reply> {
    let mut groups: Vec<Group> = Vec::new();
    // Which group each key went to (u16: a line holds far fewer keys than 65535 servers).
    let mut key_group: Vec<u16> = Vec::with_capacity(keys.len());
    let mut gutter_ttl: Option<u32> = None;
    for key in keys {
        let route = router.route(key).ok_or(Reply::Static(NO_ROUTE))?;
        // A `gat` whose keys partly went to a gutter touches them with the capped TTL
        // ([`group_exptime`]); a gutter server is never a server of the main pool's ring.
        let (server, gutter) = super::gutter::locate(route.owner(), route.gutter.as_ref(), key)
            .map_err(|e| Reply::Static(e.reply()))?;
        gutter_ttl = gutter_ttl.or(gutter.map(|g| g.ttl));
        let g = match groups.iter().position(|g| Arc::ptr_eq(&g.server, server)) {
            Some(g) => g,
            None => {
                groups.push(Group {
                    server: server.clone(),
                    route: route.clone(),
                    // Room for every key left: pushing one by one doubled 4 → 8 → 16, a
                    // `realloc` each, for every server of a 10-key get.
                    keys: Vec::with_capacity(keys.len() - key_group.len()),
                });
                groups.len() - 1
            }
        };
        groups[g].keys.push(key.clone());
        key_group.push(g as u16);
    }
    Ok((groups, key_group, gutter_ttl))
}

/// Awaits every group's answer and merges the hits in the client's key order. A server that
/// fails costs only its keys (left out, as misses); only when all fail is the reply an error.
async fn gather(
    sent: Vec<(Arc<Route>, usize, Result<Pending, BackendError>)>,
    key_group: Vec<u16>,
) -> Reply {
    let mut answers: Vec<(Vec<Value>, usize)> = Vec::with_capacity(sent.len());
    let mut first_error = None;
    let mut failed = 0;
    for (route, asked, pending) in sent {
        let answer = match pending {
            Ok(p) => p.wait().await,
            Err(e) => Err(e),
        };
        count_tier0(&route, asked, &answer);
        match answer {
            Ok(Response::Values(v)) => answers.push((v, asked)),
            Ok(Response::Line(line)) => {
                // An error line from one server: its keys are left out, as misses.
                failed += 1;
                first_error.get_or_insert(Reply::Line(line));
                answers.push((Vec::new(), asked));
            }
            Ok(Response::Meta { .. }) | Err(_) => {
                failed += 1;
                let e = answer.err().unwrap_or_else(|| ErrorKind::Protocol.into());
                first_error.get_or_insert(Reply::Static(e.reply()));
                answers.push((Vec::new(), asked));
            }
        }
    }
    if failed == answers.len() {
        return first_error.unwrap_or(Reply::Static(ErrorKind::Closed.reply()));
    }
    Reply::Values(merge(&key_group, answers))
}

/// The exptime of a `gat`/`gats` sent to a gutter server: capped at its `failover_ttl`.
fn gutter_exptime(kind: Retrieval, exptime: i32, gutter: Option<&super::gutter::Gutter>) -> i32 {
    match (kind, gutter) {
        (Retrieval::Gat | Retrieval::Gats, Some(g)) => super::gutter::cap_exptime(exptime, g.ttl),
        _ => exptime,
    }
}

/// [`gutter_exptime`] for a group: only when some key went to a gutter (`gutter_ttl`) is the
/// group's server looked for among the gutter's.
fn group_exptime(gutter_ttl: Option<u32>, g: &Group, kind: Retrieval, exptime: i32) -> i32 {
    if gutter_ttl.is_none() {
        return exptime;
    }
    let gutter = g
        .route
        .gutter
        .as_ref()
        .filter(|gu| gu.pool.servers.iter().any(|s| Arc::ptr_eq(s, &g.server)));
    gutter_exptime(kind, exptime, gutter)
}

/// Puts each group's hits back in the client's key order: `answers[g]` holds group `g`'s hits and
/// how many keys it asked; [`pair`] gives each of those keys its slot, and walking the client's
/// keys takes the next slot of the key's group, which reproduces what a single memcached would
/// answer, duplicates included.
pub fn merge(key_group: &[u16], answers: Vec<(Vec<Value>, usize)>) -> Vec<Bytes> {
    // Every hit is taken once: the reply's size is known, so it is allocated once.
    let hits = answers.iter().map(|(values, _)| values.len()).sum();
    let mut blocks = Vec::with_capacity(hits);
    let mut slots: Vec<_> = answers
        .into_iter()
        .map(|(values, asked)| pair(values, asked))
        .collect();
    blocks.extend(
        key_group
            .iter()
            .filter_map(|&g| slots.get_mut(g as usize)?.next().flatten())
            .map(|v| v.block),
    );
    blocks
}

/// Counts tier-0 hits and misses of a plain retrieval.
fn count_tier0(route: &Route, asked: usize, answer: &Result<Response, BackendError>) {
    let m = &route.tier_metrics[0];
    match answer {
        Ok(Response::Values(v)) => {
            m.hits.inc_by(v.len() as u64);
            m.misses.inc_by(asked.saturating_sub(v.len()) as u64);
        }
        _ => m.errors.inc_by(asked as u64),
    }
}

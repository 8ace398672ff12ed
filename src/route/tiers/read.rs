//! Retrievals on tiered routes.
//!
//! Tier 0 is asked for every key (one request per server). Keys it misses are asked of tier 1,
//! then tier 2, … again one request per server per tier. A lower-tier error counts as a miss for
//! `get`; `gets`/`gat`/`gats` answer `SERVER_ERROR` for a key no tier could settle
//! (`docs/tiers.md`).
//! `get` answers lower-tier hits at once and, with `warm = true`, copies them up in the
//! background. `gets`/`gat`/`gats` copy first (whatever `warm` says: their answer must come from
//! tier 0) and re-issue the command to tier 0, so the CAS token a later `cas` uses and the TTL a
//! `gat` sets are tier 0's.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;

use super::copy::copy_up;
use crate::backend::{BackendError, ErrorKind, Lane, Pool, Server};
use crate::protocol::backend::{Response, Value, pair};
use crate::protocol::command::{Op, Retrieval, Retrieve};
use crate::protocol::reply::{NO_ROUTE, Reply};
use crate::route::{ReplyFuture, group, ready, to_reply};
use crate::route::{Route, Router};

/// What one tier said about one key.
#[derive(Clone)]
enum Slot {
    Hit(Value),
    Miss,
    Error(BackendError),
}

/// A retrieval where at least one key is on a tiered route.
pub fn retrieve(router: &Router, lane: Lane, get: Retrieve) -> ReplyFuture {
    let routes: Option<Vec<Arc<Route>>> =
        get.keys.iter().map(|k| router.route(k).cloned()).collect();
    let Some(routes) = routes else {
        return ready(Reply::Static(NO_ROUTE));
    };
    Box::pin(async move {
        let all: Vec<usize> = (0..get.keys.len()).collect();
        let mut slots = lookup(lane, get.kind, get.exptime, &get.keys, &routes, &all, 0).await;
        if slots.iter().all(|s| matches!(s, Slot::Error(_))) {
            if let Some(Slot::Error(e)) = slots.first() {
                return Reply::Static(e.reply());
            }
        }
        let below = fall_through(lane, &get.keys, &routes, &mut slots).await;
        if get.kind != Retrieval::Get {
            // gets/gat/gats of a key tier 0 lacks while a lower tier that may hold it cannot be
            // asked: a miss here would lead to an add or set over a value that exists.
            let unsure =
                (0..get.keys.len()).find(|&i| below.unsure[i] && matches!(slots[i], Slot::Miss));
            if let Some(i) = unsure {
                return to_reply(super::unknown(&routes[i], get.kind.verb()));
            }
        }
        let served_by = below.served_by;
        let from_below: Vec<usize> = (0..get.keys.len()).filter(|&i| served_by[i] > 0).collect();
        if !from_below.is_empty() {
            if get.kind == Retrieval::Get {
                warm_in_background(lane, &get.keys, &routes, &served_by, &from_below);
            } else {
                copy_then_reread(lane, &get, &routes, &served_by, &from_below, &mut slots).await;
            }
        }
        let blocks = slots
            .into_iter()
            .filter_map(|s| match s {
                Slot::Hit(v) => Some(v.block),
                _ => None,
            })
            .collect();
        Reply::Values(blocks)
    })
}

/// What the lower tiers added to a retrieval.
struct Below {
    /// The tier that served each key (0: tier 0, or nobody).
    served_by: Vec<usize>,
    /// Keys some lower tier could not answer for.
    unsure: Vec<bool>,
}

/// Falls through, tier by tier, for the keys tier 0 missed, filling `slots` with lower-tier
/// hits. A key tier 0 has a tombstone for is deleted: nothing below is asked again or served.
async fn fall_through(
    lane: Lane,
    keys: &[Bytes],
    routes: &[Arc<Route>],
    slots: &mut [Slot],
) -> Below {
    let depth = routes.iter().map(|r| r.tiers.len()).max().unwrap_or(1);
    let mut served_by: Vec<usize> = vec![0; keys.len()];
    let mut deleted = vec![false; keys.len()];
    let mut unsure = vec![false; keys.len()];
    let mut tombstones_checked = false;
    for tier in 1..depth {
        let missing: Vec<usize> = (0..keys.len())
            .filter(|&i| {
                matches!(slots[i], Slot::Miss)
                    && !deleted[i]
                    && routes[i].tiers.len() > tier
                    && routes[i].asks(tier, &keys[i])
            })
            .collect();
        if missing.is_empty() {
            continue;
        }
        let below = lookup(lane, Retrieval::Get, 0, keys, routes, &missing, tier);
        let found = if tombstones_checked {
            below.await
        } else {
            // Once, for every key that will be looked up below, at the same time as the
            // first lower tier.
            tombstones_checked = true;
            let (found, tombs) = tokio::join!(below, tombstones(lane, keys, routes, slots, tier));
            for i in tombs {
                deleted[i] = true;
                routes[i].metrics.tiers.tombstones.honored.inc();
            }
            found
        };
        for i in missing {
            if deleted[i] {
                continue;
            }
            match &found[i] {
                Slot::Hit(_) => {
                    slots[i] = found[i].clone();
                    served_by[i] = tier;
                }
                Slot::Error(_) => unsure[i] = true,
                Slot::Miss => {}
            }
        }
    }
    Below { served_by, unsure }
}

/// `get`: answer now, copy up later (each distinct key once).
fn warm_in_background(
    lane: Lane,
    keys: &[Bytes],
    routes: &[Arc<Route>],
    served_by: &[usize],
    idx: &[usize],
) {
    let mut seen: Vec<&Bytes> = Vec::new();
    for &i in idx {
        if !routes[i].warms(served_by[i]) || seen.contains(&&keys[i]) {
            continue;
        }
        seen.push(&keys[i]);
        let (route, key, tier) = (routes[i].clone(), keys[i].clone(), served_by[i]);
        tokio::spawn(async move {
            copy_up(&route, lane, &key, tier).await;
        });
    }
}

/// `gets`/`gat`/`gats`: copy every lower-tier hit into tier 0, then read those keys from tier 0.
async fn copy_then_reread(
    lane: Lane,
    get: &Retrieve,
    routes: &[Arc<Route>],
    served_by: &[usize],
    idx: &[usize],
    slots: &mut [Slot],
) {
    let keys = &get.keys;
    let mut distinct: Vec<usize> = Vec::new();
    for &i in idx {
        if !distinct.iter().any(|&j| keys[j] == keys[i]) {
            distinct.push(i);
        }
    }
    join_all(
        distinct
            .iter()
            .map(|&i| copy_up(&routes[i], lane, &keys[i], served_by[i])),
    )
    .await;
    let again = lookup(lane, get.kind, get.exptime, keys, routes, idx, 0).await;
    for &i in idx {
        // Not in tier 0 after all (copy failed, or evicted at once): a miss, never a lower-tier
        // CAS token that tier 0 would not accept.
        slots[i] = match &again[i] {
            Slot::Hit(v) => Slot::Hit(v.clone()),
            _ => Slot::Miss,
        };
    }
}

/// The keys still missing after tier 0 that will be looked up from tier `from` on and have a
/// tombstone in tier 0 (asked of each key's tier-0 server).
async fn tombstones(
    lane: Lane,
    keys: &[Bytes],
    routes: &[Arc<Route>],
    slots: &[Slot],
    from: usize,
) -> Vec<usize> {
    let mut asked: Vec<usize> = Vec::new();
    let mut owners = Vec::new();
    for i in 0..keys.len() {
        let r = &routes[i];
        if !matches!(slots[i], Slot::Miss) || !(from..r.tiers.len()).any(|t| r.asks(t, &keys[i])) {
            continue;
        }
        if let Ok(server) = r.owner().locate(&keys[i]) {
            asked.push(i);
            owners.push((server, &keys[i]));
        }
    }
    if asked.is_empty() {
        return asked;
    }
    let found = super::tombstone::present_many(lane, &owners).await;
    asked
        .into_iter()
        .zip(found)
        .filter_map(|(i, f)| f.then_some(i))
        .collect()
}

/// Asks tier `tier` of each key's route for the keys at `idx`, one request per server. The result
/// has a slot for every key of the request (`Miss` for those not asked).
async fn lookup(
    lane: Lane,
    kind: Retrieval,
    exptime: i32,
    keys: &[Bytes],
    routes: &[Arc<Route>],
    idx: &[usize],
    tier: usize,
) -> Vec<Slot> {
    let mut slots = vec![Slot::Miss; keys.len()];
    // (server, indices) in first-seen order.
    let mut groups: Vec<(&Arc<Server>, Vec<usize>)> = Vec::new();
    for &i in idx {
        let pool: &Pool = &routes[i].tiers[tier];
        match pool.locate(&keys[i]) {
            // A delete for it waits to be replayed there: whatever that server holds is gone.
            Ok(server) if tier > 0 && routes[i].replay.pending(server.address(), &keys[i]) => {}
            Ok(server) => group::add(&mut groups, server, i, |a, b| Arc::ptr_eq(a, b)),
            Err(e) => slots[i] = Slot::Error(e),
        }
    }
    let answers = join_all(groups.iter().map(|(server, members)| {
        let op = Op::Get {
            kind,
            exptime,
            keys: members.iter().map(|&i| keys[i].clone()).collect(),
        };
        server.call(lane, op)
    }))
    .await;
    for ((_, members), answer) in groups.iter().zip(answers) {
        match answer {
            Ok(Response::Values(values)) => {
                for (&i, v) in members.iter().zip(pair(values, members.len())) {
                    if let Some(v) = v {
                        slots[i] = Slot::Hit(v);
                    }
                }
            }
            Ok(_) => members
                .iter()
                .for_each(|&i| slots[i] = Slot::Error(ErrorKind::Protocol.into())),
            Err(e) => members
                .iter()
                .for_each(|&i| slots[i] = Slot::Error(e.clone())),
        }
    }
    for &i in idx {
        let m = &routes[i].tier_metrics[tier];
        match slots[i] {
            Slot::Hit(_) => m.hits.inc(),
            Slot::Miss => m.misses.inc(),
            Slot::Error(_) => m.errors.inc(),
        }
    }
    slots
}

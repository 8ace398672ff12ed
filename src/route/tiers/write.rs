//! Single-key commands on tiered routes.
//!
//! | command | behaviour |
//! |---|---|
//! | `set`, `cas` | tier 0, then `lower_on_write` |
//! | `add` | copy the key up from a lower tier first (so `add` fails as on one cache), then tier 0 |
//! | `replace`, `append`, `prepend`, `incr`, `decr`, `touch` | tier 0; on `NOT_STORED`/`NOT_FOUND` copy up (if a lower tier has it) and retry once |
//! | `delete` | every tier (after copies of the key in progress); `DELETED` if any held it; tier 0 again one `timeout` later |
//!
//! While a lower tier cannot be asked, `add`, `replace`, `append`, `prepend`, `incr`, `decr`
//! and `touch` of a key tier 0 lacks, and a `delete` that no reachable tier held, answer
//! `SERVER_ERROR lower tier unreachable` (unless a tombstone makes the outcome certain), and
//! a delete a lower tier could not take leaves a tombstone in tier 0 (see [`super::tombstone`]).
//!
//! `lower_on_write` follows every command that changed a value in tier 0: `delete` removes the
//! key from the lower tiers so an old value can never come back if tier 0 loses the item,
//! `set` writes the new value to every tier, `ignore` leaves them alone.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;

use super::copy::{CopyUp, find_and_copy};
use super::tombstone::Written;
use super::{call, deleted_or_absent, invalidation_failed, is_line, unknown};
use super::{delete_again_later, delete_in, failed_deletes};
use crate::backend::{BackendError, Lane};
use crate::config::LowerOnWrite;
use crate::protocol::backend::Response;
use crate::protocol::command::{Keyed, Storage};
use crate::protocol::reply::{self, Reply};
use crate::route::Route;
use crate::route::{ReplyFuture, to_reply};

use crate::metrics::Cmd;
use crate::protocol::exptime::{for_remaining_ttl, unix_now};

/// A single-key op on a tiered route.
pub fn dispatch(route: Arc<Route>, lane: Lane, op: Keyed) -> ReplyFuture {
    Box::pin(async move {
        let key = op.key().clone();
        match op {
            Keyed::Delete { .. } => delete_everywhere(&route, lane, key).await,
            Keyed::Store {
                kind: Storage::Set | Storage::Cas,
                ..
            } => {
                let answer = call(route.owner(), lane, op.clone()).await;
                if is_line(&answer, reply::STORED) {
                    lower_on_write(&route, lane, &key, Some(&op)).await;
                }
                to_reply(answer)
            }
            Keyed::Store {
                kind: Storage::Add, ..
            } => {
                // A key that only a lower tier holds exists for the client: copy it up so tier 0
                // answers NOT_STORED as a single cache would.
                if find_and_copy(&route, lane, &key).await == CopyUp::LowerError {
                    // Whether the key exists depends on a tier that cannot be asked, unless
                    // tier 0 holds it anyway (then NOT_STORED is certain).
                    return match call(route.owner(), lane, Keyed::CopyRead { key }).await {
                        Ok(Response::Meta { .. }) => Reply::Static(reply::NOT_STORED),
                        Ok(Response::Line(l)) if l.starts_with(b"EN") => {
                            to_reply(unknown(&route, "add"))
                        }
                        other => to_reply(other),
                    };
                }
                let answer = call(route.owner(), lane, op.clone()).await;
                if is_line(&answer, reply::STORED) {
                    lower_on_write(&route, lane, &key, Some(&op)).await;
                }
                to_reply(answer)
            }
            Keyed::Store { .. } | Keyed::Arith { .. } | Keyed::Touch { .. } => {
                let mut answer = call(route.owner(), lane, op.clone()).await;
                let absent =
                    is_line(&answer, reply::NOT_STORED) || is_line(&answer, reply::NOT_FOUND);
                if absent {
                    // Retry even when no lower tier has the key: another client may have
                    // copied it up, changed it and deleted it below between our two reads
                    // (tier 0, then the lower tier). Without the retry a counter that exists
                    // answers NOT_FOUND, and an app that then re-creates it loses its count.
                    if find_and_copy(&route, lane, &key).await == CopyUp::LowerError {
                        // The key may exist in the tier that cannot be asked: not a NOT_FOUND.
                        return to_reply(unknown(&route, Cmd::from(&op).label()));
                    }
                    answer = call(route.owner(), lane, op.clone()).await;
                }
                if changed_value(&op, &answer) {
                    lower_on_write(&route, lane, &key, None).await;
                }
                to_reply(answer)
            }
            Keyed::Meta(m) => super::meta::dispatch(&route, lane, m).await,
            Keyed::CopyRead { .. } => to_reply(call(route.owner(), lane, op).await),
        }
    })
}

/// True when `answer` says tier 0's value changed (touch changes only the TTL).
fn changed_value(op: &Keyed, answer: &Result<Response, BackendError>) -> bool {
    match (op, answer) {
        (Keyed::Touch { .. }, _) => false,
        (Keyed::Arith { .. }, Ok(Response::Line(l))) => l.first().is_some_and(u8::is_ascii_digit),
        (_, answer) => is_line(answer, reply::STORED),
    }
}

/// `delete`: every tier that may hold the key, at once; then tier 0 again after one `timeout`,
/// in case a read that raced this delete copied the old value up in between (the delayed
/// double delete). A lower tier that cannot take the delete gets a tombstone in tier 0 and a
/// replayed delete later; the answer is `DELETED` if any tier held the key, `NOT_FOUND` when
/// that is certain, and [`reply::LOWER_TIER_UNREACHABLE`] when it depends on a tier that could
/// not be asked.
async fn delete_everywhere(route: &Arc<Route>, lane: Lane, key: Bytes) -> Reply {
    let asked: Vec<usize> = (0..route.tiers.len())
        .filter(|&t| route.asks(t, &key))
        .collect();
    // Copies of this key already running in this process finish first (their `add` is then
    // deleted below); copies that start later find nothing in the lower tiers.
    let held = route.key_locks.exclusive(&key).await;
    let answers = delete_in(route, lane, &key, &asked).await;
    drop(held);
    delete_again_later(route, lane, key.clone());
    let failed = failed_deletes(route, asked.iter().zip(&answers).skip(1));
    let tomb = if failed.is_empty() || !deleted_or_absent(&answers[0]) {
        // Nothing missed, or tier 0 failed too (then no tombstone can be written there).
        None
    } else {
        Some(invalidation_failed(route, lane, &key, &failed).await)
    };
    if answers.iter().any(|a| is_line(a, reply::DELETED)) {
        return Reply::Static(reply::DELETED);
    }
    match answers.into_iter().next() {
        Some(first) if !is_line(&first, reply::NOT_FOUND) => to_reply(first),
        // An earlier tombstone: the key was already deleted for everyone.
        _ if matches!(tomb, None | Some(Written::Existing)) => Reply::Static(reply::NOT_FOUND),
        _ => to_reply(unknown(route, "delete")),
    }
}

/// The `lower_on_write` step after tier 0 changed. `op` is the client's storage op when it
/// carries the whole new value (`set`, `cas`, `add`); otherwise `set` mode reads tier 0. A
/// lower tier that cannot take its delete (or set) gets a tombstone and a replayed delete.
pub(super) async fn lower_on_write(route: &Route, lane: Lane, key: &Bytes, op: Option<&Keyed>) {
    let lower: Vec<(usize, LowerOnWrite)> = (1..route.tiers.len())
        .map(|t| (t, route.lower_mode(t)))
        .filter(|&(t, mode)| mode != LowerOnWrite::Ignore && route.asks(t, key))
        .collect();
    if lower.is_empty() {
        return;
    }
    let value = if lower.iter().any(|&(_, m)| m == LowerOnWrite::Set) {
        match op {
            Some(Keyed::Store {
                flags,
                exptime,
                data,
                ..
            }) => Some((*flags, *exptime, data.clone())),
            _ => match call(route.owner(), lane, Keyed::CopyRead { key: key.clone() }).await {
                Ok(Response::Meta { flags, ttl, data }) => {
                    for_remaining_ttl(ttl, unix_now()).map(|exptime| (flags, exptime, data))
                }
                _ => None,
            },
        }
    } else {
        None
    };
    let answers = join_all(lower.iter().map(|&(t, mode)| {
        let pool = &route.tiers[t];
        let value = value.clone();
        async move {
            match (mode, value) {
                (LowerOnWrite::Set, Some((flags, exptime, data))) => {
                    let set = Keyed::Store {
                        kind: Storage::Set,
                        key: key.clone(),
                        flags,
                        exptime,
                        data,
                        cas: 0,
                    };
                    let answer = call(pool, lane, set).await;
                    route
                        .metrics
                        .tiers
                        .lower_sets
                        .count(is_line(&answer, reply::STORED));
                    is_line(&answer, reply::STORED)
                }
                (LowerOnWrite::Set, None) => {
                    route.metrics.tiers.lower_sets.count(false);
                    false
                }
                _ => {
                    let answer = call(pool, lane, Keyed::Delete { key: key.clone() }).await;
                    let ok = deleted_or_absent(&answer);
                    route.metrics.tiers.lower_deletes.count(ok);
                    ok
                }
            }
        }
    }))
    .await;
    let failed: Vec<usize> = lower
        .iter()
        .zip(answers)
        .filter(|(_, ok)| !ok)
        .map(|(&(t, _), _)| t)
        .collect();
    if !failed.is_empty() {
        invalidation_failed(route, lane, key, &failed).await;
    }
}

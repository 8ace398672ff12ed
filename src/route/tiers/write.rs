//! Single-key commands on tiered routes.
//!
//! | command | behaviour |
//! |---|---|
//! | `set`, `cas` | tier 0, then `lower_on_write` |
//! | `add` | copy the key up from a lower tier first (so `add` fails as on one cache), then tier 0 |
//! | `replace`, `append`, `prepend`, `incr`, `decr`, `touch` | tier 0; on `NOT_STORED`/`NOT_FOUND` copy up (if a lower tier has it) and retry once |
//! | `delete` | every tier (after copies of the key in progress); `DELETED` if any held it; tier 0 again one `timeout` later |
//!
//! `lower_on_write` follows every command that changed a value in tier 0: `delete` removes the
//! key from the lower tiers so an old value can never come back if tier 0 loses the item,
//! `set` writes the new value to every tier, `ignore` leaves them alone.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;

use super::copy::find_and_copy;
use super::{call, is_line};
use crate::backend::BackendError;
use crate::config::LowerOnWrite;
use crate::protocol::backend::Response;
use crate::protocol::command::{Keyed, Storage};
use crate::protocol::reply::{self, Reply};
use crate::route::Route;
use crate::route::{ReplyFuture, to_reply};

use crate::protocol::exptime::{for_remaining_ttl, unix_now};

/// A single-key op on a tiered route.
pub fn dispatch(route: Arc<Route>, lane: usize, op: Keyed) -> ReplyFuture {
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
                find_and_copy(&route, lane, &key).await;
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
                    find_and_copy(&route, lane, &key).await;
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

/// `delete`: every tier at once; then tier 0 again after one `timeout`, in case a read that
/// raced this delete copied the old value up in between (the delayed double delete).
async fn delete_everywhere(route: &Arc<Route>, lane: usize, key: Bytes) -> Reply {
    // Copies of this key already running in this process finish first (their `add` is then
    // deleted below); copies that start later find nothing in the lower tiers.
    let held = route.key_locks.exclusive(&key).await;
    let answers = join_all(
        route
            .tiers
            .iter()
            .map(|pool| call(pool, lane, Keyed::Delete { key: key.clone() })),
    )
    .await;
    drop(held);
    let delayed = route.clone();
    let delay = route.owner().config.timeout;
    let double = key.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let answer = call(delayed.owner(), lane, Keyed::Delete { key: double }).await;
        delayed.metrics.tiers.double_deletes.count(answer.is_ok());
    });
    for (tier, answer) in answers.iter().enumerate().skip(1) {
        if answer.is_err() {
            route.tier_metrics[tier].errors.inc();
        }
    }
    if answers.iter().any(|a| is_line(a, reply::DELETED)) {
        return Reply::Static(reply::DELETED);
    }
    match answers.into_iter().next() {
        Some(first) if !is_line(&first, reply::NOT_FOUND) => to_reply(first),
        _ => Reply::Static(reply::NOT_FOUND),
    }
}

/// The `lower_on_write` step after tier 0 changed. `op` is the client's storage op when it
/// carries the whole new value (`set`, `cas`, `add`); otherwise `set` mode reads tier 0.
pub(super) async fn lower_on_write(route: &Route, lane: usize, key: &Bytes, op: Option<&Keyed>) {
    let lower = &route.tiers[1..];
    match route.lower_on_write {
        LowerOnWrite::Ignore => {}
        LowerOnWrite::Delete => {
            let answers = join_all(
                lower
                    .iter()
                    .map(|pool| call(pool, lane, Keyed::Delete { key: key.clone() })),
            )
            .await;
            for answer in answers {
                route.metrics.tiers.lower_deletes.count(answer.is_ok());
            }
        }
        LowerOnWrite::Set => {
            let value = match op {
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
            };
            let Some((flags, exptime, data)) = value else {
                route.metrics.tiers.lower_sets.count(false);
                return;
            };
            let set = Keyed::Store {
                kind: Storage::Set,
                key: key.clone(),
                flags,
                exptime,
                data,
                cas: 0,
            };
            let answers = join_all(lower.iter().map(|pool| call(pool, lane, set.clone()))).await;
            for answer in answers {
                route
                    .metrics
                    .tiers
                    .lower_sets
                    .count(is_line(&answer, reply::STORED));
            }
        }
    }
}

//! Fallback tiers (DESIGN §4): the logical cache is "tier 0, and where tier 0 has nothing, the
//! first lower tier that has it", and every command keeps memcached's meaning under that view.
//!
//! - [`read`]: retrievals fall through tier by tier, one request per server per tier; `get`
//!   hits from below are answered at once and copied up in the background, `gets`/`gat`/`gats`
//!   copy first and re-read tier 0 so CAS tokens and TTLs are tier 0's.
//! - [`write`]: storage, counters, touch and delete, with copy-up-and-retry and the
//!   `lower_on_write` step that keeps old values from coming back.
//! - [`copy`]: copying one item up with its remaining TTL (`mg <key> v f t`).
//! - [`meta`]: the meta commands (`mg ms md ma`) under the same rules.
//! - [`keylock`]: keeps a copy-up and a delete of the same key from interleaving.
//! - [`tombstone`] and [`replay`]: invalidations a lower tier could not take still win over
//!   its old data, for every memroute process (tombstones in tier 0) and once the server is
//!   back (the replay queue).
//! - [`reshard`]: a resized pool's previous ring as an implicit lower tier of the pool.
//!
//! While a lower tier cannot be asked, reads treat it as a miss, but a command whose answer
//! depends on it (see the outcome table in DESIGN §4 and `docs/tiers.md`) answers
//! [`reply::LOWER_TIER_UNREACHABLE`] instead of a `NOT_FOUND` that may be false.
//!
//! A request on a tiered route is a barrier in its client's pipeline (see the session), so the
//! several round trips here cannot be overtaken by the same client's next request.

pub mod copy;
pub mod keylock;
pub mod meta;
pub mod read;
pub mod replay;
pub mod reshard;
pub mod tombstone;
pub mod write;

pub use read::retrieve;
pub use write::dispatch;

use std::sync::Arc;

use futures_util::future::join_all;

use crate::backend::{BackendError, Lane, Pool};
use crate::protocol::backend::Response;
use crate::protocol::command::{Keyed, Op};
use crate::protocol::reply;
use crate::route::Route;

/// Sends `op` to the server of `pool` that owns its key and waits for the answer.
pub async fn call(pool: &Pool, lane: Lane, op: Keyed) -> Result<Response, BackendError> {
    let server = pool.locate(op.key())?;
    server.call(lane, Op::Keyed(op)).await
}

/// True when the answer is exactly `line` (e.g. `STORED\r\n`).
pub fn is_line(answer: &Result<Response, BackendError>, line: &[u8]) -> bool {
    matches!(answer, Ok(Response::Line(l)) if &l[..] == line)
}

/// The answer of a command whose outcome depends on a lower tier that could not be asked
/// (counted by `command`).
pub fn unknown(route: &Route, command: &str) -> Result<Response, BackendError> {
    route
        .metrics
        .tiers
        .lower_unknown
        .with_label_values(&[command])
        .inc();
    Ok(Response::Line(bytes::Bytes::from_static(
        reply::LOWER_TIER_UNREACHABLE,
    )))
}

/// True when a lower tier's answer to a `delete` means it no longer holds the key.
pub fn deleted_or_absent(answer: &Result<Response, BackendError>) -> bool {
    is_line(answer, reply::DELETED) || is_line(answer, reply::NOT_FOUND)
}

/// `delete <key>` in each of the route's tiers `asked`, at once; the answers in that order.
pub async fn delete_in(
    route: &Route,
    lane: Lane,
    key: &bytes::Bytes,
    asked: &[usize],
) -> Vec<Result<Response, BackendError>> {
    let delete = |t: usize| call(&route.tiers[t], lane, Keyed::Delete { key: key.clone() });
    join_all(asked.iter().map(|&t| delete(t))).await
}

/// The tiers whose `delete` answer leaves the key possibly there (each counted as an error of
/// its tier), from (tier, answer) pairs.
pub fn failed_deletes<'a>(
    route: &Route,
    answers: impl Iterator<Item = (&'a usize, &'a Result<Response, BackendError>)>,
) -> Vec<usize> {
    let failed: Vec<usize> = answers
        .filter(|(_, a)| !deleted_or_absent(a))
        .map(|(&t, _)| t)
        .collect();
    for &t in &failed {
        route.tier_metrics[t].errors.inc();
    }
    failed
}

/// The delayed double delete: tier 0 again after one `timeout`, in case a read that raced the
/// delete copied the old value up in between.
pub fn delete_again_later(route: &Arc<Route>, lane: Lane, key: bytes::Bytes) {
    let route = route.clone();
    let delay = route.owner().config.timeout;
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let answer = call(route.owner(), lane, Keyed::Delete { key }).await;
        route.metrics.tiers.double_deletes.count(answer.is_ok());
    });
}

/// An invalidation the lower tiers at `failed` could not take: queue it for each of their
/// servers and write a tombstone into tier 0 that lives as long as the longest of them needs.
pub async fn invalidation_failed(
    route: &Route,
    lane: Lane,
    key: &bytes::Bytes,
    failed: &[usize],
) -> tombstone::Written {
    for &tier in failed {
        if let Ok(server) = route.tiers[tier].locate(key) {
            route.replay.push(server, key);
        }
    }
    let ttl = failed
        .iter()
        .map(|&t| route.tombstone_ttl_for(t))
        .max()
        .unwrap_or(route.tombstone_ttl);
    tombstone::write(route, lane, key, ttl).await
}

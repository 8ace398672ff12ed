//! Copying one item from a lower tier into tier 0.
//!
//! The item is read with `mg <key> v f t` (value, flags, remaining TTL) and written with `add`,
//! so a copy never overwrites a newer value in tier 0 and never lives longer than the original.
//! A lower tier without meta commands answers `ERROR`; then the value is read with `get` and the
//! route's `warm_ttl` is used (no copy without it).

use bytes::Bytes;

use super::call;
use crate::backend::Lane;
use crate::protocol::backend::Response;
use crate::protocol::command::{Keyed, Op, Retrieval, Storage};
use crate::protocol::exptime::{for_remaining_ttl, unix_now};
use crate::protocol::reply;
use crate::route::Route;

/// How a copy went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyUp {
    /// Tier 0 has the lower tier's item now.
    Copied,
    /// Tier 0 already had the key (someone wrote it meanwhile): it is not overwritten.
    NotStored,
    /// The lower tier does not have the key.
    Missing,
    /// The lower tier failed (counted, treated as a miss).
    LowerError,
    /// The item was found but could not be written to tier 0.
    Failed,
    /// Tier 0 holds a tombstone for the key: it is deleted, the lower tiers are not asked.
    Tombstoned,
}

/// Copies `key` from tier `from` into tier 0.
pub async fn copy_up(route: &Route, lane: Lane, key: &Bytes, from: usize) -> CopyUp {
    // From the read below to the `add`: a delete of this key must not run in between.
    let _held = route.key_locks.shared(key).await;
    let lower = &route.tiers[from];
    if let Ok(server) = lower.locate(key) {
        if route.replay.pending(server.address(), key) {
            // A delete for it waits to be replayed there: whatever it holds is gone.
            return CopyUp::Missing;
        }
    }
    let (flags, exptime, data) = match call(lower, lane, Keyed::CopyRead { key: key.clone() }).await
    {
        Ok(Response::Meta { flags, ttl, data }) => match for_remaining_ttl(ttl, unix_now()) {
            Some(exptime) => (flags, exptime, data),
            None => return CopyUp::Missing,
        },
        Ok(Response::Line(line)) if line.starts_with(b"EN") => return CopyUp::Missing,
        Ok(Response::Line(line)) if line.starts_with(reply::ERROR) => {
            // No meta commands on this tier: plain get, and warm_ttl for the copy.
            match get_with_warm_ttl(route, lane, key, from).await {
                Some(found) => found,
                None => return CopyUp::Missing,
            }
        }
        _ => return CopyUp::LowerError,
    };
    let add = Keyed::Store {
        kind: Storage::Add,
        key: key.clone(),
        flags,
        exptime,
        data,
        cas: 0,
    };
    let m = &route.metrics.tiers;
    let (copy, result) = match call(route.owner(), lane, add).await {
        Ok(Response::Line(l)) if &l[..] == reply::STORED => {
            m.copies_ok.inc();
            (CopyUp::Copied, 0)
        }
        Ok(Response::Line(l)) if &l[..] == reply::NOT_STORED => {
            m.copies_not_stored.inc();
            (CopyUp::NotStored, 1)
        }
        _ => {
            m.copies_failed.inc();
            (CopyUp::Failed, 2)
        }
    };
    if let Some(p) = route.previous(from) {
        p.copies[result].inc();
    }
    copy
}

async fn get_with_warm_ttl(
    route: &Route,
    lane: Lane,
    key: &Bytes,
    from: usize,
) -> Option<(u32, i32, Bytes)> {
    let get = Op::Get {
        kind: Retrieval::Get,
        exptime: 0,
        keys: vec![key.clone()],
    };
    let answer = match route.tiers[from].locate(key) {
        Ok(server) => server.call(lane, get).await,
        Err(e) => Err(e),
    };
    let Ok(Response::Values(mut values)) = answer else {
        return None;
    };
    let value = values.pop()?;
    let Some(ttl) = route.warm_ttl else {
        tracing::debug!(pool = %route.tiers[from].name(), "lower tier has no meta commands and no warm_ttl is set: not copied");
        route.metrics.tiers.copies_failed.inc();
        return None;
    };
    let exptime = for_remaining_ttl(ttl.as_secs() as i64, unix_now())?;
    Some((value.flags, exptime, value.data()))
}

/// Looks for `key` in the lower tiers in order and copies the first hit into tier 0. Answers
/// `Tombstoned` when tier 0 has a tombstone for the key (nothing below is asked), and
/// `LowerError` when no tier had it but one could not be asked (the key may exist).
pub async fn find_and_copy(route: &Route, lane: Lane, key: &Bytes) -> CopyUp {
    let asked: Vec<usize> = (1..route.tiers.len())
        .filter(|&t| route.asks(t, key))
        .collect();
    if asked.is_empty() {
        return CopyUp::Missing;
    }
    // A tier-0 failure here shows in the command's own tier-0 call.
    if let Ok(true) = super::tombstone::present_one(route, lane, key).await {
        return CopyUp::Tombstoned;
    }
    let mut error = false;
    for tier in asked {
        let m = &route.tier_metrics[tier];
        match copy_up(route, lane, key, tier).await {
            CopyUp::Missing => m.misses.inc(),
            CopyUp::LowerError => {
                m.errors.inc();
                error = true;
            }
            found => {
                m.hits.inc();
                return found;
            }
        }
    }
    if error {
        CopyUp::LowerError
    } else {
        CopyUp::Missing
    }
}

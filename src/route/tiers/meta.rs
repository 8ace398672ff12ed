//! Meta commands on tiered routes: the rules of [`super::write`] and [`super::read`] for `mg`,
//! `ms`, `md`, `ma`, with the client's request sent to tier 0 as it is (so every returned flag,
//! CAS value, TTL and `W`/`X`/`Z` is tier 0's).
//!
//! | command | behaviour |
//! |---|---|
//! | `mg` | tier 0; on `EN`, copy the key up from the first lower tier that has it (with `add`: a newer item or a vivify stub in tier 0 is never overwritten) and ask tier 0 again. With `N` tier 0 is probed first, so a lower tier's item wins over a new stub |
//! | `ms` | mode `E` (add): copy up first; `A`/`P`/`R`: on `NS` copy up and retry once; then `lower_on_write` after `HD` |
//! | `md` | tier 0 with the client's flags, `delete` on every lower tier; `HD` if any tier held the key. `I` (mark stale) copies up first so the mark lands on the item; without `I`, tier 0 gets a second delete one `timeout` later |
//! | `ma` | tier 0; on `NF` copy up and retry once (with `N`, copy up first so a lower counter continues instead of a new one); then `lower_on_write` |
//! | `me` | tier 0 |
//!
//! While a lower tier cannot be asked: `mg` with `c`, `T` or `N`, `ms` in modes `E`/`A`/`P`/`R`,
//! `ma`, and an `md` that no reachable tier held answer `SERVER_ERROR lower tier unreachable`
//! for a key tier 0 lacks (a plain `mg` is a read: `EN`); `md` and `lower_on_write` leave
//! tombstones as [`super::write`] does.
//!
//! The copier speaks classic commands, so a `b` key whose bytes a text line cannot carry (space,
//! `\r`, `\n`) is served by tier 0 alone.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::copy::{CopyUp, find_and_copy};
use super::tombstone::Written;
use super::write::lower_on_write;
use super::{call, delete_again_later, delete_in, failed_deletes, invalidation_failed, unknown};
use crate::backend::{BackendError, Lane};
use crate::protocol::backend::Response;
use crate::protocol::command::{Keyed, MetaRequest};
use crate::protocol::meta::MetaVerb;
use crate::protocol::reply::{self, Reply};
use crate::route::{Route, to_reply};

type Answer = Result<Response, BackendError>;

/// A client's meta command on a tiered route.
pub async fn dispatch(route: &Arc<Route>, lane: Lane, m: MetaRequest) -> Reply {
    let key = m.key.clone();
    if m.verb == MetaVerb::Debug || !plain_safe(&key) {
        return to_reply(tier0(route, lane, &m).await);
    }
    match m.verb {
        MetaVerb::Get => get(route, lane, m, key).await,
        MetaVerb::Set => set(route, lane, m, key).await,
        MetaVerb::Delete => delete(route, lane, m, key).await,
        MetaVerb::Arith => arith(route, lane, m, key).await,
        MetaVerb::Debug => to_reply(tier0(route, lane, &m).await),
    }
}

async fn tier0(route: &Route, lane: Lane, m: &MetaRequest) -> Answer {
    call(route.owner(), lane, Keyed::Meta(m.clone())).await
}

async fn get(route: &Arc<Route>, lane: Lane, m: MetaRequest, key: Bytes) -> Reply {
    if m.has(b'N') {
        // Vivify on tier 0 would hide a lower tier's item behind a new empty stub.
        let probe = call(route.owner(), lane, Keyed::Meta(probe(&key))).await;
        if is_code(&probe, b"EN") && find_and_copy(route, lane, &key).await == CopyUp::LowerError {
            return to_reply(unknown(route, "mg"));
        }
        return to_reply(tier0(route, lane, &m).await);
    }
    let first = tier0(route, lane, &m).await;
    if !is_code(&first, b"EN") {
        return to_reply(first);
    }
    match find_and_copy(route, lane, &key).await {
        CopyUp::Copied | CopyUp::NotStored => to_reply(tier0(route, lane, &m).await),
        // As gets/gat: a CAS token or a touch asked for a key that may exist below.
        CopyUp::LowerError if m.has(b'c') || m.has(b'T') => to_reply(unknown(route, "mg")),
        _ => to_reply(first),
    }
}

async fn set(route: &Arc<Route>, lane: Lane, m: MetaRequest, key: Bytes) -> Reply {
    let answer = match m.mode {
        Some(b'E') => {
            // A key only a lower tier holds exists for the client: add must fail.
            if exists_below_unknown(route, lane, &key).await {
                return to_reply(unknown(route, "ms"));
            }
            tier0(route, lane, &m).await
        }
        Some(b'A' | b'P' | b'R') => retry_after_copy(route, lane, &m, &key, b"NS").await,
        _ => tier0(route, lane, &m).await,
    };
    if is_code(&answer, b"HD") {
        lower_on_write(route, lane, &key, None).await;
    }
    to_reply(answer)
}

async fn arith(route: &Arc<Route>, lane: Lane, m: MetaRequest, key: Bytes) -> Reply {
    let answer = if m.has(b'N') {
        // Vivify would start a new counter where a lower tier's one should continue.
        if exists_below_unknown(route, lane, &key).await {
            return to_reply(unknown(route, "ma"));
        }
        tier0(route, lane, &m).await
    } else {
        retry_after_copy(route, lane, &m, &key, b"NF").await
    };
    if is_code(&answer, b"HD") || is_code(&answer, b"VA") {
        lower_on_write(route, lane, &key, None).await;
    }
    to_reply(answer)
}

/// Copies the key up; true when whether it exists depends on a lower tier that cannot be asked
/// (the copy failed there and tier 0 does not hold the key).
async fn exists_below_unknown(route: &Route, lane: Lane, key: &Bytes) -> bool {
    find_and_copy(route, lane, key).await == CopyUp::LowerError
        && is_code(
            &call(route.owner(), lane, Keyed::Meta(probe(key))).await,
            b"EN",
        )
}

/// Tier 0; when it answers `absent`, copy up and retry once (even when no lower tier has the
/// key: another client may have copied it meanwhile, see [`super::write`]).
async fn retry_after_copy(
    route: &Arc<Route>,
    lane: Lane,
    m: &MetaRequest,
    key: &Bytes,
    absent: &[u8; 2],
) -> Answer {
    let answer = tier0(route, lane, m).await;
    if !is_code(&answer, absent) {
        return answer;
    }
    if find_and_copy(route, lane, key).await == CopyUp::LowerError {
        // The key may exist in the tier that cannot be asked.
        let name = if m.verb == MetaVerb::Arith {
            "ma"
        } else {
            "ms"
        };
        return unknown(route, name);
    }
    tier0(route, lane, m).await
}

async fn delete(route: &Arc<Route>, lane: Lane, m: MetaRequest, key: Bytes) -> Reply {
    let stale = m.has(b'I');
    if stale {
        find_and_copy(route, lane, &key).await;
    }
    // As `delete`: copies of this key in progress finish first.
    let held = route.key_locks.exclusive(&key).await;
    let first = tier0(route, lane, &m).await;
    if is_code(&first, b"EX") {
        // The CAS did not match: nothing changes anywhere.
        return to_reply(first);
    }
    let asked: Vec<usize> = (1..route.tiers.len())
        .filter(|&t| route.asks(t, &key))
        .collect();
    let lower = delete_in(route, lane, &key, &asked).await;
    drop(held);
    let failed = failed_deletes(route, asked.iter().zip(&lower));
    let tomb = if failed.is_empty() || first.is_err() {
        None
    } else {
        Some(invalidation_failed(route, lane, &key, &failed).await)
    };
    if !stale {
        // The delayed double delete, as `delete`'s. A stale item stays.
        delete_again_later(route, lane, key);
    }
    let held_below = lower
        .iter()
        .any(|a| matches!(a, Ok(Response::Line(l)) if &l[..] == reply::DELETED));
    match first {
        // Tier 0 did not have it but a lower tier did: the key existed for the client.
        Ok(Response::Line(l)) if held_below && code_is(&l, b"NF") => {
            let mut hd = BytesMut::with_capacity(l.len());
            hd.extend_from_slice(b"HD");
            hd.extend_from_slice(&l[2..]);
            Reply::Line(hd.freeze())
        }
        // Not in tier 0, and a tier that may hold it could not be asked (no earlier tombstone
        // makes NF certain).
        Ok(Response::Line(l))
            if code_is(&l, b"NF") && !matches!(tomb, None | Some(Written::Existing)) =>
        {
            to_reply(unknown(route, "md"))
        }
        other => to_reply(other),
    }
}

/// `mg <key>`: does tier 0 hold the key (no side effects: no flags).
fn probe(key: &Bytes) -> MetaRequest {
    let mut line = BytesMut::with_capacity(key.len() + 3);
    line.extend_from_slice(b"mg ");
    line.extend_from_slice(key);
    MetaRequest {
        verb: MetaVerb::Get,
        key: key.clone(),
        line: line.freeze(),
        data: None,
        quiet: false,
        flags: 0,
        mode: None,
    }
}

/// A key the classic commands of the copier can carry.
fn plain_safe(key: &[u8]) -> bool {
    !key.is_empty()
        && key.len() <= crate::protocol::KEY_MAX_LENGTH
        && !key.iter().any(|b| matches!(b, b' ' | b'\r' | b'\n' | 0))
}

fn is_code(answer: &Answer, code: &[u8; 2]) -> bool {
    matches!(answer, Ok(Response::Line(l)) if code_is(l, code))
}

/// True when the answer's status code (a whole token) is `code`.
fn code_is(line: &[u8], code: &[u8; 2]) -> bool {
    line.starts_with(code) && matches!(line.get(2), Some(b' ' | b'\r' | b'\n'))
}

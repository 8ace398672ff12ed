//! Tombstones: invalidations a lower tier could not take, remembered in tier 0 where every
//! memroute process in front of the same pools reads them.
//!
//! When a delete (a client's `delete`/`md`, or the `lower_on_write` step after a write) fails on
//! a lower tier — server marked down, timeout, connection error — memroute writes the key
//! `memroute:tomb:<md5 of the key, hex>` into tier 0, on the server that owns the key there,
//! with a bounded TTL (the route's `tombstone_ttl` for explicit tiers, the rest of the window
//! for a resized pool's previous ring). A key that tier 0 does not hold but that has a tombstone
//! is deleted for every memroute: reads do not look below, copies are not made, and commands
//! that would copy the key up answer as a single cache that lacks it. The failed delete is also
//! queued for the lower server ([`super::replay`]) and sent again when it is back.
//!
//! Trade-offs (documented in DESIGN-level docs): a client that reads the lower tier directly,
//! bypassing memroute, still sees the old value until the replay reaches it; if tier 0 evicts
//! (or flushes) the tombstone before any memroute that saw the failure has replayed the delete,
//! and that process restarted meanwhile, the old value can be read again; a tombstone also
//! costs one extra `get` on tier 0 whenever a key missing there would be looked up below.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use md5::{Digest, Md5};

use crate::backend::{BackendError, Lane, Server};
use crate::protocol::backend::Response;
use crate::protocol::command::{Keyed, Op, Retrieval, Storage};
use crate::protocol::reply;
use crate::route::{Route, group};

/// The key prefix of tombstones (a memcached key; the digest keeps it short for any key).
pub const PREFIX: &[u8] = b"memroute:tomb:";

/// The tombstone key of `key`.
pub fn key_for(key: &[u8]) -> Bytes {
    let digest = Md5::digest(key);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = BytesMut::with_capacity(PREFIX.len() + 32);
    out.extend_from_slice(PREFIX);
    // On the read path of every tier-0 miss: no formatter, no allocation per byte.
    for b in digest {
        out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
    }
    out.freeze()
}

/// What writing a tombstone found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A new tombstone is in tier 0.
    New,
    /// One was there already (an earlier invalidation failed too); its life was extended.
    Existing,
    /// Tier 0 could not take it.
    Failed,
}

/// Writes the tombstone of `key` into tier 0 for `ttl` (whole seconds, at least 1).
pub async fn write(route: &Route, lane: Lane, key: &Bytes, ttl: Duration) -> Written {
    let m = &route.metrics.tiers.tombstones;
    let Ok(server) = route.owner().locate(key) else {
        m.failed.inc();
        return Written::Failed;
    };
    let exptime = ttl.as_secs().clamp(1, i32::MAX as u64) as i32;
    let tomb = key_for(key);
    let add = Keyed::Store {
        kind: Storage::Add,
        key: tomb.clone(),
        flags: 0,
        exptime,
        data: Bytes::from_static(b"1"),
        cas: 0,
    };
    let written = match server.call(lane, Op::Keyed(add)).await {
        Ok(Response::Line(l)) if &l[..] == reply::STORED => Written::New,
        Ok(Response::Line(l)) if &l[..] == reply::NOT_STORED => {
            let touch = Keyed::Touch { key: tomb, exptime };
            match server.call(lane, Op::Keyed(touch)).await {
                Ok(Response::Line(l)) if &l[..] == reply::TOUCHED => Written::Existing,
                _ => Written::Failed,
            }
        }
        _ => Written::Failed,
    };
    match written {
        Written::New => &m.written,
        Written::Existing => &m.existing,
        Written::Failed => &m.failed,
    }
    .inc();
    written
}

/// Whether tier 0 holds a tombstone for `key`.
pub async fn present_one(route: &Route, lane: Lane, key: &Bytes) -> Result<bool, BackendError> {
    let server = route.owner().locate(key)?;
    let found = ask(server, lane, vec![key_for(key)]).await?;
    let honored = found.first().copied().unwrap_or(false);
    if honored {
        route.metrics.tiers.tombstones.honored.inc();
    }
    Ok(honored)
}

/// Which of `keys` (each with the tier-0 server owning it) have a tombstone; a failed server's
/// keys count as without (their own tier-0 lookup failed too, so they are errors anyway).
pub async fn present_many(lane: Lane, keys: &[(&std::sync::Arc<Server>, &Bytes)]) -> Vec<bool> {
    let mut groups: Vec<(&std::sync::Arc<Server>, Vec<usize>)> = Vec::new();
    for (i, (server, _)) in keys.iter().enumerate() {
        group::add(&mut groups, server, i, |a, b| std::sync::Arc::ptr_eq(a, b));
    }
    let answers = join_all(groups.iter().map(|(server, members)| {
        let tombs = members.iter().map(|&i| key_for(keys[i].1)).collect();
        ask(server, lane, tombs)
    }))
    .await;
    let mut out = vec![false; keys.len()];
    for ((_, members), answer) in groups.iter().zip(answers) {
        if let Ok(found) = answer {
            for (&i, f) in members.iter().zip(found) {
                out[i] = f;
            }
        }
    }
    out
}

/// `get` of tombstone keys on one server: which are there.
async fn ask(server: &Server, lane: Lane, tombs: Vec<Bytes>) -> Result<Vec<bool>, BackendError> {
    let asked = tombs.len();
    let op = Op::Get {
        kind: Retrieval::Get,
        exptime: 0,
        keys: tombs.clone(),
    };
    match server.call(lane, op).await? {
        Response::Values(values) => Ok(tombs
            .iter()
            .map(|t| values.iter().any(|v| v.key() == &t[..]))
            .take(asked)
            .collect()),
        _ => Err(crate::backend::ErrorKind::Protocol.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_key_is_the_prefix_and_the_keys_md5_in_lower_case_hex() {
        // md5 values from coreutils' md5sum.
        assert_eq!(
            &key_for(b"foo")[..],
            b"memroute:tomb:acbd18db4cc2f85cedef654fccc4a4d8"
        );
        assert_eq!(
            &key_for(b"")[..],
            b"memroute:tomb:d41d8cd98f00b204e9800998ecf8427e"
        );
    }
}

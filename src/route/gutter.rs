//! Failover to a gutter pool (Facebook's gutter pattern): a pool with `failover = "gutter"`
//! sends the keys of a server that is **marked down** (or being probed) to the gutter pool,
//! placed on the gutter's own ring. Writes that reach the gutter carry a TTL capped at the
//! pool's `failover_ttl` (default 10 s), so the gutter never serves data much older than the
//! outage. When the probe marks the server up, its keys go back to it at once.
//!
//! Only "marked down" moves keys: a request that fails before the server reaches
//! `failure_limit` still fails, as on a pool without a gutter, so a single slow answer does not
//! split a key between two pools. A delete during the outage reaches the gutter only; a value
//! the returning server held from before the outage can be read again afterwards (the gutter
//! bounds the age of its own data, not the returning server's).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prometheus::IntCounter;

use crate::backend::server::Pending;
use crate::backend::{BackendError, Lane, Pool, Pools, Server};
use crate::metrics::Metrics;
use crate::protocol::command::{Keyed, Op};
use crate::protocol::exptime::{RELATIVE_TTL_MAX, unix_now};
use crate::protocol::meta::MetaVerb;

/// A pool's gutter: where its down servers' keys go.
pub struct Gutter {
    /// The gutter pool.
    pub pool: Arc<Pool>,
    /// `failover_ttl` in seconds (validation: at least 1).
    pub ttl: u32,
    reads: IntCounter,
    writes: IntCounter,
}

impl Gutter {
    /// The gutter of `pool`, if its config names one that exists in `pools`.
    pub fn of(pool: &Pool, pools: &Pools, metrics: &Metrics) -> Option<Gutter> {
        let gutter = pools.get(pool.config.failover.as_ref()?)?.clone();
        let ttl = pool
            .config
            .failover_ttl
            .max(Duration::from_secs(1))
            .as_secs();
        let counter = |action| {
            metrics
                .routing
                .gutter_serves
                .with_label_values(&[pool.name(), action])
        };
        Some(Gutter {
            pool: gutter,
            ttl: u32::try_from(ttl).unwrap_or(u32::MAX),
            reads: counter("read"),
            writes: counter("write"),
        })
    }
}

/// The server for `key` in `pool`, or its gutter's server while the owner is marked down; the
/// gutter is returned when it serves. Counts a gutter serve as a read.
pub fn locate<'a>(
    pool: &'a Pool,
    gutter: Option<&'a Gutter>,
    key: &[u8],
) -> Result<(&'a Arc<Server>, Option<&'a Gutter>), BackendError> {
    let server = pool.locate(key)?;
    match gutter {
        Some(g) if server.health.is_down() => {
            g.reads.inc();
            Ok((g.pool.locate(key)?, Some(g)))
        }
        _ => Ok((server, None)),
    }
}

/// Sends a single-key command to the owner of its key in `pool`, or to the gutter (with its TTL
/// capped) while the owner is marked down.
pub fn send(
    pool: &Pool,
    gutter: Option<&Gutter>,
    lane: Lane,
    keyed: Keyed,
) -> Result<Pending, BackendError> {
    let server = pool.locate(keyed.key())?;
    match gutter {
        Some(g) if server.health.is_down() => {
            let keyed = cap(keyed, g.ttl);
            if is_read(&keyed) {
                g.reads.inc();
            } else {
                g.writes.inc();
            }
            g.pool.locate(keyed.key())?.send(lane, Op::Keyed(keyed))
        }
        _ => server.send(lane, Op::Keyed(keyed)),
    }
}

fn is_read(keyed: &Keyed) -> bool {
    match keyed {
        Keyed::Meta(m) => matches!(m.verb, MetaVerb::Get | MetaVerb::Debug),
        Keyed::CopyRead { .. } => true,
        _ => false,
    }
}

/// `exptime` as memcached reads it, capped at `ttl` seconds from now. A negative exptime
/// (expire at once) is kept; 0 (never) becomes `ttl`.
pub fn cap_exptime(exptime: i32, ttl: u32) -> i32 {
    let ttl_i = i64::from(ttl);
    let capped = match i64::from(exptime) {
        e if e < 0 => e,
        0 => ttl_i,
        e if e <= RELATIVE_TTL_MAX => e.min(ttl_i),
        // An absolute time: kept when it comes sooner than the cap (or has passed).
        e if e - unix_now() <= ttl_i => e,
        _ => ttl_i,
    };
    i32::try_from(capped).unwrap_or(exptime)
}

/// The command with every TTL it sets capped at `ttl` seconds.
pub fn cap(mut keyed: Keyed, ttl: u32) -> Keyed {
    match &mut keyed {
        Keyed::Store { exptime, .. } | Keyed::Touch { exptime, .. } => {
            *exptime = cap_exptime(*exptime, ttl);
        }
        Keyed::Meta(m) => m.line = cap_meta_line(&m.line, m.verb, ttl),
        _ => {}
    }
    keyed
}

/// Caps the `T` (TTL, touch) and `N` (vivify TTL) flags of a meta line; an `ms` without `T`
/// (which would store forever) gets `T<ttl>`.
fn cap_meta_line(line: &Bytes, verb: MetaVerb, ttl: u32) -> Bytes {
    // `ms <key> <datalen> <flags>*`, the others `<cmd> <key> <flags>*`.
    let first_flag = if verb == MetaVerb::Set { 3 } else { 2 };
    let mut out = BytesMut::with_capacity(line.len() + 12);
    let mut has_t = false;
    for (i, token) in line
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.put_u8(b' ');
        }
        match token.split_first() {
            Some((&flag @ (b'T' | b'N'), value)) if i >= first_flag => {
                has_t |= flag == b'T';
                let parsed = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<i32>().ok());
                match parsed {
                    Some(e) => {
                        out.put_u8(flag);
                        out.put_slice(cap_exptime(e, ttl).to_string().as_bytes());
                    }
                    // memcached answers the bad token itself.
                    None => out.put_slice(token),
                }
            }
            _ => out.put_slice(token),
        }
    }
    if verb == MetaVerb::Set && !has_t {
        out.put_slice(format!(" T{ttl}").as_bytes());
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exptimes_are_capped_at_the_failover_ttl() {
        assert_eq!(cap_exptime(0, 10), 10);
        assert_eq!(cap_exptime(5, 10), 5);
        assert_eq!(cap_exptime(3600, 10), 10);
        assert_eq!(cap_exptime(-1, 10), -1);
        let soon = unix_now() as i32 + 5;
        assert_eq!(cap_exptime(soon, 10), soon);
        let later = unix_now() as i32 + 3600;
        assert_eq!(cap_exptime(later, 10), 10);
    }

    #[test]
    fn meta_lines_get_their_ttl_flags_capped() {
        let capped = |line: &str, verb| cap_meta_line(&Bytes::from(line.to_string()), verb, 10);
        assert_eq!(capped("ms k 2 T0 F5", MetaVerb::Set), "ms k 2 T10 F5");
        assert_eq!(capped("ms k 2 F5", MetaVerb::Set), "ms k 2 F5 T10");
        assert_eq!(capped("ms T 2 T3", MetaVerb::Set), "ms T 2 T3");
        assert_eq!(capped("mg k v T60 N0", MetaVerb::Get), "mg k v T10 N10");
        assert_eq!(capped("mg k v", MetaVerb::Get), "mg k v");
        assert_eq!(capped("ma N99 N99", MetaVerb::Arith), "ma N99 N10");
    }
}

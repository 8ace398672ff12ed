//! Shared harness of the integration tests.
//!
//! - [`memroute`]: the binary under test — [`Memroute::builder`] (pools, routes, `[listen]` and
//!   `[admin]` lines, CLI arguments) starts it and returns the one handle: clients, `metrics()`,
//!   `http()`, signals, exit status, log.
//! - [`process`]: [`Memcached`] backends on free loopback ports, signals; [`nutcracker`]:
//!   [`Nutcracker`] (twemproxy 0.5), the reference.
//! - [`relay`]: a fault-injecting TCP relay in front of a real memcached (inject bytes, delay,
//!   hold, close), for backend-fault tests.
//! - [`client`]: a blocking text-protocol [`Client`] that asserts exact bytes; [`http`]: a tiny
//!   HTTP client for the admin server and [`sample`], the one reader of `/metrics` text.
//! - [`poll`] / [`poll_for`]: the one bounded wait for something to become true.
//! - [`target`]: [`Target`], what protocol tests talk to — memroute in front of memcacheds, or
//!   one memcached directly with `MEMROUTE_TEST_TARGET=direct`, which proves the expected bytes
//!   against the real thing.
//!
//! Every test builds its own processes, so tests run in parallel; everything is killed on drop.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod http;
pub mod memroute;
pub mod nutcracker;
pub mod process;
pub mod relay;
pub mod target;

use std::time::{Duration, Instant};

pub use client::{Client, exchange};
pub use http::{HttpReply, counter, http, sample, try_http};
pub use memroute::{Builder, Memroute};
pub use nutcracker::{Nutcracker, nutcracker_config};
pub use process::{Memcached, assert_success, free_port, run_ok, send_signal};
pub use target::{
    Target, TargetKind, config_one_pool, config_one_pool_with, run_exchanges, skip_unless_memroute,
    target,
};

/// A table of `(request, expected reply)` rows for [`Client::roundtrips`], one row a line in
/// the form [`exchange_tests!`] uses: `rows![b"get k\r\n" => b"END\r\n", …]`. Either side is
/// any byte-string expression (`b"…"`, `line.as_bytes()`); an empty reply means none is expected.
#[macro_export]
macro_rules! rows {
    ($($request:expr => $reply:expr),* $(,)?) => {
        &[$((&$request[..], &$reply[..])),*]
    };
}

/// Tests that are only bytes in and bytes out, as a table (pelikan's style): one `#[test]` per
/// row `name: request => reply, request => reply, …;`, run in order on one connection to a fresh
/// [`Target`] by [`run_exchanges`]. An empty reply means none is expected (`noreply`).
#[macro_export]
macro_rules! exchange_tests {
    ($($(#[$meta:meta])* $name:ident: $($request:literal => $reply:literal),+ $(,)?;)+) => {
        $(
            $(#[$meta])*
            #[test]
            fn $name() {
                $crate::common::run_exchanges($crate::rows![$($request => $reply),+]);
            }
        )+
    };
}

/// `n` distinct keys `"{i}:{tag}"`; a few dozen reach every server of a 3-server ring.
///
/// The counter comes first on purpose: twemproxy's default hash (`fnv1a_64`, really FNV-1a 32)
/// maps keys that differ only in their last bytes to nearby ring positions, so `tag:0`..`tag:59`
/// can all land on one or two servers (checked against nutcracker: 10/50/0 of 60).
pub fn keys(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i}:{tag}")).collect()
}

/// The exact bytes of a `get` hit for one item: `VALUE key flags len\r\nvalue\r\n`.
pub fn value_reply(key: &str, flags: u32, value: &[u8]) -> Vec<u8> {
    let mut out = format!("VALUE {key} {flags} {}\r\n", value.len()).into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

/// The exact bytes of a storage request: `cmd key flags exptime len[ extra]\r\nvalue\r\n`
/// (`extra` is e.g. a cas unique and/or `noreply`).
pub fn storage(
    cmd: &str,
    key: &str,
    flags: u32,
    exptime: i64,
    value: &[u8],
    extra: &str,
) -> Vec<u8> {
    let sep = if extra.is_empty() { "" } else { " " };
    let mut out = format!(
        "{cmd} {key} {flags} {exptime} {}{sep}{extra}\r\n",
        value.len()
    )
    .into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

/// Longest any bounded poll of these tests waits.
pub const POLL_LIMIT: Duration = Duration::from_secs(10);
/// Pause between two tries of a poll.
pub const POLL_STEP: Duration = Duration::from_millis(20);

/// Polls `f` every [`POLL_STEP`] until it returns `Some`, for at most [`POLL_LIMIT`]; panics
/// naming `what`.
#[track_caller]
pub fn poll<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_for(POLL_LIMIT, f)
        .unwrap_or_else(|| panic!("timed out after {POLL_LIMIT:?} waiting for {what}"))
}

/// Polls `f` every [`POLL_STEP`] until it returns `Some`, for at most `limit`: `None` if it
/// never did (for tests that assert something does *not* happen, or wait longer than usual).
pub fn poll_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_STEP);
    }
}

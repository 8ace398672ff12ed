//! memroute — a memcached proxy.
//!
//! The modules follow the path of a request:
//!
//! - [`protocol`]: the client-side ASCII parser ([`protocol::request`]), the exact reply bytes
//!   memcached sends ([`protocol::reply`]) and the parser for backend answers
//!   ([`protocol::backend`]).
//! - [`server`]: the listener (connection limit) and the client session: read, parse, dispatch,
//!   write replies in request order, answer proxy-local commands (`version`, `stats`, …).
//! - [`route`]: prefix match from a key to a route, and the fallback-tier semantics of DESIGN §4.
//! - [`ring`]: twemproxy's key hash functions and the ketama / modula / random distributions.
//! - [`backend`]: a pool of memcached servers, each with shared pipelined connections (requests of
//!   all clients batched into one write, adjacent `get`s merged into one command), per-request
//!   timeouts and health (failure limit, retry, ejection).
//! - [`config`]: TOML → validated immutable snapshot, hot reload, nutcracker import.
//! - [`admin`]: the hyper admin server: `/metrics`, `/healthz`, `/readyz`, `/config`, `/route`.
//! - [`metrics`]: every Prometheus series, with handles resolved once.
//! - [`state`]: the live state (config snapshot + pools + routes) behind an `ArcSwap`, and
//!   what a reload changes in it.
//! - [`io`]: the write-or-flush and yield steps the client and backend sides share.
//! - [`watch`]: file and `SIGHUP` watching, debounced (config reload, certificates).
//! - [`tls`]: TLS to clients and to backends (rustls): certificate loading with located errors,
//!   acceptors and connectors that reload when their files change, handshake failure counting.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod config;
pub mod io;
pub mod metrics;
pub mod protocol;
pub mod ring;
pub mod route;
pub mod server;
pub mod state;
pub mod tls;
pub mod watch;

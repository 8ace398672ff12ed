//! The memcached ASCII protocol, both directions.
//!
//! - [`request`]: parses what clients send into [`request::Request`]s (never panics; limits are
//!   checked before waiting for more bytes).
//! - [`command`]: the keyed operations the proxy forwards ([`command::Op`]) and how they are
//!   written to a backend.
//! - [`meta`]: the meta commands (`mg ms md ma mn me`): checks, `q` and base64 keys.
//! - [`reply`]: memcached's exact reply lines.
//! - [`exptime`]: relative and absolute exptimes, remaining TTLs.
//! - [`backend`]: parses backend answers, keyed by what was asked.

pub mod backend;
pub mod command;
pub mod exptime;
pub mod meta;
pub mod number;
pub mod reply;
pub mod request;

/// Longest key memcached accepts.
pub const KEY_MAX_LENGTH: usize = 250;

//! Backend memcached servers: pools, shared pipelined connections, health.
//!
//! - [`pool`]: a named set of servers with its ring; picks the server for a key, leaving out
//!   ejected servers when `eject = true`.
//! - [`server`]: one memcached server: `connections` shared connections plus its [`health`];
//!   a session's [`Lane`] says which connection its requests use.
//! - [`conn`]: one supervised, pipelined TCP connection: one task batches requests from every
//!   client into one write and parses answers first-in first-out; any end (error, panic) is
//!   followed by a reconnect with backoff.
//! - [`inflight`]: the connection's FIFO of written requests, their deadlines and its timer.
//! - [`batch`]: what one write holds: encoded requests, their in-flight entries, and `get`s of
//!   different clients merged into one multi-key command.
//! - [`settings`]: [`ServerSettings`], one server's settings, shared by the server, its
//!   connections and its health.
//! - [`health`]: up / down / probing: consecutive-failure counting, mark down, one probe per
//!   retry.
//! - [`error`]: [`BackendError`], what failed, where, whether a retry is safe, and the cause.

pub mod batch;
pub mod conn;
pub mod error;
pub mod health;
pub mod inflight;
pub mod pool;
pub mod server;
pub mod settings;

pub use error::{BackendError, ErrorKind, Origin};
pub use pool::{Pool, Pools};
pub use server::{Lane, Server};
pub use settings::ServerSettings;

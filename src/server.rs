//! The client side: accept connections and run one session per client.
//!
//! - [`listener`]: accepts, enforces `max_connections`, starts sessions, stops on shutdown
//!   ([`stop`]: the signal that tells a listener's sessions to drain).
//! - [`session`]: reads and parses requests, dispatches them, writes replies in request order
//!   ([`in_order`]: the replies still owed, completed oldest first;
//!   [`output`]: the per-client byte cap on replies it has not read yet;
//!   [`replies`]: those replies, large values kept as their backend's bytes;
//!   [`fair`]: each session's share of the backends when sessions compete).
//! - [`local`]: commands the proxy answers itself (`version`, the `stats` family, `flush_all`
//!   and `cache_memlimit` fan-out); [`connections`]: the open sockets `stats conns` lists.
//! - [`stream`]: what a session runs on, plain TCP or TLS ([`crate::tls`]).

pub mod fair;
pub mod in_order;
pub mod listener;
pub mod local;
pub mod output;
pub mod replies;
pub mod session;
pub mod shutdown;
pub mod stop;
pub mod stream;

pub use listener::supervise;

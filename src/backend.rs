//! Backend memcached servers: pools, shared pipelined connections, health.
//!
//! - [`pool`]: a named set of servers with its ring; picks the server for a key, leaving out
//!   ejected servers when `eject = true`.
//! - [`server`]: one memcached server: `connections` shared connections plus its [`health`].
//! - [`conn`]: one pipelined TCP connection: a writer that batches requests from every client and
//!   a reader that matches answers first-in first-out, with per-request deadlines.
//! - [`batch`]: what one write holds: encoded requests, their in-flight entries, and `get`s of
//!   different clients merged into one multi-key command.
//! - [`health`]: consecutive-failure counting, mark down / retry.

pub mod batch;
pub mod conn;
pub mod health;
pub mod pool;
pub mod server;

pub use pool::Pool;
pub use server::Server;

/// Why a backend request failed. Each maps to one `SERVER_ERROR` line for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// No answer within the pool's `timeout`.
    #[error("timeout")]
    Timeout,
    /// The server could not be connected to.
    #[error("backend connect failed")]
    Connect,
    /// The connection was lost before the answer came.
    #[error("backend connection closed")]
    Closed,
    /// The server is marked down after `failure_limit` failures.
    #[error("backend marked down")]
    Down,
    /// The backend's answer could not be parsed.
    #[error("backend protocol error")]
    Protocol,
    /// Every server of the pool is ejected.
    #[error("no live backend")]
    NoServer,
    /// The TLS handshake with the server failed (its certificate does not verify, …).
    #[error("backend TLS handshake failed")]
    Tls,
}

impl BackendError {
    /// The exact line sent to the client.
    pub fn reply(self) -> &'static [u8] {
        match self {
            BackendError::Timeout => b"SERVER_ERROR timeout\r\n",
            BackendError::Connect => b"SERVER_ERROR backend connect failed\r\n",
            BackendError::Closed => b"SERVER_ERROR backend connection closed\r\n",
            BackendError::Down => b"SERVER_ERROR backend marked down\r\n",
            BackendError::Protocol => b"SERVER_ERROR backend protocol error\r\n",
            BackendError::NoServer => b"SERVER_ERROR no live backend\r\n",
            BackendError::Tls => b"SERVER_ERROR backend TLS handshake failed\r\n",
        }
    }
}

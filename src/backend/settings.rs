//! One server's settings, built once from its pool's config and shared by everything that
//! serves the server: [`super::Server`], each of its connections ([`super::conn::Target`]) and
//! its [`super::health::Health`].

use std::time::Duration;

use crate::config::{PoolConfig, ServerConfig};

/// What memroute needs to know about one backend server. The server, its connections and its
/// health hold the same `Arc` of it, so each setting is stored once. Equal settings let a reload
/// keep a server's connections: the running servers are looked up by these.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerSettings {
    /// `host:port` as written (resolved on every connect).
    pub address: String,
    /// Connections to keep open (the pool's `connections`).
    pub connections: usize,
    /// Per-request timeout, also the connect and TLS handshake timeout (the pool's `timeout`).
    pub timeout: Duration,
    /// Consecutive failures before the server is marked down (the pool's `failure_limit`).
    pub failure_limit: u32,
    /// Time spent down before a probe (the pool's `retry_timeout`).
    pub retry_timeout: Duration,
    /// Merge adjacent retrievals into one command (the pool's `merge_gets`).
    pub merge_gets: bool,
    /// Longest value accepted from the server (the listener's `max_value_size`).
    pub max_value_size: usize,
    /// TLS to the server (the pool's `tls`).
    pub tls: Option<crate::tls::BackendTls>,
}

impl ServerSettings {
    /// The settings of `server`, one of `pool`'s; `max_value_size` is the listener's.
    pub fn new(pool: &PoolConfig, server: &ServerConfig, max_value_size: usize) -> ServerSettings {
        ServerSettings {
            address: server.address.clone(),
            connections: pool.connections,
            timeout: pool.timeout,
            failure_limit: pool.failure_limit,
            retry_timeout: pool.retry_timeout,
            merge_gets: pool.merge_gets,
            max_value_size,
            tls: pool.tls.clone(),
        }
    }

    /// Settings for unit tests: one connection, merging on, a 1 KiB value limit; the caller
    /// changes what its test is about.
    #[cfg(test)]
    pub fn test(address: &str) -> ServerSettings {
        ServerSettings {
            address: address.to_string(),
            connections: 1,
            timeout: Duration::from_secs(1),
            failure_limit: 1,
            retry_timeout: Duration::from_secs(10),
            merge_gets: true,
            max_value_size: 1024,
            tls: None,
        }
    }
}

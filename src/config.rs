//! Configuration: the validated, immutable snapshot the proxy runs on.
//!
//! Loading goes in two stages (see STYLE.md, "Config and reload"):
//! [`raw`] deserializes the TOML into serde structs that keep spans, and [`validate`] turns them
//! into a [`Config`], collecting **every** error with its line and column. [`reload`] watches the
//! file and swaps new snapshots in; [`nutcracker`] converts a twemproxy YAML file.

#[cfg(test)]
mod expect;
pub mod nutcracker;
pub mod raw;
pub mod reload;
pub mod validate;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::ring::{Distribution, HashFn};

pub use validate::{ConfigError, ConfigErrors};

/// Default client listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:11311";
/// Default admin (HTTP) listen address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9100";
/// Default maximum number of client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16384;
/// Default largest value accepted in a storage command (memcached's default item size).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1024 * 1024;
/// Default longest request line accepted without `\r\n`.
pub const DEFAULT_MAX_LINE_SIZE: usize = 64 * 1024;
/// Default number of requests one client may have in flight before we stop reading from it.
pub const DEFAULT_MAX_INFLIGHT: usize = 1024;
/// Default cap on the reply bytes memroute holds for one client that does not read them.
pub const DEFAULT_MAX_CLIENT_OUTPUT: usize = 4 * 1024 * 1024;
/// Default per-request backend timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default number of shared connections per backend server.
pub const DEFAULT_CONNECTIONS: usize = 2;
/// Default consecutive failures before a server is marked down.
pub const DEFAULT_FAILURE_LIMIT: u32 = 3;
/// Default time a server stays down before it is probed again.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on the TTL of items written to a gutter pool (`failover_ttl`).
pub const DEFAULT_FAILOVER_TTL: Duration = Duration::from_secs(10);
/// How long a resized pool's previous ring stays behind it as an implicit lower tier.
pub const DEFAULT_RESHARD_WARMUP: Duration = Duration::from_secs(600);
/// How long a tombstone (a lower-tier invalidation that could not be made) lives in tier 0.
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// Default permissions of a Unix socket listener: owner only, as memcached's `-a 0700`.
pub const DEFAULT_UNIX_MODE: u32 = 0o700;

/// The whole validated configuration. Immutable: a reload builds a new one.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Settings of every client connection, and the first listener's address.
    pub listen: ListenConfig,
    /// Every client listener: `[listen] address` (or the default address when there is no
    /// `[[listeners]]`) first, then each `[[listeners]]` entry. Never empty.
    pub listeners: Vec<ListenerConfig>,
    /// The admin HTTP server; `None` when the `[admin]` table is absent.
    pub admin: Option<AdminConfig>,
    /// Pools by name.
    pub pools: BTreeMap<String, PoolConfig>,
    /// Routes in file order (lookup is by longest prefix, see [`crate::route`]).
    pub routes: Vec<RouteConfig>,
}

/// `[listen]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenConfig {
    /// `host:port` to bind for memcached clients.
    pub address: String,
    /// Connections beyond this get `SERVER_ERROR too many open connections` and are closed.
    pub max_connections: usize,
    /// `flush_all` is refused unless this is true.
    pub allow_flush_all: bool,
    /// Largest value of a storage command; larger ones get `SERVER_ERROR object too large for cache`.
    pub max_value_size: usize,
    /// Longest line without `\r\n` before `CLIENT_ERROR line too long` and close.
    pub max_line_size: usize,
    /// Requests one client may have in flight before the proxy stops reading from it.
    pub max_inflight: usize,
    /// `tls = { ... }`: clients must speak TLS (see [`crate::tls`]).
    pub tls: Option<crate::tls::ListenTls>,
    /// Bytes of replies memroute may hold for one client (written to it or on their way) before
    /// it stops reading that client's requests until the client has read them.
    pub max_client_output: usize,
}

/// Where a listener accepts clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddress {
    /// `host:port`.
    Tcp(String),
    /// `unix:/path`.
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Tcp(a) => f.write_str(a),
            ListenAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One client listener (`[listen]` or a `[[listeners]]` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Where it accepts.
    pub address: ListenAddress,
    /// Permissions of a Unix socket (ignored for TCP).
    pub mode: u32,
    /// Connections of this listener beyond this are refused.
    pub max_connections: usize,
    /// Every key received here goes to this pool; `None`: the `[[routes]]` decide.
    pub pool: Option<String>,
    /// TLS for its clients (TCP only): its own `tls`, else `[listen] tls`; `tls = false` on a
    /// `[[listeners]]` entry makes it plain.
    pub tls: Option<crate::tls::ListenTls>,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// `host:port` of the HTTP server.
    pub address: String,
}

/// `[pools.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The table name.
    pub name: String,
    /// Servers in configuration order.
    pub servers: Vec<ServerConfig>,
    /// Key hash function.
    pub hash: HashFn,
    /// Key distribution over the servers.
    pub distribution: Distribution,
    /// Two delimiter bytes, e.g. `{}`: only the part of the key between them is hashed.
    pub hash_tag: Option<[u8; 2]>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Shared pipelined connections per server.
    pub connections: usize,
    /// Consecutive failures before a server is marked down.
    pub failure_limit: u32,
    /// How long a server stays down before it is tried again.
    pub retry_timeout: Duration,
    /// When true a down server leaves the ring (twemproxy's `auto_eject_hosts`).
    pub eject: bool,
    /// Adjacent `get`s of different clients go to a server as one multi-key command.
    pub merge_gets: bool,
    /// `tls = { ... }`: connections to the servers use TLS (see [`crate::tls`]).
    pub tls: Option<crate::tls::BackendTls>,
    /// `failover = "POOL"`: while a server is marked down its keys go to this gutter pool.
    pub failover: Option<String>,
    /// Longest TTL of an item written to the gutter pool.
    pub failover_ttl: Duration,
    /// After a reload changes this pool's ring, the previous ring is asked for keys that moved
    /// for this long (zero: off). See [`crate::route::tiers::reshard`].
    pub reshard_warmup: Duration,
}

/// One server of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerConfig {
    /// `host:port` as written (a host name is resolved at connect time).
    pub address: String,
    /// Ketama weight (≥ 1).
    pub weight: u32,
    /// The name on the ring: the configured name, else `host` when the port is 11211, else
    /// `host:port` (twemproxy's rule).
    pub name: String,
    /// True when `name` was given explicitly in the config.
    pub named: bool,
}

/// What a write does to the lower tiers of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LowerOnWrite {
    /// Delete the key in every lower tier (default): an old value can never come back.
    #[default]
    Delete,
    /// Leave lower tiers alone.
    Ignore,
    /// Write the same value to every tier.
    Set,
}

/// `[[routes]]`. (`Default` is for filling in the keys a constructor does not name: no tiers,
/// no replicas, no shadow.)
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteConfig {
    /// Key prefix this route matches; `""` matches every key.
    pub prefix: String,
    /// Pool names: tier 0 owns the keys, later tiers are older pools with warm data.
    pub tiers: Vec<String>,
    /// Copy lower-tier hits into tier 0.
    pub warm: bool,
    /// TTL for copies when the lower tier cannot report the remaining TTL (no meta commands).
    pub warm_ttl: Option<Duration>,
    /// What writes do to the lower tiers.
    pub lower_on_write: LowerOnWrite,
    /// Life of a tombstone written into tier 0 when an explicit lower tier could not take an
    /// invalidation (see [`crate::route::tiers::tombstone`]).
    pub tombstone_ttl: Duration,
    /// `replicas = [...]`: every pool holds every key (see [`crate::route::replicas`]); empty
    /// for a route with `tiers`, whose `tiers` is then the first replica alone.
    pub replicas: Vec<String>,
    /// When a write on a replicated route is answered.
    pub write_mode: WriteMode,
    /// A read that misses on a replica also asks the next one.
    pub read_miss_failover: bool,
    /// `shadow = { pool, fraction }`: a copy of some requests goes to a candidate pool.
    pub shadow: Option<ShadowConfig>,
}

/// When a replicated write answers the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// After every replica answered (default).
    #[default]
    Sync,
    /// After the first replica answered; the others finish in the background.
    Async,
}

/// `shadow = { pool = "candidate", fraction = 0.1 }` on a route.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowConfig {
    /// The candidate pool.
    pub pool: String,
    /// Share of keys (by key hash) whose requests are copied, in `(0, 1]`.
    pub fraction: f64,
}

impl Config {
    /// Reads, parses and validates a config file. Every problem is reported in the error.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::single(path.display().to_string(), format!("cannot read file: {e}"))
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `file` names it in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        validate::parse(text, file)
    }
}

//! What is measured: the keyspace (every key's value is a function of the key, so every reply can
//! be checked byte for byte), the workloads, and the messages exchanged with the worker process
//! that generates the load.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Key `i` is `bench:<i>`.
pub fn key(i: u32) -> String {
    format!("bench:{i}")
}

/// Flags stored with key `i` (checked on every hit: a value served for the wrong key shows).
pub fn flags(i: u32) -> u32 {
    i
}

/// The value of key `i`: its number, then letters that depend on it, `size` bytes in all.
pub fn value(i: u32, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size.max(12));
    v.extend_from_slice(format!("{i}-").as_bytes());
    let mut j = 0u32;
    while v.len() < size {
        v.push(b'a' + ((i.wrapping_mul(31).wrapping_add(j)) % 26) as u8);
        j += 1;
    }
    v.truncate(size);
    v
}

/// Keys absent from tier 0 in workload (e): every `gap`-th key (`gap` = 0: none).
pub fn in_gap(i: u32, gap: u32) -> bool {
    gap > 0 && i % gap == 0
}

/// The client or proxy a measurement goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The load generator talks to the memcached servers itself (connection `i` to server
    /// `i % n`; every server holds every key).
    Direct,
    /// twemproxy 0.5 (Debian's `nutcracker`).
    Nutcracker,
    /// This project, release build.
    Memroute,
    /// Another memroute build (`--memroute-b`), for A/B comparisons.
    MemrouteB,
    /// memcached's built-in proxy (`--mcproxy`, memcached built with `--enable-proxy`), one
    /// worker thread.
    McProxy,
    /// memroute with two worker threads (workload t).
    Memroute2T,
    /// memcached's proxy with two worker threads (workload t).
    McProxy2T,
}

impl Target {
    /// Row label.
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Nutcracker => "nutcracker",
            Target::Memroute => "memroute",
            Target::MemrouteB => "memroute-b",
            Target::McProxy => "mcproxy",
            Target::Memroute2T => "memroute-2t",
            Target::McProxy2T => "mcproxy-2t",
        }
    }

    /// Whether this target is memcached's proxy (only run when `--mcproxy` is given).
    pub fn is_mcproxy(self) -> bool {
        matches!(self, Target::McProxy | Target::McProxy2T)
    }
}

/// The request protocol of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Proto {
    /// ASCII `get k…` / `set`.
    #[default]
    Classic,
    /// Meta `mg <key> f v` / `ms <key> <size> F<flags>`: one request per command.
    Meta,
    /// A batch of `mget` quiet meta gets `mg <key> k f v q`, then `mn`: one request per batch;
    /// only hits are answered, and `MN` ends the batch.
    MetaQuiet,
}

/// One workload of the issue.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `a` … `e`.
    pub id: char,
    /// Row label.
    pub title: &'static str,
    /// Client connections.
    pub conns: usize,
    /// Requests written at once per connection (1 = no pipelining).
    pub depth: usize,
    /// Keys per `get`.
    pub mget: usize,
    /// Percentage of requests that are `set`s (the rest are `get`s).
    pub set_percent: u32,
    /// Every `gap`-th key is missing from tier 0 (workload e); 0 = none.
    pub gap: u32,
    /// Request protocol.
    pub proto: Proto,
    /// Value size in bytes (`None`: `--value-size`).
    pub value_size: Option<usize>,
    /// At most this many keys (`--keys` otherwise), so big values fit the servers' memory.
    pub max_keys: Option<u32>,
    /// Clients connect to the proxies over TLS (direct memcached stays plain: its TLS is a
    /// build and command-line option of the whole server).
    pub tls: bool,
    /// Unpinned: every process may run on every CPU, and proxies also run with two worker
    /// threads (workload t).
    pub unpinned: bool,
    /// The targets it runs against, in the order each round runs them (those of memcached's
    /// proxy only with `--mcproxy`).
    pub targets: &'static [Target],
}

const ALL: &[Target] = &[
    Target::Direct,
    Target::Nutcracker,
    Target::Memroute,
    Target::McProxy,
];

/// The workloads, in the order they run.
///
pub fn workloads() -> Vec<Workload> {
    let plain = |id, title, conns, depth, mget, set_percent| Workload {
        id,
        title,
        conns,
        depth,
        mget,
        set_percent,
        gap: 0,
        proto: Proto::Classic,
        value_size: None,
        max_keys: None,
        tls: false,
        unpinned: false,
        targets: ALL,
    };
    vec![
        plain('a', "50 conns, get:set 9:1", 50, 1, 1, 10),
        plain('b', "50 conns, 16 pipelined", 50, 16, 1, 10),
        plain('c', "50 conns, 10-key get", 50, 1, 10, 0),
        plain('d', "1000 conns, get:set 9:1", 1000, 1, 1, 10),
        Workload {
            gap: 10,
            // twemproxy and memcached's proxy (as configured) have no fallback tiers.
            targets: &[Target::Direct, Target::Memroute],
            ..plain('e', "as (a), tier 0 misses 10%", 50, 1, 1, 10)
        },
        Workload {
            proto: Proto::Meta,
            ..plain('f', "meta mg:ms 9:1, 50 conns", 50, 1, 1, 10)
        },
        Workload {
            proto: Proto::MetaQuiet,
            ..plain('g', "10 quiet mg + mn, 50 conns", 50, 1, 10, 0)
        },
        Workload {
            value_size: Some(4096),
            ..plain('h', "as (a), 4 KiB values", 50, 1, 1, 10)
        },
        Workload {
            value_size: Some(100 * 1024),
            max_keys: Some(1000),
            ..plain('i', "as (a), 100 KiB, 1000 keys", 50, 1, 1, 10)
        },
        Workload {
            tls: true,
            // nutcracker has no TLS; memcached's proxy here is built without it.
            targets: &[Target::Direct, Target::Memroute],
            ..plain('k', "as (a), clients over TLS", 50, 1, 1, 10)
        },
        Workload {
            unpinned: true,
            targets: &[
                Target::Direct,
                Target::Nutcracker,
                Target::Memroute,
                Target::Memroute2T,
                Target::McProxy,
                Target::McProxy2T,
            ],
            ..plain('t', "as (a), unpinned, 1|2 thr", 50, 1, 1, 10)
        },
    ]
}

/// A job for the worker process (sent as JSON on its command line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// Closed-loop load; prints one [`LoadResult`] line.
    Load(LoadSpec),
    /// Make a memcached server hold exactly the keys outside the gap (set them, delete the gap);
    /// prints one [`FillResult`] line.
    Fill {
        /// The server.
        addr: String,
        /// Keyspace size.
        keys: u32,
        /// Value size.
        value_size: usize,
        /// Keys `i % gap == 0` are deleted instead (0 = none).
        gap: u32,
    },
    /// Open `conns` connections, do one `get` on each, print `READY <ok> <failed>`, keep them
    /// open until stdin closes, then close them all and print `CLOSED`.
    Hold {
        /// The proxy.
        addr: String,
        /// How many connections.
        conns: usize,
        /// Value size (to check the `get`).
        value_size: usize,
    },
}

/// Closed-loop load: every connection writes `depth` requests, reads and checks every reply,
/// and only then writes again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSpec {
    /// Connection `i` goes to `addrs[i % addrs.len()]`.
    pub addrs: Vec<String>,
    /// Connections.
    pub conns: usize,
    /// Requests per write.
    pub depth: usize,
    /// Keys per `get` (per batch of quiet `mg`s).
    pub mget: usize,
    /// Request protocol.
    pub proto: Proto,
    /// Percentage of `set`s.
    pub set_percent: u32,
    /// Keyspace size.
    pub keys: u32,
    /// Keys in the gap are never written (so tier 0 keeps missing them).
    pub gap: u32,
    /// Value size.
    pub value_size: usize,
    /// Not measured, after every connection is open.
    pub warmup_ms: u64,
    /// Measured.
    pub measure_ms: u64,
    /// Processes whose CPU time is read at the start and end of the measured window.
    pub watch: Vec<Watch>,
    /// Clock ticks per second of `/proc/PID/stat`.
    pub clk_tck: u64,
    /// RNG seed (differs per round).
    pub seed: u64,
    /// Connect over TLS, trusting this CA (PEM), with the server name `localhost`.
    pub tls_ca: Option<PathBuf>,
}

/// A group of processes whose CPU time is summed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Watch {
    /// Name in the result.
    pub label: String,
    /// The processes.
    pub pids: Vec<u32>,
}

/// What one measured window gave.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// Replies completed inside the window (errors included).
    pub requests: u64,
    /// Replies that were an error line or did not match what was stored.
    pub errors: u64,
    /// Keys asked for by `get`s in the window.
    pub keys_asked: u64,
    /// Of those, keys answered with no value.
    pub keys_missed: u64,
    /// Connections that failed (closed, unparsable reply, 10 s without progress).
    pub failed_conns: u64,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
    /// Length of the window, s.
    pub secs: f64,
    /// Latency percentiles, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Requests of the slowest connection as % of the average connection's (100 = all served
    /// alike).
    pub slowest_conn_pct: f64,
    /// CPU seconds (user + system) per watch label, over the window.
    pub cpu: Vec<(String, f64)>,
}

/// What a fill did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FillResult {
    /// Keys stored.
    pub stored: u64,
    /// Keys deleted (or already absent).
    pub deleted: u64,
    /// Replies that were not the expected ones.
    pub errors: u64,
}

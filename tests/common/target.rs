//! What a protocol test talks to: memroute in front of real memcacheds (the default), or, with
//! `MEMROUTE_TEST_TARGET=direct`, one memcached directly. Running the same assertions against
//! memcached proves the expected bytes are memcached's.

use super::client::Client;
use super::memroute::Memroute;
use super::process::Memcached;

/// Which system the protocol tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// memroute with a pool of memcacheds behind it.
    Memroute,
    /// One memcached, no proxy (`MEMROUTE_TEST_TARGET=direct`).
    Direct,
}

/// The target chosen by `MEMROUTE_TEST_TARGET` (`direct`, or anything else / unset = memroute).
pub fn target() -> TargetKind {
    match std::env::var("MEMROUTE_TEST_TARGET").as_deref() {
        Ok("direct") => TargetKind::Direct,
        _ => TargetKind::Memroute,
    }
}

/// For tests of memroute-only behaviour: true (and a note on stderr) when running direct, so the
/// test can `return` early.
pub fn skip_unless_memroute(why: &str) -> bool {
    let skip = target() == TargetKind::Direct;
    if skip {
        eprintln!("skipped under MEMROUTE_TEST_TARGET=direct: {why}");
    }
    skip
}

/// DESIGN §5 config with one pool `main` and the default route to it.
pub fn config_one_pool(listen_port: u16, servers: &[String]) -> String {
    config_one_pool_with(listen_port, servers, "", "")
}

/// As [`config_one_pool`], with extra lines for the `[listen]` table (e.g.
/// `allow_flush_all = true`) and for `[pools.main]` (e.g. `timeout = "200ms"`). New tests use
/// [`Memroute::builder`].
pub fn config_one_pool_with(
    listen_port: u16,
    servers: &[String],
    listen_extra: &str,
    pool_extra: &str,
) -> String {
    Memroute::builder()
        .listen(listen_extra)
        .pool_with("main", servers, pool_extra)
        .render(listen_port, None)
}

/// A running target: its memcacheds and, unless direct, the memroute in front of them.
pub struct Target {
    /// Which kind this is.
    pub kind: TargetKind,
    /// The backends (exactly one under direct).
    pub backends: Vec<Memcached>,
    /// The proxy (`None` under direct).
    pub proxy: Option<Memroute>,
}

impl Target {
    /// `backends` memcacheds behind memroute with the default config (one under direct).
    pub fn new(backends: usize) -> Target {
        Target::with_options(backends, "", "")
    }

    /// As [`Target::new`], with extra `[listen]` and `[pools.main]` lines for memroute (ignored
    /// under direct, where there is no config).
    pub fn with_options(backends: usize, listen_extra: &str, pool_extra: &str) -> Target {
        let kind = target();
        let n = if kind == TargetKind::Direct {
            1
        } else {
            backends
        };
        let backends: Vec<Memcached> = (0..n).map(|_| Memcached::start()).collect();
        let proxy = (kind == TargetKind::Memroute).then(|| {
            Memroute::builder()
                .listen(listen_extra)
                .pool_with("main", &backends, pool_extra)
                .start()
        });
        Target {
            kind,
            backends,
            proxy,
        }
    }

    /// For a test of memroute-only behaviour (`why` says why memcached is no reference): memroute
    /// over `backends` memcacheds and a client, or `None` under direct (the test returns), with a
    /// note on stderr.
    pub fn memroute_only(why: &str, backends: usize) -> Option<(Target, Client)> {
        Target::memroute_only_with(why, backends, "", "")
    }

    /// As [`Target::memroute_only`], with extra `[listen]` and `[pools.main]` lines.
    pub fn memroute_only_with(
        why: &str,
        backends: usize,
        listen_extra: &str,
        pool_extra: &str,
    ) -> Option<(Target, Client)> {
        if skip_unless_memroute(why) {
            return None;
        }
        let t = Target::with_options(backends, listen_extra, pool_extra);
        let c = t.client();
        Some((t, c))
    }

    /// True when talking to memcached directly.
    pub fn is_direct(&self) -> bool {
        self.kind == TargetKind::Direct
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        match &self.proxy {
            Some(p) => p.port,
            None => self.backends[0].port,
        }
    }

    /// A new client connection to the target.
    pub fn client(&self) -> Client {
        Client::connect(self.port())
    }

    /// Indexes of the backends that hold `key`, asked directly (bypassing the proxy).
    pub fn holders(&self, key: &str) -> Vec<usize> {
        let mut found = Vec::new();
        for (i, b) in self.backends.iter().enumerate() {
            let mut c = Client::connect(b.port);
            c.send(format!("mg {key}\r\n").as_bytes());
            match c.read_line().as_slice() {
                b"HD\r\n" => found.push(i),
                b"EN\r\n" => {}
                other => panic!("unexpected mg answer {:?}", String::from_utf8_lossy(other)),
            }
        }
        found
    }

    /// Asserts every backend holds at least one of `keys`: the test really spans all servers.
    #[track_caller]
    pub fn assert_keys_on_every_backend(&self, keys: &[String]) {
        let mut per_backend = vec![0usize; self.backends.len()];
        for k in keys {
            for i in self.holders(k) {
                per_backend[i] += 1;
            }
        }
        assert!(
            per_backend.iter().all(|&n| n > 0),
            "keys do not reach every backend: {per_backend:?}"
        );
    }
}

/// Runs `rows` in order on one connection to a fresh three-backend [`Target`]: sends each
/// request and asserts the reply is exactly the expected bytes (empty: no reply, as after
/// `noreply`). What [`exchange_tests!`](crate::exchange_tests) runs for each of its rows.
#[track_caller]
pub fn run_exchanges(rows: &[(&[u8], &[u8])]) {
    let t = Target::new(3);
    t.client().roundtrips(rows);
}

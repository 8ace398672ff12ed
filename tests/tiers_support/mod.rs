//! Helpers for the fallback-tier tests (`tests/tiers*.rs`, DESIGN §4): a migration setup —
//! pool `new` (two memcacheds, tier 0) and pool `old` (one memcached, tier 1) behind memroute —
//! and direct, byte-exact looks at the backends with `mg <key> v f t`.
//!
//! Built on the shared harness in `tests/common` (which this file does not change).

// Each test binary uses only part of these helpers.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{Builder, Client, Memcached, Memroute, counter, poll};

/// Backend timeout of both pools (DESIGN §3); the delayed double delete waits this long.
pub const TIMEOUT: Duration = Duration::from_millis(500);

/// One item as a backend holds it, read with `mg <key> v f t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub flags: u32,
    /// Seconds left; `-1` = never expires.
    pub ttl: i64,
    pub value: Vec<u8>,
}

/// An expected item: `flags`, `ttl` seconds left (`-1` = never expires) and its value.
pub fn item(flags: u32, ttl: i64, value: &[u8]) -> Item {
    Item {
        flags,
        ttl,
        value: value.to_vec(),
    }
}

/// Current Unix time in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// The config of the brief: `[pools.new]` over `new` and `[pools.old]` over `old` (md5, 500 ms),
/// one default route `tiers = ["new", "old"]` plus `route_extra` lines (e.g.
/// `lower_on_write = "set"`). Add `.admin()` for an admin port.
pub fn migration<N: ToString, O: ToString>(
    new: impl IntoIterator<Item = N>,
    old: impl IntoIterator<Item = O>,
    route_extra: &str,
) -> Builder {
    let pool = "hash = \"md5\"\ntimeout = \"500ms\"";
    Memroute::builder()
        .pool_with("new", new, pool)
        .pool_with("old", old, pool)
        .route_with("", &["new", "old"], route_extra)
}

/// A migration in progress: `new` is tier 0, `old` still holds the warm data.
pub struct Migration {
    /// Pool `new`: two memcacheds (tier 0).
    pub new: Vec<Memcached>,
    /// Pool `old`: one memcached (tier 1).
    pub old: Memcached,
    pub proxy: Memroute,
}

impl Migration {
    /// Default route settings (`warm = true`, `lower_on_write = "delete"`).
    pub fn start() -> Migration {
        Migration::start_with("", false)
    }

    /// With extra `[[routes]]` lines and, if `admin`, an `[admin]` table on a free port.
    pub fn start_with(route_extra: &str, admin: bool) -> Migration {
        let new: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
        let old = Memcached::start();
        let setup = migration(&new, [&old], route_extra);
        let proxy = if admin { setup.admin() } else { setup }.start();
        Migration { new, old, proxy }
    }

    /// A client of memroute.
    pub fn client(&self) -> Client {
        Client::connect(self.proxy.port)
    }

    /// [`Migration::start`] with `key` already in old ([`Migration::put_old`]), and a client.
    pub fn holding_old(key: &str, flags: u32, exptime: i64, value: &[u8]) -> (Migration, Client) {
        let m = Migration::start();
        m.put_old(key, flags, exptime, value);
        let c = m.client();
        (m, c)
    }

    /// Asserts tier 0 holds `key` with `flags` and `value`, its TTL close to `ttl` seconds
    /// ([`assert_ttl_close`]); the item.
    #[track_caller]
    pub fn assert_in_new(&self, key: &str, flags: u32, value: &[u8], ttl: i64) -> Item {
        let copy = self
            .in_new(key)
            .unwrap_or_else(|| panic!("{key} is not in new"));
        assert_eq!(
            (copy.flags, &copy.value[..]),
            (flags, value),
            "{key} in new"
        );
        assert_ttl_close(copy.ttl, ttl);
        copy
    }

    /// Asserts what tier 0 (`new`) and the old pool hold of `key`, read directly.
    #[track_caller]
    pub fn assert_tiers(&self, key: &str, new: Option<Item>, old: Option<Item>) {
        assert_eq!(
            (self.in_new(key), self.in_old(key)),
            (new, old),
            "{key}: (new, old)"
        );
    }

    /// Asserts `cas`, a token memroute handed out for `key`, is the one of the tier-0 server
    /// that holds `key`.
    #[track_caller]
    pub fn assert_tier0_cas(&self, key: &str, cas: u64) {
        let holder = self.new_holder(key);
        let holder = holder.unwrap_or_else(|| panic!("{key} is not in new"));
        assert_eq!(meta_cas(self.new[holder].port, key), Some(cas), "{key}");
    }

    /// The item as tier 0 holds it: asks both `new` servers directly; at most one may have it.
    #[track_caller]
    pub fn in_new(&self, key: &str) -> Option<Item> {
        let found: Vec<Item> = self
            .new
            .iter()
            .filter_map(|m| meta_get(m.port, key))
            .collect();
        assert!(found.len() <= 1, "{key} is on both new servers: {found:?}");
        found.into_iter().next()
    }

    /// Index of the `new` server holding `key`, if any.
    pub fn new_holder(&self, key: &str) -> Option<usize> {
        (0..self.new.len()).find(|&i| meta_get(self.new[i].port, key).is_some())
    }

    /// The item as the old pool holds it.
    pub fn in_old(&self, key: &str) -> Option<Item> {
        meta_get(self.old.port, key)
    }

    /// Stores an item directly in the old pool (as if written before the migration).
    pub fn put_old(&self, key: &str, flags: u32, exptime: i64, value: &[u8]) {
        put(self.old.port, key, flags, exptime, value);
    }

    /// Deletes `key` directly from whichever `new` server holds it (as an eviction would).
    pub fn evict_from_new(&self, key: &str) {
        for m in &self.new {
            let mut c = Client::connect(m.port);
            c.send(format!("delete {key}\r\n").as_bytes());
            let line = c.read_line();
            assert!(
                line == b"DELETED\r\n" || line == b"NOT_FOUND\r\n",
                "{:?}",
                String::from_utf8_lossy(&line)
            );
        }
    }

    /// Asserts each of `keys` is gone: a miss through memroute (on `c`) and in neither tier.
    #[track_caller]
    pub fn assert_gone<K: AsRef<str>>(&self, c: &mut Client, keys: &[K]) {
        for key in keys.iter().map(AsRef::as_ref) {
            assert_eq!(get(c, key), b"END\r\n", "{key}");
            assert_eq!((self.in_new(key), self.in_old(key)), (None, None), "{key}");
        }
    }

    /// The `/metrics` text (memroute must run with `[admin]`).
    pub fn metrics(&self) -> String {
        self.proxy.metrics()
    }

    /// Waits (bounded) until `n` delayed double deletes (one per `delete`, one timeout after
    /// it) have been sent and answered (memroute must run with `[admin]`).
    #[track_caller]
    pub fn wait_for_double_deletes(&self, n: usize) {
        let labels = [("action", "double_delete"), ("result", "ok")];
        poll("the delayed double deletes", || {
            let done = counter(&self.metrics(), "memroute_lower_tier_writes_total", &labels);
            (done >= n as f64).then_some(())
        });
    }
}

/// `set` directly on one memcached, asserting `STORED`.
pub fn put(port: u16, key: &str, flags: u32, exptime: i64, value: &[u8]) {
    let mut c = Client::connect(port);
    c.roundtrip(
        &crate::common::storage("set", key, flags, exptime, value, ""),
        b"STORED\r\n",
    );
}

/// Sends `mg <key> <flags>` directly to one memcached: the connection and the answer line
/// (`None` for `EN`, a miss).
fn mg(port: u16, key: &str, flags: &str) -> (Client, Option<String>) {
    let mut c = Client::connect(port);
    c.send(format!("mg {key} {flags}\r\n").as_bytes());
    let line = String::from_utf8(c.read_line()).expect("ascii mg answer");
    let hit = (line != "EN\r\n").then(|| line.trim_end().to_string());
    (c, hit)
}

/// `mg <key> v f t` directly on one memcached: `VA <len> f<flags> t<secs>` + value, or `EN`.
pub fn meta_get(port: u16, key: &str) -> Option<Item> {
    let (mut c, line) = mg(port, key, "v f t");
    let line = line?;
    let fields: Vec<&str> = line.split(' ').collect();
    let number =
        |i: usize, flag: &str| -> Option<i64> { fields.get(i)?.strip_prefix(flag)?.parse().ok() };
    let (Some(len), Some(flags), Some(ttl)) = (number(1, ""), number(2, "f"), number(3, "t"))
    else {
        panic!("unexpected mg answer {line:?}");
    };
    assert!(
        fields.len() == 4 && fields[0] == "VA",
        "unexpected mg answer {line:?}"
    );
    let len = len as usize;
    let mut value = c.read_exact_bytes(len + 2);
    assert_eq!(&value[len..], b"\r\n", "value terminated by \\r\\n");
    value.truncate(len);
    let flags = u32::try_from(flags).expect("flags fit u32");
    Some(Item { flags, ttl, value })
}

/// The CAS unique a memcached holds for `key` (`mg <key> c` → `HD c<cas>`).
pub fn meta_cas(port: u16, key: &str) -> Option<u64> {
    let (_, line) = mg(port, key, "c");
    let line = line?;
    let cas = line
        .strip_prefix("HD c")
        .unwrap_or_else(|| panic!("unexpected mg answer {line:?}"));
    Some(cas.parse().expect("cas number"))
}

/// One retrieval answer (`VALUE` blocks up to and including `END`), as raw bytes.
pub fn read_retrieval(c: &mut Client) -> Vec<u8> {
    let mut all = Vec::new();
    for _ in 0..100_000 {
        let line = c.read_line();
        all.extend_from_slice(&line);
        if line == b"END\r\n" {
            return all;
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        let fields: Vec<&str> = text.trim_end().split(' ').collect();
        assert!(
            fields.len() >= 4 && fields[0] == "VALUE",
            "not a retrieval answer: {text:?} after {:?}",
            String::from_utf8_lossy(&all)
        );
        let len: usize = fields[3].parse().expect("length");
        all.extend(c.read_exact_bytes(len + 2));
    }
    panic!("no END after 100000 lines");
}

/// Sends `get <key>` and returns the whole answer.
pub fn get(c: &mut Client, key: &str) -> Vec<u8> {
    c.send(format!("get {key}\r\n").as_bytes());
    read_retrieval(c)
}

/// `VALUE key flags len\r\nvalue\r\nEND\r\n`: a one-key hit.
pub fn hit(key: &str, flags: u32, value: &[u8]) -> Vec<u8> {
    let mut out = crate::common::value_reply(key, flags, value);
    out.extend_from_slice(b"END\r\n");
    out
}

/// `(flags, cas, value)` of a one-key `gets`/`gats` hit read off `c`.
pub fn read_cas_hit(c: &mut Client, key: &str) -> (u32, u64, Vec<u8>) {
    let header = String::from_utf8(c.read_line()).expect("ascii header");
    let fields: Vec<&str> = header.trim_end().split(' ').collect();
    assert!(
        fields.len() == 5 && fields[0] == "VALUE" && fields[1] == key,
        "not a cas hit for {key}: {header:?}"
    );
    let len: usize = fields[3].parse().expect("length");
    let mut value = c.read_exact_bytes(len + 2);
    value.truncate(len);
    c.expect(b"END\r\n");
    (
        fields[2].parse().expect("flags"),
        fields[4].parse().expect("cas"),
        value,
    )
}

/// Asserts a copy's remaining TTL is the original's (±2 s, clock ticks of two processes).
#[track_caller]
pub fn assert_ttl_close(copy: i64, original: i64) {
    assert!(
        (copy - original).abs() <= 2,
        "copy has {copy} s left, the original {original} s"
    );
}

//! Helpers of the configuration acceptance tests (`config_check`, `reload`, `import_nutcracker`):
//! pool configs over test backends, where a key lives (asked directly), where ketama says it
//! should live, and the running config and metrics from the admin server. Built on `tests/common`.

#![allow(dead_code)]

use memroute::ring::{Distribution, HashFn, Ring, RingServer, hash_key};

use crate::common::{Builder, Client, Memcached, Memroute, http};

pub use crate::common::poll;

/// memroute with an admin port and one md5 pool `main` over `backends` (timeout 2 s), with the
/// default route to it.
pub fn one_pool(backends: &[&Memcached]) -> Builder {
    Memroute::builder()
        .admin()
        .pool_with("main", backends, "hash = \"md5\"\ntimeout = \"2s\"")
}

/// Index (into `servers`, addresses `host:port`) of the server ketama gives `key` in an md5 pool
/// of equal-weight unnamed servers: what twemproxy and memroute must both do.
pub fn md5_owner(servers: &[String], key: &str) -> usize {
    let ring_servers: Vec<RingServer<'_>> = servers
        .iter()
        .map(|s| RingServer {
            name: s.as_str(),
            weight: 1,
            live: true,
        })
        .collect();
    let ring = Ring::build(Distribution::Ketama, &ring_servers);
    ring.locate(hash_key(HashFn::Md5, None, key.as_bytes()))
        .expect("a live server")
}

/// The indices of `backends` that hold `key` with exactly `value`, asked directly with
/// `mg key v` on one connection per backend, for many keys at once (pipelined).
pub fn holders_of(backends: &[&Memcached], items: &[(String, String)]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); items.len()];
    for (b, backend) in backends.iter().enumerate() {
        let mut c = Client::connect(backend.port);
        for chunk_start in (0..items.len()).step_by(200) {
            let chunk = &items[chunk_start..(chunk_start + 200).min(items.len())];
            let mut req = Vec::new();
            for (key, _) in chunk {
                req.extend_from_slice(format!("mg {key} v\r\n").as_bytes());
            }
            c.send(&req);
            for (i, (_, value)) in chunk.iter().enumerate() {
                let line = c.read_line();
                if line.starts_with(b"VA ") {
                    let got = c.read_line();
                    if got == format!("{value}\r\n").as_bytes() {
                        out[chunk_start + i].push(b);
                    }
                } else {
                    assert_eq!(line, b"EN\r\n", "mg on backend {b}");
                }
            }
        }
    }
    out
}

/// Sets every `(key, value)` through `c`, pipelined, asserting `STORED` for each.
pub fn set_all(c: &mut Client, items: &[(String, String)]) {
    for chunk in items.chunks(200) {
        let mut req = Vec::new();
        for (k, v) in chunk {
            req.extend_from_slice(format!("set {k} 0 0 {}\r\n{v}\r\n", v.len()).as_bytes());
        }
        c.send(&req);
        for (k, _) in chunk {
            let line = c.read_line();
            assert_eq!(line, b"STORED\r\n", "set {k}: {}", line.escape_ascii());
        }
    }
}

/// `get key` through `c`: `Some(value)` on a hit, `None` on a miss.
pub fn get(c: &mut Client, key: &str) -> Option<Vec<u8>> {
    c.send(format!("get {key}\r\n").as_bytes());
    let line = c.read_line();
    if line == b"END\r\n" {
        return None;
    }
    let header = String::from_utf8_lossy(&line).into_owned();
    let len: usize = header
        .trim_end()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("get {key}: not a VALUE line: {header:?}"));
    let mut value = c.read_exact_bytes(len + 2);
    value.truncate(len);
    c.expect(b"END\r\n");
    Some(value)
}

/// The `source_hash` of the running config, from `/config`.
pub fn running_hash(admin: u16) -> String {
    let reply = http(admin, "GET", "/config");
    assert_eq!(reply.status, 200, "/config: {}", reply.body);
    let v: serde_json::Value = serde_json::from_str(&reply.body).expect("/config is JSON");
    v["source_hash"].as_str().expect("source_hash").to_string()
}

/// Waits (bounded) until the running config is the one with text `toml`.
#[track_caller]
pub fn wait_for_config(admin: u16, toml: &str) {
    let want = memroute::config::reload::digest(toml);
    poll("the new config to be running", || {
        (running_hash(admin) == want).then_some(())
    });
}

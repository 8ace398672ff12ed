//! Dead, slow and ejected backends (DESIGN §3): errors stay with the keys of the failed server,
//! one slow answer does not break the shared connection, and health recovers.

mod common;

use std::time::Duration;

use common::{Client, Memcached, Memroute, poll_for};

/// `n` memcacheds, memroute with one pool over them and extra pool lines, and a client of it.
/// md5 spreads the tests' short, similar keys evenly (fnv1a_64, twemproxy's default, clusters
/// keys that differ only at the end).
fn start(n: usize, pool_extra: &str) -> (Vec<Memcached>, Memroute, Client) {
    let backends: Vec<Memcached> = (0..n).map(|_| Memcached::start()).collect();
    let proxy = Memroute::builder()
        .pool_with("main", &backends, &format!("hash = \"md5\"\n{pool_extra}"))
        .start();
    let client = proxy.client();
    (backends, proxy, client)
}

/// Which backend holds `key`, asked directly.
fn holder(backends: &[Memcached], key: &str) -> usize {
    let holders: Vec<usize> = (0..backends.len())
        .filter(|&i| {
            let mut c = Client::connect(backends[i].port);
            c.send(format!("mg {key}\r\n").as_bytes());
            c.read_line() == b"HD\r\n"
        })
        .collect();
    assert_eq!(holders.len(), 1, "{key} on {holders:?}");
    holders[0]
}

/// Sets 60 keys `{tag}{i}` to `value` through `c`: the keys, and the backend each landed on.
fn set_keys(
    c: &mut Client,
    backends: &[Memcached],
    tag: &str,
    value: &str,
) -> (Vec<String>, Vec<usize>) {
    let keys: Vec<String> = (0..60).map(|i| format!("{tag}{i}")).collect();
    for k in &keys {
        let set = format!("set {k} 0 0 {}\r\n{value}\r\n", value.len());
        c.roundtrip(set.as_bytes(), b"STORED\r\n");
    }
    let owner = keys.iter().map(|k| holder(backends, k)).collect();
    (keys, owner)
}

fn get_reply(c: &mut Client, key: &str) -> Vec<u8> {
    c.send(format!("get {key}\r\n").as_bytes());
    let first = c.read_line();
    if first.starts_with(b"VALUE") {
        let mut all = first;
        all.extend(c.read_line());
        all.extend(c.read_line());
        return all;
    }
    first
}

/// Whether `f` returns true within `tries` × 100 ms (polled).
fn eventually(tries: u32, mut f: impl FnMut() -> bool) -> bool {
    poll_for(Duration::from_millis(100) * tries, || f().then_some(())).is_some()
}

#[test]
fn killed_backend_fails_only_its_keys_is_marked_down_and_serves_again_after_restart() {
    let (mut backends, _proxy, mut c) = start(
        3,
        "timeout = \"300ms\"\nfailure_limit = 2\nretry_timeout = \"1s\"",
    );
    let (keys, owner) = set_keys(&mut c, &backends, "fk", "ok");
    assert!(
        (0..3).all(|b| owner.contains(&b)),
        "keys span every backend: {owner:?}"
    );

    backends[1].stop();
    for (k, &o) in keys.iter().zip(&owner) {
        let reply = get_reply(&mut c, k);
        if o == 1 {
            assert!(
                reply.starts_with(b"SERVER_ERROR "),
                "{k}: {}",
                String::from_utf8_lossy(&reply)
            );
        } else {
            assert_eq!(
                reply,
                format!("VALUE {k} 0 2\r\nok\r\nEND\r\n").as_bytes(),
                "{k} on a live backend"
            );
        }
    }
    let dead_key = &keys[owner.iter().position(|&o| o == 1).unwrap()];
    // After failure_limit failures the server is marked down: its keys fail fast.
    assert!(
        eventually(50, || get_reply(&mut c, dead_key)
            == b"SERVER_ERROR backend marked down\r\n"),
        "server never marked down"
    );
    // The same connection still serves the other servers' keys.
    let live_key = &keys[owner.iter().position(|&o| o != 1).unwrap()];
    assert_eq!(
        get_reply(&mut c, live_key),
        format!("VALUE {live_key} 0 2\r\nok\r\nEND\r\n").as_bytes()
    );

    backends[1].restart();
    // After retry_timeout the server is probed again; a restarted memcached is empty.
    assert!(
        eventually(100, || get_reply(&mut c, dead_key) == b"END\r\n"),
        "server never came back"
    );
    c.roundtrip(
        format!("set {dead_key} 0 0 3\r\nnew\r\n").as_bytes(),
        b"STORED\r\n",
    );
    assert_eq!(
        get_reply(&mut c, dead_key),
        format!("VALUE {dead_key} 0 3\r\nnew\r\nEND\r\n").as_bytes()
    );
}

#[test]
fn stopped_backend_times_out_and_the_shared_connection_keeps_working() {
    // connections = 1: every client shares one connection per server, so a late answer that
    // was not skipped correctly would be handed to the next request.
    let (backends, proxy, mut c) = start(
        2,
        "timeout = \"300ms\"\nconnections = 1\nfailure_limit = 1000",
    );
    let keys: Vec<String> = (0..20).map(|i| format!("sk{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        c.roundtrip(
            format!("set {k} 0 0 3\r\nv{i:02}\r\n").as_bytes(),
            b"STORED\r\n",
        );
    }
    let owner: Vec<usize> = keys.iter().map(|k| holder(&backends, k)).collect();
    let slow: Vec<usize> = (0..keys.len()).filter(|&i| owner[i] == 0).collect();
    let fast: Vec<usize> = (0..keys.len()).filter(|&i| owner[i] == 1).collect();
    assert!(!slow.is_empty() && !fast.is_empty());

    backends[0].pause();
    for &i in &slow[..slow.len().min(3)] {
        assert_eq!(get_reply(&mut c, &keys[i]), b"SERVER_ERROR timeout\r\n");
    }
    // Another client, on the other server, is not affected meanwhile.
    let mut other = Client::connect(proxy.port);
    for &i in &fast {
        let k = &keys[i];
        assert_eq!(
            get_reply(&mut other, k),
            format!("VALUE {k} 0 3\r\nv{i:02}\r\nEND\r\n").as_bytes()
        );
    }
    backends[0].resume();
    // The late answers are read and dropped; every later request gets its own answer.
    for &i in &slow {
        let k = &keys[i];
        assert_eq!(
            get_reply(&mut c, k),
            format!("VALUE {k} 0 3\r\nv{i:02}\r\nEND\r\n").as_bytes()
        );
    }
    c.roundtrip(
        b"set sk0 0 0 1\r\nz\r\nget sk0\r\n",
        b"STORED\r\nVALUE sk0 0 1\r\nz\r\nEND\r\n",
    );
}

#[test]
fn with_eject_a_dead_servers_keys_move_to_the_others() {
    let (mut backends, _proxy, mut c) = start(
        3,
        "timeout = \"300ms\"\nfailure_limit = 1\nretry_timeout = \"60s\"\neject = true",
    );
    let (keys, owner) = set_keys(&mut c, &backends, "ek", "a");
    let moved: Vec<&String> = keys
        .iter()
        .zip(&owner)
        .filter(|(_, o)| **o == 2)
        .map(|(k, _)| k)
        .collect();
    assert!(!moved.is_empty());

    backends[2].stop();
    let first = moved[0];
    // The first failure ejects the server; its keys then land on the live ones.
    assert!(
        eventually(50, || {
            c.send(format!("set {first} 0 0 1\r\nb\r\n").as_bytes());
            c.read_line() == b"STORED\r\n"
        }),
        "keys never moved"
    );
    let live = [&backends[0], &backends[1]];
    for k in &moved {
        c.roundtrip(format!("set {k} 0 0 1\r\nb\r\n").as_bytes(), b"STORED\r\n");
        let on: Vec<usize> = (0..2)
            .filter(|&i| {
                let mut d = Client::connect(live[i].port);
                d.send(format!("get {k}\r\n").as_bytes());
                d.read_line().starts_with(b"VALUE")
            })
            .collect();
        assert_eq!(on.len(), 1, "{k} should be on exactly one live server");
    }
    // Keys of live servers did not move.
    for (k, &o) in keys.iter().zip(&owner) {
        if o != 2 {
            assert_eq!(
                get_reply(&mut c, k),
                format!("VALUE {k} 0 1\r\na\r\nEND\r\n").as_bytes()
            );
        }
    }
}

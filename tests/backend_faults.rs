//! A misbehaving backend (issue 12's table, DESIGN §3): a real memcached behind a relay that
//! injects bytes, delays or holds answers, or behind SIGSTOP. Whatever the backend does, the
//! client gets `SERVER_ERROR` for that request, never a value for a key it did not ask, the
//! server recovers within `retry_timeout` + 1 s once the fault stops, and memroute keeps running.

mod common;

use std::time::{Duration, Instant};

use common::http::{http, sample};
use common::relay::{Fault, Relay};
use common::{Client, Memcached, Memroute, free_port, poll};

/// memroute with one pool `main` over `servers` and an admin port.
fn start(servers: &[String], pool_extra: &str) -> Memroute {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    Memroute::start(&format!(
        "[listen]\naddress = \"127.0.0.1:{}\"\n\n[admin]\naddress = \"127.0.0.1:{}\"\n\n\
         [pools.main]\nservers = [{}]\nhash = \"md5\"\n{pool_extra}\n\n\
         [[routes]]\nprefix = \"\"\ntiers = [\"main\"]\n",
        free_port(),
        free_port(),
        list.join(", ")
    ))
}

fn admin(proxy: &Memroute, path: &str) -> common::http::HttpReply {
    http(proxy.admin_port.expect("admin port"), "GET", path)
}

/// The full reply to `get key` (one value at most).
fn get(c: &mut Client, key: &str) -> Vec<u8> {
    c.send(format!("get {key}\r\n").as_bytes());
    let mut reply = c.read_line();
    if reply.starts_with(b"VALUE") {
        reply.extend(c.read_line());
        reply.extend(c.read_line());
    }
    reply
}

/// Polls until `get key` answers `expected`; returns how long that took.
fn recovers(c: &mut Client, key: &str, expected: &[u8]) -> Duration {
    let start = Instant::now();
    poll(&format!("get {key} to answer again"), || {
        (get(c, key) == expected).then_some(())
    });
    start.elapsed()
}

const RETRY: Duration = Duration::from_secs(1);

/// Answers a backend may send to `get k` that are not memcached answers to it. Each is a
/// protocol error for the request, and only for it.
#[test]
fn a_bad_answer_fails_its_request_and_the_server_serves_again() {
    let mc = Memcached::start();
    let relay = Relay::start(mc.port);
    let mut proxy = start(
        &[relay.addr()],
        "connections = 1\ntimeout = \"1s\"\nfailure_limit = 3\nretry_timeout = \"1s\"",
    );
    let mut c = Client::connect(proxy.port);
    c.roundtrip(b"set k 0 0 5\r\nhello\r\n", b"STORED\r\n");
    c.roundtrip(b"set other_key 0 0 5\r\nright\r\n", b"STORED\r\n");
    let hit = b"VALUE k 0 5\r\nhello\r\nEND\r\n".to_vec();
    let rows: [(&str, &[u8]); 5] = [
        ("huge length", b"VALUE k 0 18446744073709551614\r\nEND\r\n"),
        ("length over max_value_size", b"VALUE k 0 1048577\r\n"),
        (
            "another key's value",
            b"VALUE other_key 0 5\r\nWRONG\r\nEND\r\n",
        ),
        ("garbage line", b"HELLO\r\n"),
        ("non-numeric length", b"VALUE k 0 five\r\nhello\r\nEND\r\n"),
    ];
    for (what, answer) in rows {
        relay.set(Fault::Replace(answer.to_vec()));
        assert_eq!(
            String::from_utf8_lossy(&get(&mut c, "k")),
            "SERVER_ERROR backend protocol error\r\n",
            "{what}"
        );
        let took = recovers(&mut c, "k", &hit);
        assert!(
            took <= RETRY + Duration::from_secs(1),
            "{what}: back after {took:?}"
        );
        // Nobody gets another key's value: the other key still reads its own.
        assert_eq!(
            get(&mut c, "other_key"),
            b"VALUE other_key 0 5\r\nright\r\nEND\r\n"
        );
    }
    let metrics = admin(&proxy, "/metrics").body;
    let labels = [("server", relay.addr()), ("kind", "protocol".to_string())];
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        sample(&metrics, "memroute_backend_errors_total", &labels),
        Some(5.0)
    );
    assert!(proxy.is_running(), "memroute exited: {}", proxy.stderr());
}

#[test]
fn a_reply_cut_by_a_close_fails_and_the_connection_is_reopened() {
    let mc = Memcached::start();
    let relay = Relay::start(mc.port);
    let mut proxy = start(
        &[relay.addr()],
        "connections = 1\ntimeout = \"1s\"\nfailure_limit = 3\nretry_timeout = \"1s\"",
    );
    let mut c = Client::connect(proxy.port);
    c.roundtrip(b"set k 0 0 5\r\nhello\r\n", b"STORED\r\n");
    relay.set(Fault::Hold);
    c.send(b"get k\r\n");
    std::thread::sleep(Duration::from_millis(100));
    relay.close_all();
    assert_eq!(c.read_line(), b"SERVER_ERROR backend connection closed\r\n");
    relay.set(Fault::Pass);
    let took = recovers(&mut c, "k", b"VALUE k 0 5\r\nhello\r\nEND\r\n");
    assert!(
        took <= Duration::from_millis(500),
        "reconnected after {took:?}"
    );
    assert!(proxy.is_running(), "memroute exited: {}", proxy.stderr());
}

/// A late answer, then silence: the next request still fails at its own deadline (it used to
/// wait for the 10 × timeout recheck, 4.7 s here).
#[test]
fn after_a_late_answer_and_a_stall_the_next_request_fails_at_its_deadline() {
    let mc = Memcached::start();
    let relay = Relay::start(mc.port);
    let mut proxy = start(
        &[relay.addr()],
        "connections = 1\ntimeout = \"100ms\"\nfailure_limit = 100\nretry_timeout = \"1s\"",
    );
    let mut c = Client::connect(proxy.port);
    c.roundtrip(b"set k 0 0 5\r\nhello\r\n", b"STORED\r\n");
    let slack = Duration::from_millis(400);
    relay.set(Fault::DelayThenHold(Duration::from_millis(250)));
    let t = Instant::now();
    assert_eq!(get(&mut c, "k"), b"SERVER_ERROR timeout\r\n");
    assert!(
        t.elapsed() < Duration::from_millis(100) + slack,
        "{:?}",
        t.elapsed()
    );
    // The late answer comes at 250 ms and is dropped; then the backend says nothing.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(get(&mut c, "k"), b"SERVER_ERROR timeout\r\n");
        assert!(
            t.elapsed() < Duration::from_millis(100) + slack,
            "{:?}",
            t.elapsed()
        );
    }
    // The stall ends: the owed answers arrive late and are dropped, the stream is in step.
    relay.set(Fault::Pass);
    let took = recovers(&mut c, "k", b"VALUE k 0 5\r\nhello\r\nEND\r\n");
    assert!(
        took <= RETRY + Duration::from_secs(1),
        "back after {took:?}"
    );
    assert!(proxy.is_running(), "memroute exited: {}", proxy.stderr());
}

/// A key that `/route` places on `server`.
fn key_on(proxy: &Memroute, server: &str) -> String {
    (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let body = admin(proxy, &format!("/route?key={k}")).body;
            let v: serde_json::Value = serde_json::from_str(&body).expect("/route answers JSON");
            v["tiers"][0]["server"] == server
        })
        .expect("a key on each server")
}

fn up(proxy: &Memroute, server: &str) -> Option<f64> {
    sample(
        &admin(proxy, "/metrics").body,
        "memroute_server_up",
        &[("server", server)],
    )
}

#[test]
fn a_frozen_pool_is_marked_down_within_two_timeouts_and_ready_again_after_retry() {
    let (a, b) = (Memcached::start(), Memcached::start());
    let mut proxy = start(
        &[a.addr(), b.addr()],
        "timeout = \"1s\"\nfailure_limit = 1\nretry_timeout = \"2s\"",
    );
    let (ka, kb) = (key_on(&proxy, &a.addr()), key_on(&proxy, &b.addr()));
    let mut c = Client::connect(proxy.port);
    for k in [&ka, &kb] {
        c.roundtrip(format!("set {k} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
    }
    assert_eq!(admin(&proxy, "/readyz").status, 200);

    a.pause();
    b.pause();
    let frozen = Instant::now();
    c.send(format!("get {ka}\r\nget {kb}\r\n").as_bytes());
    assert_eq!(c.read_line(), b"SERVER_ERROR timeout\r\n");
    assert_eq!(c.read_line(), b"SERVER_ERROR timeout\r\n");
    poll("both servers marked down", || {
        (up(&proxy, &a.addr()) == Some(0.0) && up(&proxy, &b.addr()) == Some(0.0)).then_some(())
    });
    let took = frozen.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "marked down after {took:?}"
    );
    // Down, then probed every retry_timeout; the pool stays not ready all along.
    for _ in 0..10 {
        let r = admin(&proxy, "/readyz");
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, "not ready: every server is marked down in pool main\n")
        );
        assert_eq!(get(&mut c, &ka), b"SERVER_ERROR backend marked down\r\n");
        std::thread::sleep(Duration::from_millis(300));
    }

    a.resume();
    b.resume();
    let resumed = Instant::now();
    poll("/readyz to turn 200", || {
        (admin(&proxy, "/readyz").status == 200).then_some(())
    });
    poll("both servers up", || {
        (up(&proxy, &a.addr()) == Some(1.0) && up(&proxy, &b.addr()) == Some(1.0)).then_some(())
    });
    let took = resumed.elapsed();
    assert!(
        took <= Duration::from_secs(3) + Duration::from_millis(500),
        "ready after {took:?}"
    );
    for k in [&ka, &kb] {
        assert_eq!(
            get(&mut c, k),
            format!("VALUE {k} 0 1\r\nx\r\nEND\r\n").as_bytes()
        );
    }
    assert!(proxy.is_running(), "memroute exited: {}", proxy.stderr());
}

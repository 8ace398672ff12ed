//! A misbehaving backend (issue 12's table, DESIGN §3): a real memcached behind a relay that
//! injects bytes, delays or holds answers, or behind SIGSTOP. Whatever the backend does, the
//! client gets `SERVER_ERROR` for that request, never a value for a key it did not ask, the
//! server recovers within `retry_timeout` + 1 s once the fault stops, and memroute keeps running.

mod common;

use std::time::{Duration, Instant};

use common::relay::{Fault, Relay};
use common::{Client, Memcached, Memroute, poll, sample};

/// memroute with one pool `main` over `servers` and an admin port.
fn start<S: ToString>(servers: impl IntoIterator<Item = S>, pool_extra: &str) -> Memroute {
    let extra = format!("hash = \"md5\"\n{pool_extra}");
    Memroute::builder()
        .pool_with("main", servers, &extra)
        .admin()
        .start()
}

/// One memcached behind a [`Relay`], memroute over the relay (one connection, `pool_extra`),
/// and a client that has stored `k` = `hello` through it.
struct Relayed {
    relay: Relay,
    proxy: Memroute,
    c: Client,
    _mc: Memcached,
}

impl Relayed {
    fn start(pool_extra: &str) -> Relayed {
        let mc = Memcached::start();
        let relay = Relay::start(mc.port);
        let proxy = start([relay.addr()], &format!("connections = 1\n{pool_extra}"));
        let mut c = Client::connect(proxy.port);
        c.roundtrip(b"set k 0 0 5\r\nhello\r\n", b"STORED\r\n");
        Relayed {
            relay,
            proxy,
            c,
            _mc: mc,
        }
    }

    /// Asserts memroute still runs (whatever the backend did).
    #[track_caller]
    fn assert_running(mut self) {
        assert!(
            self.proxy.is_running(),
            "memroute exited: {}",
            self.proxy.stderr()
        );
    }
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

/// Polls until `get k` answers its value `hello` again, asserting that took at most `limit`.
#[track_caller]
fn recovers(c: &mut Client, what: &str, limit: Duration) {
    let start = Instant::now();
    poll(&format!("get k to answer again ({what})"), || {
        (get(c, "k") == b"VALUE k 0 5\r\nhello\r\nEND\r\n").then_some(())
    });
    let took = start.elapsed();
    assert!(took <= limit, "{what}: back after {took:?}");
}

const RETRY: Duration = Duration::from_secs(1);

/// Answers a backend may send to `get k` that are not memcached answers to it. Each is a
/// protocol error for the request, and only for it.
#[test]
fn a_bad_answer_fails_its_request_and_the_server_serves_again() {
    let mut r = Relayed::start("timeout = \"1s\"\nfailure_limit = 3\nretry_timeout = \"1s\"");
    let c = &mut r.c;
    c.roundtrip(b"set other_key 0 0 5\r\nright\r\n", b"STORED\r\n");
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
        r.relay.set(Fault::Replace(answer.to_vec()));
        assert_eq!(
            String::from_utf8_lossy(&get(c, "k")),
            "SERVER_ERROR backend protocol error\r\n",
            "{what}"
        );
        recovers(c, what, RETRY + Duration::from_secs(1));
        // Nobody gets another key's value: the other key still reads its own.
        assert_eq!(
            get(c, "other_key"),
            b"VALUE other_key 0 5\r\nright\r\nEND\r\n"
        );
    }
    let server = r.relay.addr();
    let labels = [("server", server.as_str()), ("kind", "protocol")];
    assert_eq!(
        r.proxy.sample("memroute_backend_errors_total", &labels),
        Some(5.0)
    );
    r.assert_running();
}

#[test]
fn a_reply_cut_by_a_close_fails_and_the_connection_is_reopened() {
    let mut r = Relayed::start("timeout = \"1s\"\nfailure_limit = 3\nretry_timeout = \"1s\"");
    r.relay.set(Fault::Hold);
    r.c.send(b"get k\r\n");
    std::thread::sleep(Duration::from_millis(100));
    r.relay.close_all();
    assert_eq!(
        r.c.read_line(),
        b"SERVER_ERROR backend connection closed\r\n"
    );
    r.relay.set(Fault::Pass);
    recovers(&mut r.c, "reconnect", Duration::from_millis(500));
    r.assert_running();
}

/// A late answer, then silence: the next request still fails at its own deadline (it used to
/// wait for the 10 × timeout recheck, 4.7 s here).
#[test]
fn after_a_late_answer_and_a_stall_the_next_request_fails_at_its_deadline() {
    let mut r = Relayed::start("timeout = \"100ms\"\nfailure_limit = 100\nretry_timeout = \"1s\"");
    // `get k` answers the timeout within the 100 ms deadline and some slack.
    let times_out = |c: &mut Client| {
        let t = Instant::now();
        assert_eq!(get(c, "k"), b"SERVER_ERROR timeout\r\n");
        let took = t.elapsed();
        assert!(took < Duration::from_millis(500), "{took:?}");
    };
    r.relay
        .set(Fault::DelayThenHold(Duration::from_millis(250)));
    times_out(&mut r.c);
    // The late answer comes at 250 ms and is dropped; then the backend says nothing.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        times_out(&mut r.c);
    }
    // The stall ends: the owed answers arrive late and are dropped, the stream is in step.
    r.relay.set(Fault::Pass);
    recovers(&mut r.c, "after the stall", RETRY + Duration::from_secs(1));
    r.assert_running();
}

/// A key that `/route` places on `server`.
fn key_on(proxy: &Memroute, server: &str) -> String {
    (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let body = proxy.get(&format!("/route?key={k}")).body;
            let v: serde_json::Value = serde_json::from_str(&body).expect("/route answers JSON");
            v["tiers"][0]["server"] == server
        })
        .expect("a key on each server")
}

/// Whether `/metrics` says every one of `servers` is up (`want` 1) or down (0).
fn all_up(proxy: &Memroute, servers: &[&Memcached], want: f64) -> bool {
    let metrics = proxy.metrics();
    servers
        .iter()
        .all(|m| sample(&metrics, "memroute_server_up", &[("server", &m.addr())]) == Some(want))
}

#[test]
fn a_frozen_pool_is_marked_down_within_two_timeouts_and_ready_again_after_retry() {
    let (a, b) = (Memcached::start(), Memcached::start());
    let mut proxy = start(
        [&a, &b],
        "timeout = \"1s\"\nfailure_limit = 1\nretry_timeout = \"2s\"",
    );
    let (ka, kb) = (key_on(&proxy, &a.addr()), key_on(&proxy, &b.addr()));
    let mut c = Client::connect(proxy.port);
    for k in [&ka, &kb] {
        c.roundtrip(format!("set {k} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
    }
    assert_eq!(proxy.get("/readyz").status, 200);

    a.pause();
    b.pause();
    let frozen = Instant::now();
    c.send(format!("get {ka}\r\nget {kb}\r\n").as_bytes());
    assert_eq!(c.read_line(), b"SERVER_ERROR timeout\r\n");
    assert_eq!(c.read_line(), b"SERVER_ERROR timeout\r\n");
    poll("both servers marked down", || {
        all_up(&proxy, &[&a, &b], 0.0).then_some(())
    });
    let took = frozen.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "marked down after {took:?}"
    );
    // Down, then probed every retry_timeout; the pool stays not ready all along.
    for _ in 0..10 {
        let r = proxy.get("/readyz");
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
        (proxy.get("/readyz").status == 200).then_some(())
    });
    poll("both servers up", || {
        all_up(&proxy, &[&a, &b], 1.0).then_some(())
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

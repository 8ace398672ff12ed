//! The admin HTTP server of the real binary, against real memcached processes.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::{Builder, Memcached, Memroute, exchange, http, poll, sample};
use serde_json::Value;

/// memroute with an admin port and `[pools.main]` over `servers` with the short health settings
/// of DESIGN §6's readiness test (and the default catch-all route to it).
fn main_pool(servers: &[&Memcached]) -> Builder {
    Memroute::builder().admin().pool_with(
        "main",
        servers,
        "failure_limit = 1\nretry_timeout = \"1s\"\ntimeout = \"200ms\"",
    )
}

/// The server `/route` names for `key` in tier 0.
fn routed_server(memroute: &Memroute, key: &str) -> String {
    let reply = memroute.get(&format!("/route?key={key}"));
    assert_eq!(reply.status, 200, "/route?key={key}: {}", reply.body);
    let v: Value = serde_json::from_str(&reply.body).expect("/route answers JSON");
    v["tiers"][0]["server"]
        .as_str()
        .unwrap_or_else(|| panic!("no server in {v}"))
        .to_string()
}

#[test]
fn metrics_count_exactly_the_requests_sent() {
    let (a, b) = (Memcached::start(), Memcached::start());
    let mut gone = Memcached::start();
    let memroute = Memroute::builder()
        .admin()
        .pool("main", [&a, &b])
        .pool("gone", [&gone])
        .route("", &["main"])
        .route("gone:", &["gone"])
        .start();
    gone.stop();
    let gone_address = gone.addr();
    let gone_labels = [("server", gone_address.as_str())];
    // Wait until memroute has marked it down (default failure_limit = 3), so the request below
    // fails the same way on every run.
    poll("the killed backend to be marked down", || {
        (sample(&memroute.metrics(), "memroute_server_up", &gone_labels) == Some(0.0)).then_some(())
    });

    // Backend requests each main server should see, learned from /route.
    let mut expected: HashMap<String, u64> = HashMap::new();
    let mut expect = |keys: &[&str]| {
        let mut servers: Vec<String> = keys.iter().map(|k| routed_server(&memroute, k)).collect();
        servers.sort();
        servers.dedup(); // a multi-key get sends one request per server
        for s in servers {
            *expected.entry(s).or_default() += 1;
        }
    };
    let sent = [
        ("set a 0 0 1\r\n1\r\n", "STORED\r\n", &["a"][..]),
        ("set b 0 0 1\r\n2\r\n", "STORED\r\n", &["b"][..]),
        ("set c 0 0 1\r\n3\r\n", "STORED\r\n", &["c"][..]),
        ("set d 0 0 1\r\nx\r\n", "STORED\r\n", &["d"][..]),
        ("get a\r\n", "VALUE a 0 1\r\n1\r\nEND\r\n", &["a"][..]),
        ("get nope\r\n", "END\r\n", &["nope"][..]),
        (
            "get a b c x y\r\n",
            "VALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nVALUE c 0 1\r\n3\r\nEND\r\n",
            &["a", "b", "c", "x", "y"][..],
        ),
        // memcached's own CLIENT_ERROR, passed through
        (
            "incr d 1\r\n",
            "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
            &["d"][..],
        ),
        // refused by memroute's parser: never reaches a backend
        (
            "set k 0 0 abc\r\n",
            "CLIENT_ERROR bad command line format\r\n",
            &[][..],
        ),
        (
            "set gone:k 0 0 1\r\n1\r\n",
            "SERVER_ERROR backend marked down\r\n",
            &[][..],
        ),
    ];
    for (request, reply, keys) in sent {
        assert_eq!(memroute.exchange(request), reply, "reply to {request:?}");
        if !keys.is_empty() {
            expect(keys);
        }
    }

    let m = memroute.metrics();
    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(&m, name, labels).unwrap_or_else(|| panic!("no series {name}{labels:?} in\n{m}"))
    };
    let requests = |command| value("memroute_requests_total", &[("command", command)]);
    assert_eq!(requests("set"), 5.0);
    assert_eq!(requests("get"), 3.0);
    assert_eq!(requests("incr"), 1.0);
    assert_eq!(requests("invalid"), 1.0);
    assert_eq!(requests("delete"), 0.0);
    let errors = |command, kind| {
        value(
            "memroute_request_errors_total",
            &[("command", command), ("kind", kind)],
        )
    };
    assert_eq!(errors("incr", "client"), 1.0);
    assert_eq!(errors("invalid", "client"), 1.0);
    assert_eq!(errors("set", "server"), 1.0);
    assert_eq!(errors("set", "client"), 0.0);
    assert_eq!(errors("get", "server"), 0.0);
    assert_eq!(value("memroute_get_keys_total", &[("result", "hit")]), 4.0);
    assert_eq!(value("memroute_get_keys_total", &[("result", "miss")]), 3.0);
    let tier0 = |result| {
        value(
            "memroute_tier_lookups_total",
            &[("pool", "main"), ("tier", "0"), ("result", result)],
        )
    };
    assert_eq!(
        (tier0("hit"), tier0("miss"), tier0("error")),
        (4.0, 3.0, 0.0)
    );
    // One connection per exchange: 10 above. (The admin scrapes are HTTP, not counted.)
    assert_eq!(value("memroute_client_connections_total", &[]), 10.0);

    for live in [&a, &b] {
        let server = live.addr();
        let want = expected.get(&server).copied().unwrap_or(0) as f64;
        assert_eq!(
            value("memroute_backend_requests_total", &[("server", &server)]),
            want,
            "backend requests to {server}"
        );
        for kind in ["timeout", "connect", "protocol", "closed", "down"] {
            let labels = [("server", server.as_str()), ("kind", kind)];
            assert_eq!(
                value("memroute_backend_errors_total", &labels),
                0.0,
                "{labels:?}"
            );
        }
    }
    assert_eq!(expected.values().sum::<u64>(), {
        let requests = |s: &Memcached| {
            value("memroute_backend_requests_total", &[("server", &s.addr())]) as u64
        };
        requests(&a) + requests(&b)
    });
    // The killed server: the request failed fast without being sent. Its connect errors are
    // reconnect attempts made in the background, so only their minimum is known: the two lost
    // connections count as two failures (with no request in flight, under no error kind), and
    // the third, which marks it down, is a failed reconnect.
    let gone_error = |kind| {
        value(
            "memroute_backend_errors_total",
            &[("server", gone_address.as_str()), ("kind", kind)],
        )
    };
    assert_eq!(value("memroute_backend_requests_total", &gone_labels), 0.0);
    assert_eq!(gone_error("down"), 1.0);
    assert!(gone_error("connect") >= 1.0);
    assert_eq!(
        (
            gone_error("timeout"),
            gone_error("protocol"),
            gone_error("closed")
        ),
        (0.0, 0.0, 0.0)
    );
    assert_eq!(value("memroute_server_down_total", &gone_labels), 1.0);
}

#[test]
fn promtool_accepts_the_metrics() {
    let backend = Memcached::start();
    let memroute = main_pool(&[&backend]).start();
    // Some traffic, so histograms and counters have non-zero samples.
    memroute.exchange("set a 0 0 1\r\n1\r\nget a b\r\nbogus\r\n");
    let text = memroute.metrics();
    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        panic!(
            "promtool not found: install the Debian package `prometheus` (it provides /usr/bin/promtool)"
        );
    };
    promtool
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = promtool.wait_with_output().expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn readyz_follows_the_health_of_every_pool() {
    let mut a = Memcached::start();
    let mut b = Memcached::start();
    let memroute = main_pool(&[&a, &b]).start();
    let readyz = || memroute.get("/readyz");
    assert_eq!((readyz().status, readyz().body.as_str()), (200, "ready\n"));

    // A key on each server, so requests reach the one we want.
    let key_on = |server: &str| {
        (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| routed_server(&memroute, k) == server)
            .expect("a key on each server")
    };
    let (key_a, key_b) = (key_on(&a.addr()), key_on(&b.addr()));

    // One server down: the pool still has a live one.
    a.stop();
    let a_address = a.addr();
    poll("server a marked down", || {
        let reply = memroute.exchange(&format!("get {key_a}\r\n"));
        let labels = [("server", a_address.as_str())];
        (reply.starts_with("SERVER_ERROR")
            && sample(&memroute.metrics(), "memroute_server_up", &labels) == Some(0.0))
        .then_some(())
    });
    assert_eq!(readyz().status, 200, "{}", memroute.stderr());

    // Every server down: not ready, and the reason names the pool. (With retry_timeout = 1s a
    // down server is probed again every second; a failed probe marks it down again at once, so
    // each attempt sends requests first and then asks.)
    b.stop();
    let reply = poll("/readyz to turn 503", || {
        memroute.exchange(&format!("get {key_a}\r\nget {key_b}\r\n"));
        Some(readyz()).filter(|r| r.status == 503)
    });
    assert_eq!(
        reply.body,
        "not ready: every server is marked down in pool main\n"
    );

    // a comes back on the same port: once a request to it succeeds, ready again.
    a.restart();
    poll("a request to the restarted server to succeed", || {
        (memroute.exchange(&format!("get {key_a}\r\n")) == "END\r\n").then_some(())
    });
    poll("/readyz to turn 200", || {
        Some(readyz()).filter(|r| r.status == 200)
    });
}

#[test]
fn route_names_the_server_that_stores_the_key() {
    let backends = [Memcached::start(), Memcached::start(), Memcached::start()];
    let memroute = main_pool(&backends.iter().collect::<Vec<_>>()).start();
    // `%2F` is `/`; keys are percent-decoded.
    for (key, query) in [("foo", "foo"), ("a/b:1", "a%2Fb%3A1")] {
        assert_eq!(
            memroute.exchange(&format!("set {key} 0 0 2\r\nhi\r\n")),
            "STORED\r\n"
        );
        let reply = memroute.get(&format!("/route?key={query}"));
        let v: Value = serde_json::from_str(&reply.body).expect("JSON");
        assert_eq!(v["key"], key);
        assert_eq!(v["route"], "");
        assert_eq!(v["tiers"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["tiers"][0]["pool"], "main");
        assert_eq!(v["tiers"][0]["down"], false);
        let named = v["tiers"][0]["server"].as_str().expect("a server");
        let holders: Vec<String> = backends
            .iter()
            .filter(|m| exchange(m.port, &format!("get {key}\r\n")).starts_with("VALUE"))
            .map(Memcached::addr)
            .collect();
        assert_eq!(holders, [named], "/route?key={query}");
    }
    assert_eq!(memroute.get("/route").status, 400);
    assert_eq!(memroute.get("/route?key=bad%zz").status, 400);
}

#[test]
fn other_paths_and_methods_are_refused() {
    let backend = Memcached::start();
    let memroute = main_pool(&[&backend]).start();
    let port = memroute.admin();
    assert_eq!(http(port, "GET", "/").status, 404);
    assert_eq!(http(port, "GET", "/metricsx").status, 404);
    assert_eq!(http(port, "POST", "/nope").status, 404);
    for path in ["/metrics", "/healthz", "/readyz", "/config", "/route?key=a"] {
        for method in ["POST", "PUT", "DELETE"] {
            let reply = http(port, method, path);
            assert_eq!(reply.status, 405, "{method} {path}");
            assert_eq!(reply.header("allow"), Some("GET, HEAD"));
        }
    }
    let head = http(port, "HEAD", "/healthz");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
}

#[test]
fn healthz_config_and_metrics_answer_in_their_formats() {
    let backend = Memcached::start();
    let memroute = main_pool(&[&backend]).start();
    let health = memroute.get("/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    let metrics = memroute.get("/metrics");
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        metrics
            .body
            .contains("# TYPE memroute_requests_total counter\n")
    );

    let config = memroute.get("/config");
    assert_eq!(config.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_str(&config.body).expect("JSON");
    // The full MD5 of the config file, comparable with `md5sum FILE`.
    assert_eq!(v["source_hash"].as_str().map(str::len), Some(32));
    let loaded_at = v["loaded_at"].as_u64().expect("Unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(loaded_at > 1_600_000_000 && loaded_at <= now);
    let c = &v["config"];
    assert_eq!(
        c["listen"]["address"],
        format!("127.0.0.1:{}", memroute.port)
    );
    assert_eq!(
        c["admin"]["address"],
        format!("127.0.0.1:{}", memroute.admin())
    );
    let main = &c["pools"]["main"];
    assert_eq!(main["servers"][0]["address"], backend.addr());
    assert_eq!(
        (
            &main["failure_limit"],
            &main["retry_timeout"],
            &main["timeout"]
        ),
        (&Value::from(1), &Value::from("1s"), &Value::from("200ms"))
    );
    assert_eq!(c["routes"][0]["tiers"][0], "main");
}

//! Checks of the test harness itself, independent of memroute: if these fail, other failures
//! say nothing about the proxy.

mod common;

use std::time::Duration;

use common::{Client, Memcached, Memroute, Nutcracker, free_port, nutcracker_config, sample};

#[test]
fn free_port_never_repeats_within_a_test_binary() {
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len());
}

#[test]
fn memcached_restart_keeps_the_port_and_starts_empty() {
    let mut m = Memcached::start();
    let port = m.port;
    Client::connect(port).set("k", b"v");
    m.restart();
    assert_eq!(m.port, port);
    Client::connect(port).roundtrip(b"get k\r\n", b"END\r\n");
}

#[test]
fn memcached_pause_holds_answers_until_resume() {
    let m = Memcached::start();
    let mut c = Client::connect(m.port);
    m.pause();
    c.send(b"get k\r\n");
    c.expect_nothing(Duration::from_millis(200));
    m.resume();
    c.expect(b"END\r\n");
}

#[test]
fn memcached_stop_closes_client_connections() {
    let mut m = Memcached::start();
    let mut c = Client::connect(m.port);
    m.stop();
    c.expect_closed();
}

#[test]
#[should_panic(expected = "reply differs at byte 0")]
fn client_expect_reports_where_the_reply_differs() {
    let m = Memcached::start();
    Client::connect(m.port).roundtrip(b"get k\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n");
}

/// DESIGN §2's third placement row, read off twemproxy itself: named servers with weights 1, 2, 3
/// (names, not addresses, place keys, so the random test ports do not matter).
#[test]
fn nutcracker_places_keys_as_the_design_table_says() {
    let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let entries: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{}:{} server{}", m.addr(), i + 1, i + 1))
        .collect();
    let nc = Nutcracker::start(&nutcracker_config(
        free_port(),
        &entries,
        "fnv1a_64",
        "ketama",
    ));
    let mut c = Client::connect(nc.port);
    let table = [
        ("foo", 2),
        ("bar", 2),
        ("baz", 2),
        ("user:1", 3),
        ("user:42", 3),
        ("session:abc", 3),
        ("key:0", 3),
        ("key:1", 3),
    ];
    for (key, _) in table {
        c.set(key, key.as_bytes());
    }
    for (key, server) in table {
        for (i, m) in servers.iter().enumerate() {
            let mut d = Client::connect(m.port);
            d.send(format!("mg {key}\r\n").as_bytes());
            let want: &[u8] = if i + 1 == server {
                b"HD\r\n"
            } else {
                b"EN\r\n"
            };
            assert_eq!(d.read_line(), want, "{key} on server{}", i + 1);
        }
    }
}

#[test]
fn builder_renders_pools_routes_listen_and_admin_lines() {
    let text = Memroute::builder()
        .listen("max_connections = 9")
        .admin()
        .pool_with("x", ["127.0.0.1:1", "127.0.0.1:2"], "timeout = \"1s\"")
        .pool("y", ["127.0.0.1:3"])
        .route_with("", &["x", "y"], "warm = false")
        .toml("# tail")
        .render(7000, Some(7001));
    assert_eq!(
        text,
        "[listen]\naddress = \"127.0.0.1:7000\"\nmax_connections = 9\n\n\
         [admin]\naddress = \"127.0.0.1:7001\"\n\n\
         [pools.x]\nservers = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\ntimeout = \"1s\"\n\n\
         [pools.y]\nservers = [\"127.0.0.1:3\"]\n\n\
         [[routes]]\nprefix = \"\"\ntiers = [\"x\", \"y\"]\nwarm = false\n\n# tail\n"
    );
    // No route given: one catch-all route to the first pool.
    let text = Memroute::builder()
        .pool("main", ["127.0.0.1:1"])
        .render(1, None);
    assert!(
        text.trim_end()
            .ends_with("[[routes]]\nprefix = \"\"\ntiers = [\"main\"]"),
        "{text}"
    );
    assert!(!text.contains("[admin]"), "{text}");
}

/// Memroute with two pools and an admin port is one builder call; the handle reaches both the
/// client port and the admin server, and reads memroute's exit status.
#[test]
fn builder_starts_memroute_with_two_pools_and_an_admin_port() {
    let (x, y) = (Memcached::start(), Memcached::start());
    let mut m = Memroute::builder()
        .pool("x", [&x])
        .pool("y", [&y])
        .route("y:", &["y"])
        .route("", &["x"])
        .admin()
        .start();
    m.client().set("y:k", b"1");
    Client::connect(y.port).roundtrip(b"get y:k\r\n", b"VALUE y:k 0 1\r\n1\r\nEND\r\n");
    assert_eq!(m.exchange("get y:k\r\n"), "VALUE y:k 0 1\r\n1\r\nEND\r\n");
    assert_eq!(m.get("/healthz").status, 200);
    let y_addr = y.addr();
    assert_eq!(
        m.sample("memroute_server_up", &[("server", &y_addr)]),
        Some(1.0)
    );
    assert!(m.is_running());
    m.signal("TERM");
    let status = m
        .wait_exit(Duration::from_secs(20))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn sample_matches_a_label_subset_once_and_says_when_absent() {
    let text = "# HELP c a counter\nc{a=\"1\",b=\"2\"} 5\nc{a=\"1\",b=\"3\"} 7\nd 2\n";
    assert_eq!(sample(text, "c", &[("b", "2"), ("a", "1")]), Some(5.0));
    assert_eq!(sample(text, "c", &[("b", "3")]), Some(7.0));
    assert_eq!(sample(text, "c", &[("b", "4")]), None);
    assert_eq!(sample(text, "d", &[]), Some(2.0));
    assert_eq!(sample(text, "e", &[]), None);
}

#[test]
#[should_panic(expected = "ambiguous")]
fn sample_refuses_a_label_set_that_matches_two_series() {
    let text = "c{a=\"1\",b=\"2\"} 5\nc{a=\"1\",b=\"3\"} 7\n";
    sample(text, "c", &[("a", "1")]);
}

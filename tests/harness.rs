//! Checks of the test harness itself, independent of memroute: if these fail, other failures
//! say nothing about the proxy.

mod common;

use std::time::Duration;

use common::{Client, Memcached, Nutcracker, free_port, nutcracker_config};

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

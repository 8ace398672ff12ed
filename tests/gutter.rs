//! Failover to a gutter pool (`failover = "gutter"`, see `src/route/gutter.rs`) against real
//! memcacheds: while a server is marked down its keys are served by the gutter, every TTL
//! written there is capped at `failover_ttl`, and when the server is back its keys return.

mod common;
mod replicas_support;

use common::{Client, Memcached, Memroute, counter};
use replicas_support::{Load, direct_get, direct_set, get, hit, start, wait_health};

const MAIN: &str = "failover = \"gutter\"\nfailover_ttl = \"3s\"\ntimeout = \"500ms\"\nretry_timeout = \"200ms\"\nfailure_limit = 2";

fn with_gutter(main: &Memcached, gutter: &Memcached) -> Memroute {
    start(
        &[("main", &[main], MAIN), ("gutter", &[gutter], "")],
        "[[routes]]\nprefix = \"\"\ntiers = [\"main\"]\n",
    )
}

/// The seconds left on `key` in a backend (`mg <key> t`): `None` for a miss or no expiry.
fn ttl(m: &Memcached, key: &str) -> Option<i64> {
    let mut c = Client::connect(m.port);
    c.send(format!("mg {key} t\r\n").as_bytes());
    let line = c.read_line();
    let text = String::from_utf8_lossy(&line);
    let t = text.trim_end().strip_prefix("HD t")?;
    t.parse().ok().filter(|&t: &i64| t >= 0)
}

/// `/route`'s `gutter.serving` for `key`.
fn serving(m: &Memroute, key: &str) -> bool {
    let v: serde_json::Value =
        serde_json::from_str(&m.get(&format!("/route?key={key}")).body).expect("json");
    v["gutter"]["serving"].as_bool().expect("gutter in /route")
}

#[test]
fn a_down_servers_keys_are_served_by_the_gutter_with_a_capped_ttl() {
    let (mut main, gutter) = (Memcached::start(), Memcached::start());
    let m = with_gutter(&main, &gutter);
    let mut c = m.client();
    c.roundtrip(b"set k 0 0 2\r\nv1\r\n", b"STORED\r\n");
    assert_eq!(direct_get(&main, "k"), hit("k", "v1"));
    main.stop();
    // The supervisor's reconnects fail: marked down without client traffic.
    wait_health(&m, &main, 0.0);
    // The very first request after the mark-down is served by the gutter.
    c.roundtrip(b"set k 0 0 2\r\nv2\r\n", b"STORED\r\n");
    assert_eq!(get(&mut c, "k"), hit("k", "v2"));
    c.roundtrip(b"set forever 0 0 1\r\nf\r\n", b"STORED\r\n");
    c.roundtrip(b"set hour 0 3600 1\r\nh\r\n", b"STORED\r\n");
    c.roundtrip(b"add soon 0 1 1\r\ns\r\n", b"STORED\r\n");
    c.roundtrip(b"ms meta 1 T0\r\nm\r\n", b"HD\r\n");
    c.roundtrip(b"ms bare 1\r\nb\r\n", b"HD\r\n");
    for key in ["k", "forever", "hour", "meta", "bare"] {
        let t = ttl(&gutter, key);
        assert!(matches!(t, Some(1..=3)), "{key}: ttl {t:?} in the gutter");
    }
    assert!(matches!(ttl(&gutter, "soon"), Some(0..=1)));
    // A touch and a gat cannot extend a gutter item past the cap either.
    c.roundtrip(b"touch k 86400\r\n", b"TOUCHED\r\n");
    assert!(matches!(ttl(&gutter, "k"), Some(1..=3)));
    c.roundtrip(b"gat 86400 k\r\n", &hit("k", "v2"));
    assert!(matches!(ttl(&gutter, "k"), Some(1..=3)));
    assert!(serving(&m, "k"));
    let metrics = m.metrics();
    let writes = counter(
        &metrics,
        "memroute_gutter_serves_total",
        &[("pool", "main"), ("action", "write")],
    );
    let reads = counter(
        &metrics,
        "memroute_gutter_serves_total",
        &[("pool", "main"), ("action", "read")],
    );
    assert_eq!((writes, reads), (7.0, 2.0));
    // Back up (empty): its keys return to it.
    main.restart();
    wait_health(&m, &main, 1.0);
    assert_eq!(get(&mut c, "k"), b"END\r\n");
    direct_set(&main, "k", "back");
    assert_eq!(get(&mut c, "k"), hit("k", "back"));
    c.roundtrip(b"set k2 0 0 1\r\nx\r\n", b"STORED\r\n");
    assert_eq!(direct_get(&main, "k2"), hit("k2", "x"));
    assert_eq!(direct_get(&gutter, "k2"), b"END\r\n");
    assert!(!serving(&m, "k"));
}

#[test]
fn under_load_no_request_fails_once_the_server_is_marked_down() {
    let (mut main, gutter) = (Memcached::start(), Memcached::start());
    let m = with_gutter(&main, &gutter);
    // Failures as (step, what the set answered).
    let load = Load::start(&m, |c, i| {
        let (k, v) = (format!("g:{i}"), format!("v{i}"));
        c.send(format!("set {k} 0 0 {}\r\n{v}\r\n", v.len()).as_bytes());
        let set = c.read_line();
        let got = get(c, &k);
        let ok = set == b"STORED\r\n" && got == hit(&k, &v);
        let failure = (i, String::from_utf8_lossy(&set).into_owned());
        if ok { vec![] } else { vec![failure] }
    });
    load.at_least(50);
    main.stop();
    wait_health(&m, &main, 0.0);
    // Steps from here on started after the mark-down.
    let marked = load.steps() + 1;
    load.at_least(200);
    let (failures, _) = load.stop();
    let late: Vec<_> = failures.iter().filter(|(i, _)| *i >= marked).collect();
    assert!(
        late.is_empty(),
        "failed after the mark-down (step {marked}): {late:?}"
    );
}

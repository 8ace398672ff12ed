//! Replicated routes (`replicas = ["east", "west"]`, see `src/route/replicas.rs`) against real
//! memcacheds: writes reach every replica, reads go to the key's home replica and fail over,
//! CAS is checked on one replica and followed elsewhere, disagreements are counted, and the
//! refused config combinations are located errors.

mod common;
mod replicas_support;

use common::memroute::check_config;
use common::process::{scratch_dir, write_file};
use common::{Client, Memcached, Memroute, counter, poll};
use replicas_support::{Load, direct, direct_get, direct_set, get, hit, start, wait_health};

/// Health settings that notice a killed replica and its return within a second.
const FAST_HEALTH: &str = "timeout = \"500ms\"\nretry_timeout = \"200ms\"\nfailure_limit = 2";

fn replicated(east: &Memcached, west: &Memcached, route_extra: &str) -> Memroute {
    start(
        &[
            ("east", &[east], FAST_HEALTH),
            ("west", &[west], FAST_HEALTH),
        ],
        &format!("[[routes]]\nprefix = \"\"\nreplicas = [\"east\", \"west\"]\n{route_extra}\n"),
    )
}

/// Replicas `east` and `west` (one memcached each), memroute [`replicated`] over them, and a
/// client of it.
fn setup(route_extra: &str) -> (Memcached, Memcached, Memroute, Client) {
    let (east, west) = (Memcached::start(), Memcached::start());
    let m = replicated(&east, &west, route_extra);
    let c = m.client();
    (east, west, m, c)
}

/// The replica index (0 east, 1 west) `/route` names as the key's home.
fn home(m: &Memroute, key: &str) -> usize {
    let body = m.get(&format!("/route?key={key}")).body;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let replicas = v["replicas"].as_array().expect("replicas in /route");
    replicas
        .iter()
        .position(|r| r["home"] == true)
        .expect("one home replica")
}

#[test]
fn writes_reach_every_replica() {
    let (east, west, m, mut c) = setup("");
    c.roundtrips(rows![
        b"set k 0 0 2\r\nv1\r\n" => b"STORED\r\n",
        b"append k 0 0 1\r\n+\r\n" => b"STORED\r\n",
    ]);
    assert_eq!(direct_get(&east, "k"), hit("k", "v1+"));
    assert_eq!(direct_get(&west, "k"), hit("k", "v1+"));
    c.roundtrip(b"set n 0 0 1\r\n5\r\n", b"STORED\r\n");
    c.roundtrip(b"incr n 2\r\n", b"7\r\n");
    c.roundtrip(b"ms mk 2 T0\r\nhi\r\n", b"HD\r\n");
    c.roundtrip(b"ma n\r\n", b"HD\r\n");
    for r in [&east, &west] {
        assert_eq!(direct_get(r, "n"), hit("n", "8"));
        assert_eq!(direct_get(r, "mk"), hit("mk", "hi"));
    }
    c.roundtrip(b"delete k\r\n", b"DELETED\r\n");
    c.roundtrip(b"md mk\r\n", b"HD\r\n");
    for r in [&east, &west] {
        assert_eq!(direct_get(r, "k"), b"END\r\n");
        assert_eq!(direct_get(r, "mk"), b"END\r\n");
    }
    let metrics = m.metrics();
    for pool in ["east", "west"] {
        let ok = counter(
            &metrics,
            "memroute_replica_writes_total",
            &[("pool", pool), ("result", "ok")],
        );
        assert_eq!(ok, 8.0, "{pool}");
    }
}

/// Seconds left on `key` in a backend, read with `mg <key> t`.
fn ttl_on(m: &Memcached, key: &str) -> String {
    let line = direct(m, &format!("mg {key} t\r\n"), b"");
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn gat_touches_every_replica() {
    let (east, west, _m, mut c) = setup("");
    c.roundtrips(rows![
        b"set t 0 0 1\r\nx\r\n" => b"STORED\r\n",
        b"gat 1000 t\r\n" => b"VALUE t 0 1\r\nx\r\nEND\r\n",
    ]);
    for r in [&east, &west] {
        let t = ttl_on(r, "t");
        assert!(t == "HD t1000\r\n" || t == "HD t999\r\n", "{t:?}");
    }
}

#[test]
fn reads_go_to_the_home_replica_of_the_key() {
    let (east, west) = (Memcached::start(), Memcached::start());
    let m = replicated(&east, &west, "");
    let keys: Vec<String> = (0..40).map(|i| format!("home:{i}")).collect();
    let mut homes = [0, 0];
    for k in &keys {
        // Different values on the two replicas show which one answered.
        direct_set(&east, k, "east");
        direct_set(&west, k, "west");
    }
    let mut c = m.client();
    for k in &keys {
        let h = home(&m, k);
        homes[h] += 1;
        let want = if h == 0 { "east" } else { "west" };
        assert_eq!(get(&mut c, k), hit(k, want), "{k}");
        c.roundtrip(
            format!("mg {k} v\r\n").as_bytes(),
            format!("VA 4\r\n{want}\r\n").as_bytes(),
        );
    }
    assert!(homes[0] > 0 && homes[1] > 0, "homes spread: {homes:?}");
    // A multi-key get asks each key's home, in the client's key order.
    let line = format!("get {}\r\n", keys[..10].join(" "));
    let mut want = Vec::new();
    for k in &keys[..10] {
        let v = if home(&m, k) == 0 { "east" } else { "west" };
        want.extend(format!("VALUE {k} 0 4\r\n{v}\r\n").into_bytes());
    }
    want.extend(b"END\r\n");
    c.roundtrip(line.as_bytes(), &want);
}

#[test]
fn a_miss_fails_over_only_with_read_miss_failover() {
    let (east, west) = (Memcached::start(), Memcached::start());
    let plain = replicated(&east, &west, "");
    let warm = replicated(&east, &west, "read_miss_failover = true");
    // One key whose home is east, present on west only (east is "warming").
    let key = (0..100)
        .map(|i| format!("warm:{i}"))
        .find(|k| home(&plain, k) == 0)
        .expect("some key homes on east");
    direct_set(&west, &key, "w");
    let mut c = plain.client();
    assert_eq!(get(&mut c, &key), b"END\r\n");
    c.roundtrip(format!("mg {key} v\r\n").as_bytes(), b"EN\r\n");
    let mut c = warm.client();
    assert_eq!(get(&mut c, &key), hit(&key, "w"));
    c.roundtrip(format!("mg {key} v\r\n").as_bytes(), b"VA 1\r\nw\r\n");
    let failovers = warm.counter(
        "memroute_replica_failovers_total",
        &[("pool", "east"), ("reason", "miss")],
    );
    assert_eq!(failovers, 2.0);
}

#[test]
fn cas_is_checked_on_the_home_replica_and_followed_on_the_other() {
    let (east, west, m, mut c) = setup("");
    c.roundtrip(b"set c 0 0 1\r\na\r\n", b"STORED\r\n");
    let h = home(&m, "c");
    let home_mc = if h == 0 { &east } else { &west };
    // The token memroute hands out is the home replica's own.
    let token = c.gets_cas("c");
    let direct_token = direct(home_mc, "gets c\r\n", b"END\r\n");
    assert!(
        String::from_utf8_lossy(&direct_token).contains(&format!(" {token}\r\n")),
        "{token} vs {direct_token:?}"
    );
    c.roundtrip(
        format!("cas c 0 0 1 {token}\r\nb\r\n").as_bytes(),
        b"STORED\r\n",
    );
    assert_eq!(direct_get(&east, "c"), hit("c", "b"));
    assert_eq!(direct_get(&west, "c"), hit("c", "b"));
    // A stale token is refused and changes nothing anywhere.
    c.roundtrip(
        format!("cas c 0 0 1 {token}\r\nx\r\n").as_bytes(),
        b"EXISTS\r\n",
    );
    assert_eq!(direct_get(&east, "c"), hit("c", "b"));
    assert_eq!(direct_get(&west, "c"), hit("c", "b"));
}

#[test]
fn the_first_replica_answers_and_disagreements_are_counted() {
    let (east, west, m, mut c) = setup("");
    direct_set(&east, "ctr", "10");
    direct_set(&west, "ctr", "20");
    c.roundtrip(b"incr ctr 1\r\n", b"11\r\n");
    assert_eq!(direct_get(&west, "ctr"), hit("ctr", "21"));
    // `add` of a key only west has: east's STORED is the answer, west's NOT_STORED disagrees.
    direct_set(&west, "only-west", "w");
    c.roundtrip(b"add only-west 0 0 1\r\ne\r\n", b"STORED\r\n");
    let west_disagrees = m.counter("memroute_replica_disagreements_total", &[("pool", "west")]);
    assert_eq!(west_disagrees, 2.0);
    // With the first replica down, the next one's reply is the answer.
    drop(east);
    c.roundtrip(b"incr ctr 1\r\n", b"22\r\n");
}

#[test]
fn async_writes_answer_after_the_first_replica_and_reach_the_rest() {
    let (east, west, m, mut c) = setup("write_mode = \"async\"");
    for i in 0..50 {
        c.roundtrip(
            format!("set a{i} 0 0 1\r\n{}\r\n", i % 10).as_bytes(),
            b"STORED\r\n",
        );
    }
    for i in 0..50 {
        let key = format!("a{i}");
        let want = hit(&key, &(i % 10).to_string());
        assert_eq!(direct_get(&east, &key), want);
        poll("the async write to west", || {
            (direct_get(&west, &key) == want).then_some(())
        });
    }
    let ok = poll("west's writes counted", || {
        let n = counter(
            &m.metrics(),
            "memroute_replica_writes_total",
            &[("pool", "west"), ("result", "ok")],
        );
        (n == 50.0).then_some(n)
    });
    assert_eq!(ok, 50.0);
}

/// One verified step of the load: `set` a fresh value, read it back through memroute, and read
/// back the previous key. Returns the failures seen (an answer other than the expected bytes).
fn step(c: &mut Client, i: usize, prev: Option<usize>) -> Vec<String> {
    let mut failures = Vec::new();
    let (key, value) = (format!("load:{i}"), format!("v{i}"));
    let set = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
    c.send(set.as_bytes());
    let answer = c.read_line();
    if answer != b"STORED\r\n" {
        failures.push(format!("set {key}: {:?}", String::from_utf8_lossy(&answer)));
    }
    for j in std::iter::once(i).chain(prev) {
        let (k, v) = (format!("load:{j}"), format!("v{j}"));
        let got = get(c, &k);
        if got != hit(&k, &v) {
            failures.push(format!("get {k}: {:?}", String::from_utf8_lossy(&got)));
        }
    }
    failures
}

#[test]
fn reads_never_fail_while_one_replica_is_up() {
    let (mut east, mut west) = (Memcached::start(), Memcached::start());
    let m = replicated(&east, &west, "read_miss_failover = true");
    let load = Load::start(&m, |c, i| step(c, i, i.checked_sub(1)));
    let mut c = m.client();
    // `down` is stopped while the load runs and restarted empty: every key written meanwhile
    // is on `up`, the replica that was up, and reads through memroute find it (`down`'s misses
    // fail over to `up`).
    let mut outage = |down: &mut Memcached, up: &Memcached, name: &str| {
        load.at_least(100);
        down.stop();
        let from = load.at_least(1);
        wait_health(&m, down, 0.0);
        let to = load.at_least(200);
        down.restart();
        wait_health(&m, down, 1.0);
        for i in from..to {
            let (k, v) = (format!("load:{i}"), format!("v{i}"));
            assert_eq!(direct_get(up, &k), hit(&k, &v), "{k} on {name}");
            assert_eq!(get(&mut c, &k), hit(&k, &v), "{k} through memroute");
        }
    };
    outage(&mut east, &west, "west");
    outage(&mut west, &east, "east");
    load.at_least(100);
    let (failures, steps) = load.stop();
    assert!(
        failures.is_empty(),
        "{} failures in {steps} steps: {failures:#?}",
        failures.len()
    );
    let failovers = m.counter(
        "memroute_replica_failovers_total",
        &[("pool", "east"), ("reason", "error")],
    );
    assert!(
        failovers > 0.0,
        "reads failed over from the killed east: {failovers}"
    );
}

#[test]
fn a_multi_key_get_fails_over_per_key() {
    let (east, _west, m, mut c) = setup("");
    let keys: Vec<String> = (0..12).map(|i| format!("mk:{i}")).collect();
    for k in &keys {
        c.roundtrip(format!("set {k} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
    }
    drop(east);
    let mut want = Vec::new();
    for k in &keys {
        want.extend(format!("VALUE {k} 0 1\r\nx\r\n").into_bytes());
    }
    want.extend(b"END\r\n");
    c.roundtrip(format!("get {}\r\n", keys.join(" ")).as_bytes(), &want);
    let failed_over = m.counter(
        "memroute_replica_failovers_total",
        &[("pool", "east"), ("reason", "error")],
    );
    assert!(failed_over > 0.0, "{failed_over}");
}

#[test]
fn refused_combinations_are_located_config_errors() {
    let text = r#"[pools.a]
servers = ["127.0.0.1:1"]
failover = "a"

[pools.b]
servers = ["127.0.0.1:2"]
failover = "g"
eject = true

[pools.g]
servers = ["127.0.0.1:3"]
failover = "b"

[pools.c]
servers = ["127.0.0.1:4"]
failover_ttl = "5s"

[[routes]]
prefix = ""
tiers = ["c"]
replicas = ["a", "b"]
shadow = { pool = "c", fraction = 0.1 }

[[routes]]
prefix = "x"
replicas = ["a"]
shadow = { pool = "g", fraction = 1.5 }

[[routes]]
prefix = "y"
tiers = ["c", "a"]
write_mode = "async"
"#;
    let dir = scratch_dir("replicas-config");
    let file = write_file(&dir, "bad.toml", text);
    let out = check_config(&file);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = file.display().to_string();
    let want = [
        "3:12: pool `a` cannot fail over to itself",
        "3:12: pool `a` is a tier of the route with prefix \"y\", which has fallback tiers: `failover` serves plain and replicated routes only",
        "7:12: the gutter pool `g` has a `failover` of its own (to `b`): gutters do not chain",
        "7:12: `failover` and `eject = true` exclude each other: an ejecting pool moves a down server's keys to its other servers",
        "12:12: the gutter pool `b` has a `failover` of its own (to `g`): gutters do not chain",
        "16:1: `failover_ttl` only applies to a pool with `failover`",
        "21:1: a route has `tiers` or `replicas`, not both: fallback tiers behind replicated pools are not supported",
        "22:19: the shadow pool `c` is one of this route's own pools: shadow traffic goes to a candidate pool the route does not use",
        "26:12: `replicas` needs at least two pools (a single pool is `tiers = [\"POOL\"]`)",
        "27:35: `fraction` must be a number above 0 and at most 1, e.g. 0.1",
        "32:1: `write_mode` only applies to a route with `replicas`",
    ];
    let got: Vec<&str> = stderr.lines().collect();
    let want: Vec<String> = want.iter().map(|w| format!("{name}:{w}")).collect();
    assert_eq!(got, want, "{stderr}");
}

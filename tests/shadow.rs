//! Shadow traffic (`shadow = { pool, fraction }`, see `src/route/shadow.rs`) against real
//! memcacheds: the chosen share of keys reaches the candidate, the client only ever sees the
//! main pool's replies, reads are compared, and a stopped candidate costs the main path nothing
//! but dropped (counted) copies.

mod common;
mod replicas_support;

use common::{Client, Memcached, Memroute, counter, poll, poll_for};
use replicas_support::{direct_get, direct_set, get, hit, start};

fn shadowed(
    main: &Memcached,
    candidate: &Memcached,
    fraction: f64,
    candidate_extra: &str,
) -> Memroute {
    start(
        &[
            ("main", &[main], ""),
            ("candidate", &[candidate], candidate_extra),
        ],
        &format!(
            "[[routes]]\nprefix = \"\"\ntiers = [\"main\"]\nshadow = {{ pool = \"candidate\", fraction = {fraction} }}\n"
        ),
    )
}

fn selected(m: &Memroute, key: &str) -> bool {
    let v: serde_json::Value =
        serde_json::from_str(&m.get(&format!("/route?key={key}")).body).expect("json");
    v["shadow"]["selected"].as_bool().expect("shadow in /route")
}

fn shadow_count(m: &Memroute, result: &str) -> f64 {
    counter(
        &m.metrics(),
        "memroute_shadow_requests_total",
        &[("pool", "candidate"), ("result", result)],
    )
}

#[test]
fn a_tenth_of_the_keys_reach_the_candidate_and_never_the_client() {
    let (main, candidate) = (Memcached::start(), Memcached::start());
    let m = shadowed(&main, &candidate, 0.1, "");
    let mut c = m.client();
    let keys: Vec<String> = (0..1000).map(|i| format!("s:{i}")).collect();
    for k in &keys {
        c.roundtrip(format!("set {k} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
    }
    let chosen: Vec<bool> = keys.iter().map(|k| selected(&m, k)).collect();
    let n = chosen.iter().filter(|&&s| s).count();
    assert!(
        (80..=120).contains(&n),
        "{n} of 1000 keys shadowed (10% ± 2%)"
    );
    poll("every copied write answered", || {
        (shadow_count(&m, "written") == n as f64).then_some(())
    });
    // Exactly the selected keys are in the candidate.
    let mut direct = Client::connect(candidate.port);
    for (k, &s) in keys.iter().zip(&chosen) {
        let want = if s { hit(k, "x") } else { b"END\r\n".to_vec() };
        assert_eq!(
            get(&mut direct, k),
            want,
            "{k} in the candidate (selected: {s})"
        );
    }
    // Reads are compared; the client sees the main pool's value, whatever the candidate holds.
    let picked: Vec<&String> = keys
        .iter()
        .zip(&chosen)
        .filter(|(_, s)| **s)
        .map(|(k, _)| k)
        .collect();
    let (same, changed) = (picked[0], picked[1]);
    direct_set(&candidate, changed, "other");
    assert_eq!(get(&mut c, same), hit(same, "x"));
    assert_eq!(get(&mut c, changed), hit(changed, "x"));
    c.roundtrip(format!("mg {same} v\r\n").as_bytes(), b"VA 1\r\nx\r\n");
    c.roundtrip(
        format!("get {same} {changed} s:nope\r\n").as_bytes(),
        &[
            hit(same, "x").strip_suffix(b"END\r\n").unwrap_or_default(),
            &hit(changed, "x"),
        ]
        .concat(),
    );
    poll("the comparisons counted", || {
        let got = (shadow_count(&m, "same"), shadow_count(&m, "different"));
        // get same, mg same, and `same` in the multi-key get; `changed` twice.
        (got == (3.0, 2.0)).then_some(())
    });
    // Keys that are not shadowed are never copied: the candidate has no unselected key.
    let unpicked = keys.iter().zip(&chosen).find(|(_, s)| !**s).map(|(k, _)| k);
    if let Some(k) = unpicked {
        c.roundtrip(format!("delete {k}\r\n").as_bytes(), b"DELETED\r\n");
        assert_eq!(direct_get(&candidate, k), b"END\r\n");
    }
}

#[test]
fn a_stopped_candidate_only_drops_copies() {
    let (main, candidate) = (Memcached::start(), Memcached::start());
    // Every key shadowed; a long timeout and no mark-down keep the candidate's copies waiting.
    let m = shadowed(
        &main,
        &candidate,
        1.0,
        "timeout = \"5s\"\nfailure_limit = 100000",
    );
    candidate.pause();
    let mut c = m.client();
    let n = 3000;
    let mut burst = Vec::new();
    let mut want = Vec::new();
    for i in 0..n {
        burst.extend(format!("set p:{i} 0 0 1\r\ny\r\n").into_bytes());
        want.extend(b"STORED\r\n");
    }
    c.send(&burst);
    c.expect(&want);
    for i in (0..n).step_by(100) {
        let k = format!("p:{i}");
        assert_eq!(get(&mut c, &k), hit(&k, "y"));
    }
    // The queue (1024) and the copies in flight (256) are bounded: the rest were dropped.
    let dropped = shadow_count(&m, "dropped");
    assert!(dropped >= (n - 1024 - 256) as f64, "{dropped} dropped");
    candidate.resume();
}

#[test]
fn a_reload_adds_and_removes_the_shadow() {
    let (main, candidate) = (Memcached::start(), Memcached::start());
    let m = start(
        &[("main", &[&main], ""), ("candidate", &[&candidate], "")],
        "[[routes]]\nprefix = \"\"\ntiers = [\"main\"]\n",
    );
    let plain = std::fs::read_to_string(&m.config_path).expect("config");
    let reloads = |m: &Memroute| {
        counter(
            &m.metrics(),
            "memroute_config_reloads_total",
            &[("result", "success")],
        )
    };
    let reload_to = |text: &str, count: f64| {
        m.replace_config(text);
        m.signal("HUP");
        poll("the reload", || (reloads(&m) >= count).then_some(()));
    };
    let mut c = m.client();
    c.roundtrip(b"set before 0 0 1\r\nb\r\n", b"STORED\r\n");
    reload_to(
        &format!("{plain}shadow = {{ pool = \"candidate\", fraction = 1.0 }}\n"),
        1.0,
    );
    c.roundtrip(b"set during 0 0 1\r\nd\r\n", b"STORED\r\n");
    poll("the copy reached the candidate", || {
        (direct_get(&candidate, "during") == hit("during", "d")).then_some(())
    });
    assert_eq!(direct_get(&candidate, "before"), b"END\r\n");
    reload_to(&plain, 2.0);
    c.roundtrip(b"set after 0 0 1\r\na\r\n", b"STORED\r\n");
    assert_eq!(get(&mut c, "after"), hit("after", "a"));
    // A copy would arrive within milliseconds; none does.
    let copied = poll_for(std::time::Duration::from_millis(300), || {
        (direct_get(&candidate, "after") != b"END\r\n").then_some(())
    });
    assert!(
        copied.is_none(),
        "the shadow outlived the reload that removed it"
    );
}

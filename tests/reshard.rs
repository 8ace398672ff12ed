//! Warm resharding (issue 15, DESIGN §4): after a reload changes a pool's ring, keys that moved
//! are read through from the previous ring and copied into their new owner with their remaining
//! TTL; writes and deletes invalidate the previous owner; the window closes after
//! `reshard_warmup` and the removed server's connections close. (`reshard_warmup = "0s"`, the
//! cold behaviour, is tested in tests/reload.rs: `adding_a_fourth_server_moves_only_the_keys_ketama_gives_it`.)

mod common;
mod config_support;
mod tiers_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Builder, Client, Memcached, Memroute, counter, poll, storage};
use config_support::wait_for_config;
use tiers_support::{assert_ttl_close, get, hit, meta_get, read_cas_hit};

/// One md5 pool `main` over `servers` (`host:port` or `host:port:weight`) with `extra` lines.
fn pool(servers: &[String], extra: &str) -> Builder {
    let settings = format!("hash = \"md5\"\ntimeout = \"500ms\"\n{extra}");
    Memroute::builder()
        .admin()
        .pool_with("main", servers, &settings)
}

fn addrs(backends: &[&Memcached]) -> Vec<String> {
    backends.iter().map(|b| b.addr()).collect()
}

/// `n` memcacheds and their addresses.
fn memcacheds(n: usize) -> (Vec<Memcached>, Vec<String>) {
    let backends: Vec<Memcached> = (0..n).map(|_| Memcached::start()).collect();
    let a = backends.iter().map(Memcached::addr).collect();
    (backends, a)
}

/// Index of the backend holding `key` (asked directly), if exactly one does.
fn holder(backends: &[&Memcached], key: &str) -> Option<usize> {
    let found: Vec<usize> = (0..backends.len())
        .filter(|&i| meta_get(backends[i].port, key).is_some())
        .collect();
    assert!(found.len() <= 1, "{key} on backends {found:?}");
    found.first().copied()
}

/// `/route?key=` as JSON.
fn route(proxy: &Memroute, key: &str) -> serde_json::Value {
    let body = proxy.get(&format!("/route?key={key}")).body;
    serde_json::from_str(&body).expect("json")
}

/// True when `/route` says `key` moved (its previous owner is asked).
fn moved(proxy: &Memroute, key: &str) -> bool {
    let r = route(proxy, key);
    r["tiers"]
        .as_array()
        .expect("tiers")
        .iter()
        .any(|t| t["moved"] == serde_json::Value::Bool(true))
}

/// The server tier 0 of `key`'s route names in `/route` (the current ring's owner).
fn owner(proxy: &Memroute, key: &str) -> String {
    route(proxy, key)["tiers"][0]["server"]
        .as_str()
        .expect("a server")
        .to_string()
}

/// Reloads `proxy` to `builder`'s config and waits until it runs.
fn reload(proxy: &Memroute, builder: &Builder) {
    let text = proxy.config_for(builder);
    proxy.replace_config(&text);
    wait_for_config(proxy.admin(), &text);
}

/// Acceptance 1: 8 clients doing set-then-get of fresh keys and re-reads of their earlier keys
/// (every reply checked) while the pool gets a server, loses one and has a weight changed; no
/// read of a key stored before a reload is lost, and afterwards the moved keys are in their
/// new owners with the original's remaining TTL.
#[test]
fn add_remove_and_reweight_under_load_lose_no_reads_and_warm_the_new_owners() {
    const KEYS: usize = 600;
    const CLIENTS: usize = 8;
    let (backends, a) = memcacheds(4);
    let all: Vec<&Memcached> = backends.iter().collect();
    let warm = "reshard_warmup = \"5m\"";
    let configs = [
        pool(&a[..3], warm),
        // A server added.
        pool(&a[..4], warm),
        // One removed (it keeps running: its data is what the window reads).
        pool(&[a[0].clone(), a[1].clone(), a[3].clone()], warm),
        // A weight changed.
        pool(
            &[
                format!("{}:3", a[0]),
                format!("{}:1", a[1]),
                format!("{}:1", a[3]),
            ],
            warm,
        ),
    ];
    let proxy = configs[0].start();
    let mut c = Client::connect(proxy.port);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("pre:{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        c.roundtrip(
            &storage("set", k, i as u32, 300, format!("v{i}").as_bytes(), ""),
            b"STORED\r\n",
        );
    }
    let original: Vec<(usize, i64)> = keys
        .iter()
        .map(|k| {
            let h = holder(&all, k).expect("stored");
            (h, meta_get(all[h].port, k).expect("item").ttl)
        })
        .collect();

    // The clients: each its own keys, set-then-get, and a re-read of an earlier one.
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicUsize::new(0));
    let port = proxy.port;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (stop, checked) = (stop.clone(), checked.clone());
            thread::spawn(move || {
                let mut c = Client::connect(port);
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("load:{t}:{n}");
                    let value = format!("{t}-{n}");
                    c.roundtrip(
                        &storage("set", &key, 0, 300, value.as_bytes(), ""),
                        b"STORED\r\n",
                    );
                    assert_eq!(
                        get(&mut c, &key),
                        hit(&key, 0, value.as_bytes()),
                        "fresh {key}"
                    );
                    let old = n / 2;
                    let key = format!("load:{t}:{old}");
                    let value = format!("{t}-{old}");
                    assert_eq!(
                        get(&mut c, &key),
                        hit(&key, 0, value.as_bytes()),
                        "earlier {key}"
                    );
                    checked.fetch_add(2, Ordering::Relaxed);
                    n += 1;
                }
                n
            })
        })
        .collect();

    let expect_all = |c: &mut Client, when: &str| {
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                get(c, k),
                hit(k, i as u32, format!("v{i}").as_bytes()),
                "{when}: {k} lost"
            );
        }
    };
    for (step, config) in configs.iter().enumerate().skip(1) {
        reload(&proxy, config);
        expect_all(&mut c, &format!("after reload {step}"));
    }
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        assert!(t.join().expect("client thread") > 0);
    }
    assert!(checked.load(Ordering::Relaxed) > 0);

    // Every key is now in its owner under the last ring: a plain read of that server finds it,
    // with the original's remaining TTL (copies are made in the background: poll).
    let metrics = proxy.metrics();
    let copied = counter(
        &metrics,
        "memroute_reshard_copies_total",
        &[("pool", "main"), ("result", "ok")],
    );
    assert!(copied > 0.0, "moved keys were copied: {copied}");
    let rings = counter(
        &metrics,
        "memroute_reshard_previous_rings",
        &[("pool", "main")],
    );
    assert_eq!(
        rings, 3.0,
        "three reloads within the window: three previous rings"
    );
    let last: Vec<&Memcached> = vec![all[0], all[1], all[3]];
    let mut moved = 0;
    for (i, k) in keys.iter().enumerate() {
        // Where the last ring puts it, as /route tells (its first tier).
        let owner_addr = owner(&proxy, k);
        let owner = last
            .iter()
            .position(|b| b.addr() == owner_addr)
            .expect("an owner");
        let item = poll(&format!("{k} in its new owner"), || {
            meta_get(last[owner].port, k)
        });
        assert_eq!(item.value, format!("v{i}").into_bytes());
        let (was, ttl) = original[i];
        if last[owner].port != all[was].port {
            moved += 1;
            // The remaining TTL at copy time; the original has aged as much since.
            let now_original = meta_get(all[was].port, k).map_or(ttl, |o| o.ttl);
            assert_ttl_close(item.ttl, now_original);
        }
    }
    assert!(moved > KEYS / 10, "a good share of keys moved: {moved}");
}

/// /route shows the previous owner while the window is open; the window's open and close are
/// logged; the removed server is asked only for moved keys and its connections close when the
/// window ends; the gauge goes back to 0.
#[test]
fn the_window_shows_in_route_and_logs_and_closes_the_removed_server_at_its_end() {
    let (backends, a) = memcacheds(3);
    let warm = "reshard_warmup = \"3s\"";
    let proxy = pool(&a, warm).start();
    let mut c = Client::connect(proxy.port);
    let keys: Vec<String> = (0..200).map(|i| format!("w:{i}")).collect();
    for k in &keys {
        c.roundtrip(&storage("set", k, 0, 0, b"x", ""), b"STORED\r\n");
    }
    // The keys the third server holds move when it is removed.
    let on_third: Vec<&String> = keys
        .iter()
        .filter(|k| meta_get(backends[2].port, k).is_some())
        .collect();
    assert!(!on_third.is_empty());
    let opened = Instant::now();
    reload(&proxy, &pool(&a[..2], warm));
    let k = on_third[0];
    let shown = route(&proxy, k);
    let previous = &shown["tiers"][1];
    assert_eq!(previous["server"], serde_json::json!(a[2]), "{shown}");
    assert_eq!(previous["previous_ring"], serde_json::json!(1), "{shown}");
    assert_eq!(previous["moved"], serde_json::json!(true), "{shown}");
    let stays = keys
        .iter()
        .find(|k| meta_get(backends[0].port, k).is_some())
        .expect("a key on the first server");
    assert!(!moved(&proxy, stays), "{}", route(&proxy, stays));
    assert!(proxy.stderr().contains("reshard window opened"));
    assert_eq!(
        proxy.sample("memroute_reshard_previous_rings", &[("pool", "main")]),
        Some(1.0)
    );
    // A key that did not move does not ask the removed server.
    let lookups = |result| {
        proxy
            .sample(
                "memroute_reshard_lookups_total",
                &[("pool", "main"), ("result", result)],
            )
            .unwrap_or(0.0)
    };
    let before = lookups("hit") + lookups("miss");
    assert_eq!(get(&mut c, stays), hit(stays, 0, b"x"));
    assert_eq!(lookups("hit") + lookups("miss"), before);
    // A moved key does, once.
    assert_eq!(get(&mut c, k), hit(k, 0, b"x"));
    assert_eq!(lookups("hit"), 1.0);

    poll("the window to close", || {
        proxy
            .stderr()
            .contains("reshard window closed")
            .then_some(())
    });
    assert!(opened.elapsed() >= Duration::from_secs(3));
    assert_eq!(
        proxy.sample("memroute_reshard_previous_rings", &[("pool", "main")]),
        Some(0.0)
    );
    // Only our own stats connection is left on the removed server.
    poll("the removed server's connections to close", || {
        (Client::connect(backends[2].port).stat("curr_connections") == 1).then_some(())
    });
    // After the window a moved key that was not read is a miss (cold), as without resharding.
    let cold = on_third
        .iter()
        .skip(1)
        .find(|k| {
            meta_get(backends[0].port, k).is_none() && meta_get(backends[1].port, k).is_none()
        })
        .expect("an unread moved key");
    assert_eq!(get(&mut c, cold), b"END\r\n");
}

/// Acceptance 2: during the window a moved key that is deleted or overwritten never comes back
/// from its previous owner, also while other clients read it at the same time; counters and
/// CAS keep working for moved keys.
#[test]
fn deletes_and_writes_in_the_window_win_and_counters_and_cas_continue() {
    let (backends, a) = memcacheds(3);
    let warm = "reshard_warmup = \"5m\"";
    let proxy = pool(&a[..2], warm).start();
    let mut c = Client::connect(proxy.port);
    let keys: Vec<String> = (0..400).map(|i| format!("r:{i}")).collect();
    for k in &keys {
        c.roundtrip(&storage("set", k, 0, 0, b"old", ""), b"STORED\r\n");
    }
    c.roundtrip(&storage("set", "ctr", 0, 0, b"41", ""), b"STORED\r\n");
    c.roundtrip(&storage("set", "casd", 0, 0, b"c1", ""), b"STORED\r\n");
    reload(&proxy, &pool(&a, warm));
    // The keys the added server now owns (moved): found through /route.
    let moved: Vec<&String> = keys.iter().filter(|k| moved(&proxy, k)).collect();
    assert!(moved.len() > 40, "moved: {}", moved.len());
    let (deleted, overwritten) = moved.split_at(moved.len() / 2);

    // Readers hammer the moved keys while one client deletes half and overwrites the rest.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let stop = stop.clone();
            let keys: Vec<String> = moved.iter().map(|k| k.to_string()).collect();
            let port = proxy.port;
            thread::spawn(move || {
                let mut c = Client::connect(port);
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    get(&mut c, &keys[i % keys.len()]);
                    i += 1;
                }
            })
        })
        .collect();
    for k in deleted {
        c.roundtrip(format!("delete {k}\r\n").as_bytes(), b"DELETED\r\n");
    }
    for k in overwritten {
        c.roundtrip(&storage("set", k, 0, 0, b"new", ""), b"STORED\r\n");
    }
    // Past the delayed double delete (one timeout).
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader");
    }
    for _ in 0..3 {
        for k in deleted {
            assert_eq!(get(&mut c, k), b"END\r\n", "{k} came back");
        }
        for k in overwritten {
            assert_eq!(get(&mut c, k), hit(k, 0, b"new"), "{k}");
        }
        thread::sleep(Duration::from_millis(300));
    }
    // The previous owners no longer hold any of them.
    for k in moved.iter() {
        for b in &backends[..2] {
            assert_eq!(meta_get(b.port, k), None, "{k} left on its previous owner");
        }
    }

    // A counter and a CAS item that moved (or not: then they are plain) keep working.
    c.roundtrip(b"incr ctr 1\r\n", b"42\r\n");
    c.send(b"gets casd\r\n");
    let (_, cas, value) = read_cas_hit(&mut c, "casd");
    assert_eq!(value, b"c1");
    c.roundtrip(
        &storage("cas", "casd", 0, 0, b"c2", &cas.to_string()),
        b"STORED\r\n",
    );
    assert_eq!(get(&mut c, "casd"), hit("casd", 0, b"c2"));
    // Moved counters: every moved key that was overwritten is a number-free string, so use
    // fresh counters stored before a second reload.
    let counters: Vec<String> = (0..100).map(|i| format!("n:{i}")).collect();
    for k in &counters {
        c.roundtrip(&storage("set", k, 0, 0, b"7", ""), b"STORED\r\n");
    }
    reload(&proxy, &pool(&a[..2], warm));
    for k in &counters {
        c.roundtrip(format!("incr {k} 1\r\n").as_bytes(), b"8\r\n");
        c.roundtrip(format!("decr {k} 2\r\n").as_bytes(), b"6\r\n");
    }
}

/// Explicit tiers and resharding compose: a route `[new, old]` whose tier-0 pool is resized
/// finds a key in new's previous ring and a key only old holds.
#[test]
fn a_tiered_route_whose_tier0_pool_is_resized_reads_both_the_previous_ring_and_old() {
    let new: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let old = Memcached::start();
    let n: Vec<&Memcached> = new.iter().collect();
    let a = addrs(&n);
    let settings = "hash = \"md5\"\ntimeout = \"500ms\"\nreshard_warmup = \"5m\"";
    let setup = |servers: &[String]| {
        Memroute::builder()
            .admin()
            .pool_with("new", servers, settings)
            .pool_with("old", [&old], settings)
            .route("", &["new", "old"])
    };
    let proxy = setup(&a[..2]).start();
    let mut c = Client::connect(proxy.port);
    let keys: Vec<String> = (0..200).map(|i| format!("t:{i}")).collect();
    for k in &keys {
        c.roundtrip(&storage("set", k, 0, 0, b"in-new", ""), b"STORED\r\n");
    }
    tiers_support::put(old.port, "only-old", 0, 0, b"o");
    reload(&proxy, &setup(&a));
    let moved: Vec<&String> = keys.iter().filter(|k| moved(&proxy, k)).collect();
    assert!(!moved.is_empty());
    for k in &moved {
        assert_eq!(get(&mut c, k), hit(k, 0, b"in-new"), "{k}");
    }
    assert_eq!(get(&mut c, "only-old"), hit("only-old", 0, b"o"));
    // Copied into its owner in new's current ring.
    let k = moved[0].as_str();
    poll("the moved key copied to the added server", || {
        meta_get(n[2].port, k)
    });
}

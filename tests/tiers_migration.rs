//! A migration under way (DESIGN §4): cache-aside reads warm the new pool, a lower tier that is
//! down or hung costs at most a timeout and counts as a miss, and a lower tier without meta
//! commands is copied from with `warm_ttl`.

mod common;
mod tiers_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use common::{
    Builder, Client, Memcached, Memroute, POLL_LIMIT, counter, poll, poll_for, storage, value_reply,
};
use tiers_support::{
    Item, Migration, TIMEOUT, get, hit, meta_cas, migration, read_cas_hit, read_retrieval,
};

/// Sanity bound for one request while a lower tier misbehaves: generous (the pool timeout is
/// 500 ms; a command makes at most a few sequential lower-tier calls), never a tight assertion.
const SANE: Duration = Duration::from_secs(5);

/// Runs `f`, asserting it returned within [`SANE`].
#[track_caller]
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    assert!(start.elapsed() < SANE, "{what} took {:?}", start.elapsed());
    out
}

// ---- cache-aside during the migration ------------------------------------------------------

/// How many of `keys` the memcached at `port` holds (one multi-key `get`).
fn direct_hits(port: u16, keys: &[String]) -> usize {
    let mut c = Client::connect(port);
    c.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let answer = read_retrieval(&mut c);
    answer
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"VALUE "))
        .count()
}

#[test]
fn cache_aside_reads_of_10000_old_keys_all_hit_and_warm_the_new_pool() {
    let m = Migration::start_with("", true);
    let keys: Vec<String> = (0..10_000).map(|i| format!("ca:{i}")).collect();
    let value = |i: usize| format!("value-{i}");
    // Loaded directly into old, before the migration.
    let mut old = Client::connect(m.old.port);
    for chunk in (0..keys.len()).collect::<Vec<_>>().chunks(1000) {
        let mut batch = Vec::new();
        for &i in chunk {
            batch.extend(storage(
                "set",
                &keys[i],
                (i % 7) as u32,
                0,
                value(i).as_bytes(),
                "noreply",
            ));
        }
        batch.extend_from_slice(b"mn\r\n");
        old.roundtrip(&batch, b"MN\r\n");
    }

    let lookups = "memroute_tier_lookups_total";
    let tier = |pool, t, result| [("pool", pool), ("tier", t), ("result", result)];
    let before = m.metrics();
    // First pass through memroute: every key hits (from old).
    let mut c = m.client();
    let batches: Vec<(usize, &[String])> = keys.chunks(100).enumerate().collect();
    for &(b, batch) in &batches {
        c.send(format!("get {}\r\n", batch.join(" ")).as_bytes());
        let mut expected = Vec::new();
        for (j, k) in batch.iter().enumerate() {
            let i = b * 100 + j;
            expected.extend(value_reply(k, (i % 7) as u32, value(i).as_bytes()));
        }
        expected.extend_from_slice(b"END\r\n");
        assert!(read_retrieval(&mut c) == expected, "batch {b} differs");
    }
    let first = m.metrics();
    let delta = |a: &str, b: &str, labels: &[(&str, &str)]| {
        counter(b, lookups, labels) - counter(a, lookups, labels)
    };
    assert_eq!(delta(&before, &first, &tier("old", "1", "hit")), 10_000.0);

    // The copies are made in the background: poll (bounded) until new holds every key.
    for &(b, batch) in &batches {
        let mut found = 0;
        poll_for(POLL_LIMIT, || {
            found = m.new.iter().map(|n| direct_hits(n.port, batch)).sum();
            (found == batch.len()).then_some(())
        });
        assert_eq!(found, batch.len(), "batch {b}: keys in new");
    }
    // Spot checks with exact bytes: flags and "never expires" copied too.
    for i in [0, 1, 4999, 9999] {
        assert_eq!(
            m.in_new(&keys[i]),
            Some(Item {
                flags: (i % 7) as u32,
                ttl: -1,
                value: value(i).into_bytes()
            })
        );
    }

    // Second pass: every key is a tier-0 hit now; old is not asked any more.
    for &(_, batch) in &batches {
        c.send(format!("get {}\r\n", batch.join(" ")).as_bytes());
        read_retrieval(&mut c);
    }
    let second = m.metrics();
    assert_eq!(delta(&first, &second, &tier("new", "0", "hit")), 10_000.0);
    assert_eq!(delta(&first, &second, &tier("new", "0", "miss")), 0.0);
    assert_eq!(delta(&first, &second, &tier("old", "1", "hit")), 0.0);
}

// ---- a lower tier that is down or hung -----------------------------------------------------

/// What memroute answers when the outcome depends on a lower tier it cannot ask.
const UNREACHABLE: &[u8] = b"SERVER_ERROR lower tier unreachable\r\n";

/// Commands on a route whose old pool fails, in bounded time: reads of keys only old could hold
/// miss; commands whose answer depends on old answer `SERVER_ERROR` (never a `NOT_FOUND` or
/// `STORED` that may be false); what tier 0 decides alone is answered by tier 0.
fn exercise_with_failing_old(m: &Migration) {
    let mut c = m.client();
    for _ in 0..5 {
        // Only old had it: a miss, not an error.
        timed("get only-old", || {
            assert_eq!(get(&mut c, "only-old"), b"END\r\n")
        });
    }
    timed("get in-new", || {
        assert_eq!(get(&mut c, "in-new"), hit("in-new", 1, b"n"))
    });
    timed("multi get", || {
        c.roundtrip(b"get only-old in-new nowhere\r\n", &hit("in-new", 1, b"n"))
    });
    timed("gets only-old", || {
        c.roundtrip(b"gets only-old\r\n", UNREACHABLE)
    });
    timed("gets in-new", || {
        c.send(b"gets in-new\r\n");
        let (flags, _, value) = read_cas_hit(&mut c, "in-new");
        assert_eq!((flags, &value[..]), (1, &b"n"[..]));
    });
    timed("set", || {
        c.roundtrip(&storage("set", "fresh", 2, 0, b"f", ""), b"STORED\r\n")
    });
    assert_eq!(
        m.in_new("fresh"),
        Some(Item {
            flags: 2,
            ttl: -1,
            value: b"f".to_vec()
        })
    );
    // Old may hold "added": storing it could hide old's value, NOT_STORED may be false.
    timed("add", || {
        c.roundtrip(&storage("add", "added", 0, 0, b"a", ""), UNREACHABLE)
    });
    // Tier 0 holds "fresh": NOT_STORED is certain whatever old holds.
    timed("add of a tier-0 key", || {
        c.roundtrip(&storage("add", "fresh", 0, 0, b"a", ""), b"NOT_STORED\r\n")
    });
    timed("incr", || c.roundtrip(b"incr nocounter 1\r\n", UNREACHABLE));
    timed("replace", || {
        c.roundtrip(&storage("replace", "only-old", 0, 0, b"r", ""), UNREACHABLE)
    });
    timed("append", || {
        c.roundtrip(&storage("append", "in-new", 0, 0, b"+", ""), b"STORED\r\n")
    });
    timed("touch", || {
        c.roundtrip(b"touch only-old 10\r\n", UNREACHABLE)
    });
    timed("delete in-new", || {
        c.roundtrip(b"delete in-new\r\n", b"DELETED\r\n")
    });
    // Whether old held it is unknown; the delete itself is kept by a tombstone.
    timed("delete only-old", || {
        c.roundtrip(b"delete only-old\r\n", UNREACHABLE)
    });
    // The tombstone makes the second answer certain.
    timed("delete only-old again", || {
        c.roundtrip(b"delete only-old\r\n", b"NOT_FOUND\r\n")
    });
    assert_eq!(get(&mut c, "in-new"), b"END\r\n");
    // The meta commands keep the same rules.
    timed("ma only-old", || {
        c.roundtrip(b"ma mcounter\r\n", UNREACHABLE)
    });
    timed("mg only-old", || c.roundtrip(b"mg mkey v\r\n", b"EN\r\n"));
    timed("mg only-old with c", || {
        c.roundtrip(b"mg mkey c v\r\n", UNREACHABLE)
    });
    timed("md only-old", || c.roundtrip(b"md mkey\r\n", UNREACHABLE));
}

/// Lower-tier failures are counted: lookups as errors, writes below as failed.
fn assert_lower_errors_counted(m: &Migration) {
    let metrics = m.metrics();
    let errors = counter(
        &metrics,
        "memroute_tier_lookups_total",
        &[("pool", "old"), ("tier", "1"), ("result", "error")],
    );
    assert!(errors >= 1.0, "lookup errors in old counted: {errors}");
    let failed = counter(
        &metrics,
        "memroute_lower_tier_writes_total",
        &[("action", "delete"), ("result", "failed")],
    );
    assert!(failed >= 1.0, "failed deletes in old counted: {failed}");
}

fn migration_with_failing_old_prepared() -> Migration {
    let m = Migration::start_with("", true);
    let mut c = m.client();
    c.roundtrip(&storage("set", "in-new", 1, 0, b"n", ""), b"STORED\r\n");
    m.put_old("only-old", 0, 0, b"o");
    m
}

#[test]
fn stopped_lower_tier_reads_miss_writes_succeed_and_errors_are_counted() {
    let mut m = migration_with_failing_old_prepared();
    m.old.stop();
    exercise_with_failing_old(&m);
    assert_lower_errors_counted(&m);
}

#[test]
fn hung_lower_tier_costs_at_most_a_timeout_and_counts_as_misses() {
    let m = migration_with_failing_old_prepared();
    m.old.pause();
    exercise_with_failing_old(&m);
    assert_lower_errors_counted(&m);
    m.old.resume();
    // The late answers old sends now are read and dropped; tier 0 serves on.
    let mut c = m.client();
    assert_eq!(get(&mut c, "fresh"), hit("fresh", 2, b"f"));
}

// ---- a lower tier without meta commands ----------------------------------------------------

/// Key → (flags, value) of [`NoMetaMemcached`].
type Items = Mutex<HashMap<String, (u32, Vec<u8>)>>;

/// A memcached without meta commands (like 1.5 and older), emulated in memory because the test
/// machine's memcached (1.6.18) always has them: `get`/`gets`, `set`/`add`, `delete`, `version`;
/// anything else, `mg` included, answers `ERROR`. Stops its threads when dropped.
struct NoMetaMemcached {
    port: u16,
    items: Arc<Items>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl NoMetaMemcached {
    fn start() -> NoMetaMemcached {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().unwrap().port();
        let items: Arc<Items> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (i, s) = (items.clone(), stop.clone());
        let acceptor = thread::spawn(move || {
            let mut conns = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (i, s) = (i.clone(), s.clone());
                        conns.push(thread::spawn(move || serve(stream, &i, &s)));
                    }
                    Err(_) => sleep(Duration::from_millis(10)),
                }
            }
            conns.into_iter().for_each(|t| t.join().unwrap_or(()));
        });
        NoMetaMemcached {
            port,
            items,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn put(&self, key: &str, flags: u32, value: &[u8]) {
        let mut items = self.items.lock().unwrap();
        items.insert(key.to_string(), (flags, value.to_vec()));
    }

    fn has(&self, key: &str) -> bool {
        self.items.lock().unwrap().contains_key(key)
    }
}

impl Drop for NoMetaMemcached {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// One connection of [`NoMetaMemcached`]: a line at a time, until EOF or stop.
fn serve(stream: TcpStream, items: &Items, stop: &AtomicBool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut out = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with('\n') => {}
            // A timeout mid-line keeps the partial line and reads on.
            Ok(_) | Err(_) => continue,
        }
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        line.clear();
        let mut items = items.lock().unwrap();
        let answer: Vec<u8> = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["get" | "gets", ref keys @ ..] if !keys.is_empty() => {
                let mut a = Vec::new();
                for k in keys {
                    if let Some((flags, v)) = items.get(*k) {
                        a.extend(format!("VALUE {k} {flags} {}", v.len()).bytes());
                        if words[0] == "gets" {
                            a.extend(b" 1");
                        }
                        a.extend(b"\r\n");
                        a.extend(v);
                        a.extend(b"\r\n");
                    }
                }
                a.extend(b"END\r\n");
                a
            }
            [cmd @ ("set" | "add"), key, flags, _exptime, len, ..] => {
                let len: usize = len.parse().unwrap();
                let mut data = vec![0; len + 2];
                // Bounded by the read timeout; a short block just fails this test.
                if reader.read_exact(&mut data).is_err() {
                    return;
                }
                data.truncate(len);
                if cmd == "add" && items.contains_key(key) {
                    b"NOT_STORED\r\n".to_vec()
                } else {
                    items.insert(key.to_string(), (flags.parse().unwrap(), data));
                    b"STORED\r\n".to_vec()
                }
            }
            ["delete", key, ..] => match items.remove(key) {
                Some(_) => b"DELETED\r\n".to_vec(),
                None => b"NOT_FOUND\r\n".to_vec(),
            },
            ["version"] => b"VERSION 1.5.22\r\n".to_vec(),
            _ => b"ERROR\r\n".to_vec(),
        };
        drop(items);
        if out.write_all(&answer).is_err() {
            return;
        }
    }
}

/// Pool `new` (two real memcacheds) over a [`NoMetaMemcached`] as `old`.
fn start_over_no_meta(route_extra: &str) -> (Vec<Memcached>, NoMetaMemcached, Memroute) {
    let new: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let old = NoMetaMemcached::start();
    let proxy = migration(&new, [old.addr()], route_extra).admin().start();
    (new, old, proxy)
}

fn in_new(new: &[Memcached], key: &str) -> Option<Item> {
    new.iter()
        .find_map(|m| tiers_support::meta_get(m.port, key))
}

#[test]
fn lower_tier_without_meta_commands_is_copied_with_warm_ttl() {
    let (new, old, proxy) = start_over_no_meta("warm_ttl = \"60s\"");
    {
        // The emulation answers as memcached 1.5 does.
        let mut direct = Client::connect(old.port);
        direct.roundtrip(b"mg k v f t\r\n", b"ERROR\r\n");
    }
    old.put("legacy", 5, b"old-value");
    let mut c = Client::connect(proxy.port);
    assert_eq!(get(&mut c, "legacy"), hit("legacy", 5, b"old-value"));
    let copy = poll("legacy copied into new", || in_new(&new, "legacy"));
    assert_eq!((copy.flags, &copy.value[..]), (5, &b"old-value"[..]));
    assert!(
        (57..=60).contains(&copy.ttl),
        "copied with warm_ttl: {copy:?}"
    );

    // gets: copied first, tier 0's token, and cas works.
    old.put("legacy2", 6, b"x");
    c.send(b"gets legacy2\r\n");
    let (flags, cas, value) = read_cas_hit(&mut c, "legacy2");
    assert_eq!((flags, &value[..]), (6, &b"x"[..]));
    let holder = new
        .iter()
        .find(|m| meta_cas(m.port, "legacy2").is_some())
        .expect("copied into new");
    assert_eq!(meta_cas(holder.port, "legacy2"), Some(cas));
    c.roundtrip(
        &storage("cas", "legacy2", 6, 0, b"y", &cas.to_string()),
        b"STORED\r\n",
    );
    // lower_on_write = "delete" works against it too.
    assert!(!old.has("legacy2"));
}

#[test]
fn lower_tier_without_meta_commands_and_no_warm_ttl_serves_reads_but_copies_nothing() {
    let (new, old, proxy) = start_over_no_meta("");
    old.put("legacy", 5, b"old-value");
    let mut c = Client::connect(proxy.port);
    assert_eq!(get(&mut c, "legacy"), hit("legacy", 5, b"old-value"));
    let failed = poll("the failed copy to be counted", || {
        let m = proxy.metrics();
        let n = counter(
            &m,
            "memroute_fallback_copies_total",
            &[("result", "failed")],
        );
        (n >= 1.0).then_some(n)
    });
    assert_eq!(failed, 1.0);
    // No remaining TTL to go by and no warm_ttl: never copied (a copy must not outlive the
    // original, so it is not guessed).
    sleep(TIMEOUT);
    assert_eq!(in_new(&new, "legacy"), None);
    assert_eq!(get(&mut c, "legacy"), hit("legacy", 5, b"old-value"));
}

/// Two memcacheds `new` (tier 0) and one `old` (tier 1), and a memroute setup over them in
/// which `failures` timeouts of old mark it down (retried after 1 s).
fn old_marked_down_after(failures: u32) -> (Vec<Memcached>, Memcached, Builder) {
    let new: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let old = Memcached::start();
    let health = "hash = \"md5\"\ntimeout = \"500ms\"";
    let setup = Memroute::builder()
        .pool_with("new", &new, health)
        .pool_with(
            "old",
            [&old],
            &format!("{health}\nfailure_limit = {failures}\nretry_timeout = \"1s\""),
        )
        .route("", &["new", "old"]);
    (new, old, setup)
}

/// A delete old could not take (old marked down, so it is not even sent) stays a delete when old
/// comes back with its data: for this memroute (replay queue, tombstone) and for a memroute
/// started afterwards that never saw the delete (tombstone in tier 0).
#[test]
fn delete_while_old_is_marked_down_stays_deleted_when_old_comes_back() {
    let (_new, old, setup) = old_marked_down_after(1);
    let proxy = setup.start();
    tiers_support::put(old.port, "gone", 0, 0, b"old");
    old.pause();
    let mut c = Client::connect(proxy.port);
    // One timeout marks old down (failure_limit = 1); the delete is then not sent to it.
    assert_eq!(get(&mut c, "other"), b"END\r\n");
    c.roundtrip(b"delete gone\r\n", UNREACHABLE);
    let later = setup.start();
    old.resume();
    let mut d = Client::connect(later.port);
    for _ in 0..40 {
        assert_eq!(get(&mut c, "gone"), b"END\r\n", "the deleted key came back");
        assert_eq!(
            get(&mut d, "gone"),
            b"END\r\n",
            "came back in the later memroute"
        );
        sleep(Duration::from_millis(100));
    }
    // The replay queue deleted it in old once old was back.
    assert_eq!(tiers_support::meta_get(old.port, "gone"), None);
}

/// Acceptance 3 and 4 of the issue: while old is marked down, 1,000 deletes and 1,000 sets of
/// keys old holds, and the usual counter pattern (`incr`, on `NOT_FOUND` `add 1`) on 500
/// counters only old holds. No counter restarts; once old is back with its data, no deleted or
/// overwritten key reads its old value, through this memroute and through one started after the
/// deletes, also after tier 0 lost everything (flushed) once the replay has cleaned old.
#[test]
fn invalidations_while_old_is_down_win_over_its_data_everywhere() {
    let (new, old, setup) = old_marked_down_after(2);
    let setup = setup.admin();
    let proxy = setup.start();
    const N: usize = 1000;
    const COUNTERS: usize = 500;
    {
        let mut direct = Client::connect(old.port);
        let mut batch = Vec::new();
        for i in 0..N {
            batch.extend(storage("set", &format!("del:{i}"), 0, 0, b"old", "noreply"));
            batch.extend(storage("set", &format!("set:{i}"), 0, 0, b"old", "noreply"));
        }
        for i in 0..COUNTERS {
            batch.extend(storage("set", &format!("ctr:{i}"), 0, 0, b"10", "noreply"));
        }
        batch.extend_from_slice(b"mn\r\n");
        direct.roundtrip(&batch, b"MN\r\n");
    }
    old.pause();
    let mut c = Client::connect(proxy.port);
    // Two timeouts mark old down.
    for _ in 0..2 {
        assert_eq!(get(&mut c, "warmup"), b"END\r\n");
    }
    for i in 0..N {
        c.roundtrip(format!("delete del:{i}\r\n").as_bytes(), UNREACHABLE);
        c.roundtrip(
            &storage("set", &format!("set:{i}"), 0, 0, b"new", ""),
            b"STORED\r\n",
        );
    }
    let mut restarted = 0;
    for i in 0..COUNTERS {
        c.send(format!("incr ctr:{i} 1\r\n").as_bytes());
        let answer = c.read_line();
        assert_ne!(answer, b"NOT_FOUND\r\n", "incr of an existing counter");
        if answer == b"NOT_FOUND\r\n" {
            c.roundtrip(
                format!("add ctr:{i} 0 0 1\r\n1\r\n").as_bytes(),
                b"STORED\r\n",
            );
            restarted += 1;
        } else {
            assert_eq!(answer, UNREACHABLE);
            // The app's fallback is refused too: an add over a counter that may exist.
            c.roundtrip(
                format!("add ctr:{i} 0 0 1\r\n1\r\n").as_bytes(),
                UNREACHABLE,
            );
        }
    }
    assert_eq!(restarted, 0);
    let metrics = proxy.metrics();
    let tombs = counter(
        &metrics,
        "memroute_tombstones_total",
        &[("result", "written")],
    );
    assert_eq!(
        tombs,
        (2 * N) as f64,
        "one tombstone per delete and per set"
    );
    let queued = counter(
        &metrics,
        "memroute_invalidation_replays_total",
        &[("result", "queued")],
    );
    assert_eq!(queued, (2 * N) as f64);

    // A memroute that never saw any of it, then old comes back with all its data.
    let later = setup.start();
    old.resume();
    let mut d = Client::connect(later.port);
    // `del:` keys miss, `set:` keys read `set_reads(key)`, through `c`.
    let check = |c: &mut Client, who: &str, set_reads: &dyn Fn(&str) -> Vec<u8>| {
        for i in 0..N {
            let (del, set) = (format!("del:{i}"), format!("set:{i}"));
            assert_eq!(get(c, &del), b"END\r\n", "{who}: {del} came back");
            assert_eq!(get(c, &set), set_reads(&set), "{who}: {set}");
        }
    };
    let new_value = |key: &str| hit(key, 0, b"new");
    check(&mut d, "later memroute", &new_value);
    check(&mut c, "same memroute", &new_value);
    // Counters continue from old's value once old is back.
    poll("old marked up again", || {
        c.send(b"incr ctr:0 1\r\n");
        (c.read_line() == b"11\r\n").then_some(())
    });
    // The replay queue cleans old.
    poll("old cleaned by the replays", || {
        let keys: Vec<String> = (0..N)
            .flat_map(|i| [format!("del:{i}"), format!("set:{i}")])
            .collect();
        let left: usize = keys.chunks(100).map(|k| direct_hits(old.port, k)).sum();
        (left == 0).then_some(())
    });
    // Tier 0 loses everything (values and tombstones): old has nothing to give back.
    for n in &new {
        Client::connect(n.port).roundtrip(b"flush_all\r\n", b"OK\r\n");
    }
    let gone = |_: &str| b"END\r\n".to_vec();
    check(&mut c, "same", &gone);
    check(&mut d, "later", &gone);
}

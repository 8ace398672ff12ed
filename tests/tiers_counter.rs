//! The tutorial's visitor counter (DESIGN §4, acceptance story): application instances add to a
//! counter with `gets`/`cas` retry loops through memroute while the counter still lives in the
//! old pool only. Every increment must count exactly once.

mod common;
mod tiers_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Memcached, Memroute, poll, storage};
use tiers_support::{Item, Migration, get, hit, meta_get, migration};

const START: u64 = 1000;
/// Retries allowed for one increment before the test fails (a livelock would be a bug).
const MAX_RETRIES: usize = 1000;

/// One increment with a `gets`/`cas` retry loop; returns how many attempts lost a race.
fn increment(c: &mut Client, key: &str) -> usize {
    for retry in 0..MAX_RETRIES {
        c.send(format!("gets {key}\r\n").as_bytes());
        let header = String::from_utf8(c.read_line()).expect("ascii header");
        if header == "END\r\n" {
            // A read racing the first copy-up-and-delete can miss (a cache may always miss).
            // The app then creates the counter with `add`, which must answer NOT_STORED (the
            // counter exists; memroute copies up before adding), and reads again.
            c.send(&storage("add", key, 0, 0, START.to_string().as_bytes(), ""));
            assert_eq!(
                c.read_line(),
                b"NOT_STORED\r\n",
                "add re-created the counter"
            );
            continue;
        }
        let fields: Vec<&str> = header.trim_end().split(' ').collect();
        assert!(
            fields.len() == 5 && fields[0] == "VALUE",
            "not a gets answer: {header:?}"
        );
        let len: usize = fields[3].parse().expect("length");
        let mut value = c.read_exact_bytes(len + 2);
        value.truncate(len);
        c.expect(b"END\r\n");
        let n: u64 = String::from_utf8(value)
            .expect("ascii")
            .parse()
            .expect("a number");
        let next = (n + 1).to_string();
        c.send(&storage("cas", key, 0, 0, next.as_bytes(), fields[4]));
        match c.read_line().as_slice() {
            b"STORED\r\n" => return retry,
            // Someone else won (EXISTS), or the token came from before a reload moved the key
            // (NOT_FOUND): read again.
            b"EXISTS\r\n" | b"NOT_FOUND\r\n" => {}
            other => panic!("cas answered {:?}", String::from_utf8_lossy(other)),
        }
    }
    panic!("no successful cas after {MAX_RETRIES} attempts");
}

/// Runs `each` increments on every port (one thread and connection per entry) at once.
fn run_clients(ports: &[u16], each: usize) {
    let threads: Vec<_> = ports
        .iter()
        .map(|&port| {
            thread::spawn(move || {
                let mut c = Client::connect(port);
                (0..each)
                    .map(|_| increment(&mut c, "visits"))
                    .sum::<usize>()
            })
        })
        .collect();
    let retries: usize = threads.into_iter().map(|t| t.join().expect("client")).sum();
    eprintln!(
        "{} clients x {each} increments, {retries} lost races",
        ports.len()
    );
}

/// The counter is exactly `expected` through memroute and in tier 0, and gone from old.
#[track_caller]
fn assert_final(m_new: &[Memcached], old: &Memcached, proxy_port: u16, expected: u64) {
    let value = expected.to_string();
    let mut c = Client::connect(proxy_port);
    assert_eq!(get(&mut c, "visits"), hit("visits", 0, value.as_bytes()));
    let in_new: Vec<Item> = m_new
        .iter()
        .filter_map(|m| meta_get(m.port, "visits"))
        .collect();
    assert_eq!(
        in_new,
        vec![Item {
            flags: 0,
            ttl: -1,
            value: value.into_bytes()
        }]
    );
    // The first cas deleted it from old: an eviction in tier 0 cannot bring back an old count.
    assert_eq!(meta_get(old.port, "visits"), None);
}

#[test]
fn two_clients_counting_with_gets_cas_from_a_counter_only_in_old_lose_nothing() {
    let m = Migration::start();
    m.put_old("visits", 0, 0, START.to_string().as_bytes());
    run_clients(&[m.proxy.port, m.proxy.port], 500);
    assert_final(&m.new, &m.old, m.proxy.port, START + 1000);
}

#[test]
fn two_memroutes_sharing_the_pools_count_exactly() {
    let m = Migration::start();
    let second = migration(&m.new, [&m.old], "").start();
    m.put_old("visits", 0, 0, START.to_string().as_bytes());
    run_clients(&[m.proxy.port, second.port], 500);
    assert_final(&m.new, &m.old, m.proxy.port, START + 1000);
    assert_final(&m.new, &m.old, second.port, START + 1000);
}

/// The acceptance story itself: the route moves from `tiers = ["old"]` to `["new", "old"]` by a
/// config reload while two clients keep counting.
#[test]
fn counter_stays_exact_while_a_reload_adds_the_new_tier() {
    let new: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let old = Memcached::start();
    let pool = "hash = \"md5\"\ntimeout = \"500ms\"";
    let before = Memroute::builder()
        .pool_with("new", &new, pool)
        .pool_with("old", [&old], pool)
        .route("", &["old"]);
    let proxy = before.start();
    // The counter was written before the migration, through memroute, to old.
    let mut c = Client::connect(proxy.port);
    c.roundtrip(
        &storage("set", "visits", 0, 0, START.to_string().as_bytes(), ""),
        b"STORED\r\n",
    );
    assert!(meta_get(old.port, "visits").is_some());

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, done, port) = (stop.clone(), done.clone(), proxy.port);
            thread::spawn(move || {
                let mut c = Client::connect(port);
                let mut mine = 0u64;
                // At least 300 each; then until told to stop (bounded by the deadline).
                while (mine < 300 || !stop.load(Ordering::Relaxed)) && Instant::now() < deadline {
                    increment(&mut c, "visits");
                    mine += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                mine
            })
        })
        .collect();

    poll("clients to get going", || {
        (done.load(Ordering::Relaxed) >= 100).then_some(())
    });
    // The port in the file must stay the one memroute listens on (a change needs a restart).
    proxy.replace_config_with(&migration(&new, [&old], ""));
    proxy.signal("HUP");
    poll("the reload", || {
        proxy.stderr().contains("config reloaded").then_some(())
    });
    let at_reload = done.load(Ordering::Relaxed);
    poll("200 increments after the reload", || {
        (done.load(Ordering::Relaxed) >= at_reload + 200).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let total: u64 = clients.into_iter().map(|t| t.join().expect("client")).sum();
    assert!(Instant::now() < deadline, "clients hit the deadline");
    assert_final(&new, &old, proxy.port, START + total);
}

/// Waits until `arrived` (counted up by every party at every round) reaches `target`; a
/// bounded spin rather than `std::sync::Barrier`, so a client that panicked cannot leave the
/// other waiting forever.
fn rendezvous(arrived: &AtomicU64, target: u64) {
    arrived.fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrived.load(Ordering::SeqCst) < target {
        assert!(Instant::now() < deadline, "the other client stopped");
        thread::yield_now();
    }
}

/// `incr` is the other way to count: two clients racing on counters that only old holds must
/// never see `NOT_FOUND` (one of them copies the counter up, the other must count on from it).
#[test]
fn racing_incr_on_counters_only_in_old_never_answers_not_found() {
    let m = Migration::start();
    let counters = 400;
    // Both clients send each incr at the same moment, so they race on every counter.
    let arrived = Arc::new(AtomicU64::new(0));
    for k in 0..counters {
        m.put_old(&format!("ctr{k}"), 0, 0, b"100");
    }
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (port, arrived) = (m.proxy.port, arrived.clone());
            thread::spawn(move || {
                let mut c = Client::connect(port);
                let mut not_found = Vec::new();
                for k in 0..counters {
                    rendezvous(&arrived, 2 * (k as u64 + 1));
                    c.send(format!("incr ctr{k} 1\r\n").as_bytes());
                    let answer = c.read_line();
                    if answer == b"NOT_FOUND\r\n" {
                        not_found.push(k);
                    } else {
                        let n: u64 = String::from_utf8_lossy(&answer).trim().parse().unwrap();
                        assert!(n == 101 || n == 102, "ctr{k}: {n}");
                    }
                }
                not_found
            })
        })
        .collect();
    let not_found: Vec<Vec<usize>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        not_found,
        vec![Vec::<usize>::new(); 2],
        "counters answered NOT_FOUND"
    );
    let mut c = m.client();
    for k in 0..counters {
        assert_eq!(
            get(&mut c, &format!("ctr{k}")),
            hit(&format!("ctr{k}"), 0, b"102")
        );
    }
}

//! Hot reload of the real binary (DESIGN §5): under load, by every way a config file changes
//! (rename, in place, Kubernetes ConfigMap symlink swap, SIGHUP), with zero failed requests and
//! keys routed by the new config at once; ketama moves only the keys it must; a migration starts
//! by reload; a broken file keeps the old routes.

mod common;
mod config_support;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::process::scratch_dir;
use common::{Builder, Client, Memcached, Memroute, poll_for};
use config_support::{
    get, holders_of, md5_owner, one_pool, poll, running_hash, set_all, wait_for_config,
};

/// Client threads of the load test.
const THREADS: usize = 4;
/// Keys of each thread.
const KEYS_PER_THREAD: usize = 16;
/// Upper bound of one thread's operations, whatever happens.
const MAX_OPS_PER_THREAD: usize = 500_000;
/// Upper bound of the load test's running time, whatever happens.
const LOAD_DEADLINE: Duration = Duration::from_secs(40);

/// Sets the flag when dropped, so worker threads stop even if the main thread panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The load of one client thread: sets and gets on its own keys through memroute, verifying
/// every reply (a get returns exactly what this thread set last, a miss only before the first
/// set). Reconnects now and then so new connections meet new snapshots too. Returns the number
/// of operations, or the first failure.
fn worker(
    port: u16,
    id: usize,
    keys: &[String],
    stop: &AtomicBool,
    ops: &AtomicUsize,
) -> Result<usize, String> {
    let deadline = Instant::now() + LOAD_DEADLINE;
    let mut last: HashMap<&str, Vec<u8>> = HashMap::new();
    let mut c = Client::connect(port);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ id as u64;
    let mut n = 0;
    while !stop.load(Ordering::Acquire) && n < MAX_OPS_PER_THREAD && Instant::now() < deadline {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = keys[(rng % keys.len() as u64) as usize].as_str();
        if n % 300 == 299 {
            c = Client::connect(port);
        }
        if rng & 0x100 == 0 {
            let value = format!("t{id}-op{n}").into_bytes();
            let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n");
            c.send(&req);
            let line = c.read_line();
            if line != b"STORED\r\n" {
                return Err(format!(
                    "thread {id} op {n}: set {key}: {}",
                    line.escape_ascii()
                ));
            }
            last.insert(key, value);
        } else {
            let got = get(&mut c, key);
            let want = last.get(key);
            if got.as_ref() != want {
                return Err(format!(
                    "thread {id} op {n}: get {key}: got {:?}, want {:?}",
                    got.map(|v| String::from_utf8_lossy(&v).into_owned()),
                    want.map(|v| String::from_utf8_lossy(v).into_owned())
                ));
            }
        }
        n += 1;
        ops.fetch_add(1, Ordering::Relaxed);
    }
    Ok(n)
}

/// `n` memcacheds, and memroute with `pool` ([`one_pool`] or [`cold_pool`]) over the first
/// `serving`.
fn serving(n: usize, serving: usize, pool: fn(&[&Memcached]) -> Builder) -> Serving {
    let backends: Vec<Memcached> = (0..n).map(|_| Memcached::start()).collect();
    let proxy = pool(&backends.iter().take(serving).collect::<Vec<_>>()).start();
    Serving {
        backends,
        proxy,
        pool,
    }
}

/// What [`serving`] started.
struct Serving {
    backends: Vec<Memcached>,
    proxy: Memroute,
    pool: fn(&[&Memcached]) -> Builder,
}

impl Serving {
    /// Every backend, for the helpers that take `&[&Memcached]`.
    fn all(&self) -> Vec<&Memcached> {
        self.backends.iter().collect()
    }

    /// The pool's config over the first `n` backends, on this memroute's ports (what a reload
    /// to `n` servers writes).
    fn text(&self, n: usize) -> String {
        self.proxy.config_for(&(self.pool)(&self.all()[..n]))
    }
}

/// Writes `count` fresh keys through memroute and asserts each is stored on exactly the backend
/// ketama gives it among `servers` (a prefix of `all`, so indices agree). Returns how many landed
/// on each backend of `all`.
#[track_caller]
fn assert_routed_by(
    proxy: &Memroute,
    all: &[&Memcached],
    servers: usize,
    tag: &str,
    count: usize,
) -> Vec<usize> {
    let current: Vec<String> = all[..servers].iter().map(|b| b.addr()).collect();
    let items: Vec<(String, String)> = (0..count)
        .map(|i| (format!("probe:{tag}:{i}"), format!("{tag}-{i}")))
        .collect();
    let mut c = Client::connect(proxy.port);
    set_all(&mut c, &items);
    let holders = holders_of(all, &items);
    let mut per_backend = vec![0; all.len()];
    for ((key, _), held) in items.iter().zip(holders) {
        let want = md5_owner(&current, key);
        assert_eq!(
            held,
            [want],
            "{tag}: {key} should be only on backend {want} of {servers}"
        );
        per_backend[want] += 1;
    }
    per_backend
}

/// The keys of thread `id`: ones that ketama places on the same server with and without the
/// third backend, so every reply can be checked exactly while the server list changes.
fn stable_keys(id: usize, two: &[String], three: &[String]) -> Vec<String> {
    (0..)
        .map(|i| format!("w{id}:{i}"))
        .filter(|k| {
            let owner = md5_owner(three, k);
            owner != 2 && owner == md5_owner(two, k)
        })
        .take(KEYS_PER_THREAD)
        .collect()
}

/// Truncates and rewrites `path` (through any symlinks): the same inode, changed in place.
fn write_in_place(path: &Path, text: &str) {
    fs::write(path, text).expect("write config in place");
}

/// A new ConfigMap data directory `..<stamp>` holding `memroute.toml`, made current by swapping
/// the `..data` symlink atomically (create a new link, rename it over), as the kubelet does;
/// the previous data directory is then removed.
fn configmap_swap(dir: &Path, stamp: &str, text: &str, previous: Option<&Path>) {
    let data = format!("..{stamp}");
    fs::create_dir(dir.join(&data)).expect("data dir");
    fs::write(dir.join(&data).join("memroute.toml"), text).expect("write data file");
    let tmp = dir.join("..data_tmp");
    symlink(&data, &tmp).expect("new ..data link");
    fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    if let Some(previous) = previous {
        fs::remove_dir_all(previous).expect("remove old data dir");
    }
}

#[test]
fn reload_under_load_by_rename_in_place_configmap_and_sighup_fails_no_request() {
    let served = serving(3, 2, one_pool);
    let (proxy, all) = (&served.proxy, served.all());
    let two: Vec<String> = all[..2].iter().map(|b| b.addr()).collect();
    let three: Vec<String> = all.iter().map(|b| b.addr()).collect();
    let (port, admin) = (proxy.port, proxy.admin());
    let path = proxy.config_path.clone();
    let dir = path.parent().unwrap().to_path_buf();
    wait_for_config(admin, &served.text(2));
    assert_routed_by(proxy, &all, 2, "start", 60);

    let stop = AtomicBool::new(false);
    let ops = AtomicUsize::new(0);
    let outcomes: Vec<Result<usize, String>> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|id| {
                let keys = stable_keys(id, &two, &three);
                let (stop, ops) = (&stop, &ops);
                s.spawn(move || worker(port, id, &keys, stop, ops))
            })
            .collect();
        let _stop = StopOnDrop(&stop);
        let progressed = |from: usize| {
            // The load goes on through each change: at least some requests after it.
            poll("client requests after the change", || {
                (ops.load(Ordering::Relaxed) >= from + 200).then_some(())
            })
        };
        progressed(0);

        let step = |name: &str, servers: usize, change: &dyn Fn(&str)| {
            let before = ops.load(Ordering::Relaxed);
            let new = served.text(servers);
            change(&new);
            wait_for_config(admin, &new);
            let spread = assert_routed_by(proxy, &all, servers, name, 60);
            if servers == 3 {
                assert!(spread[2] > 0, "{name}: the third backend gets keys");
            }
            progressed(before);
        };

        // (a) An editor: write a temporary file, rename it over.
        step("rename", 3, &|t| proxy.replace_config(t));
        // (b) Truncate and write the same file.
        step("in-place", 2, &|t| write_in_place(&path, t));
        // (c) Kubernetes ConfigMap: memroute.toml -> ..data/memroute.toml, ..data -> ..<stamp>.
        // First the file becomes that symlink (itself a rename over the file, with a change)…
        step("to-configmap", 3, &|t| {
            configmap_swap(&dir, "2026_01_01_00_00_00.1", t, None);
            let link = dir.join("memroute.toml.link");
            symlink("..data/memroute.toml", &link).unwrap();
            fs::rename(&link, &path).unwrap();
        });
        let mut data = "..2026_01_01_00_00_00.1".to_string();
        assert!(fs::symlink_metadata(&path).unwrap().is_symlink());
        // …then updates swap `..data` only, the file names stay untouched. Twice: the chain of
        // links the watcher follows changes with each swap.
        for (stamp, servers) in [("2026_01_01_00_01_00.2", 2), ("2026_01_01_00_02_00.3", 3)] {
            let previous = dir.join(&data);
            step(&format!("configmap-{stamp}"), servers, &|t| {
                configmap_swap(&dir, stamp, t, Some(&previous));
            });
            data = format!("..{stamp}");
        }
        // (d) SIGHUP alone: change the file through a hard link elsewhere, which no watch on
        // memroute's directories can see; nothing happens until the signal.
        let elsewhere = scratch_dir("hardlink");
        let hard = elsewhere.join("config.toml");
        fs::hard_link(dir.join(&data).join("memroute.toml"), &hard).unwrap();
        let unseen = served.text(2);
        let running = running_hash(admin);
        write_in_place(&hard, &unseen);
        // Five debounce times: a watcher would have fired.
        let reloaded = poll_for(Duration::from_millis(1000), || {
            (running_hash(admin) != running).then_some(())
        });
        assert_eq!(
            reloaded, None,
            "a change no watch sees is not reloaded before SIGHUP"
        );
        step("sighup-alone", 2, &|_| proxy.signal("HUP"));
        let _ = fs::remove_dir_all(&elsewhere);
        // (d) In place through the config path, then SIGHUP.
        step("in-place+sighup", 3, &|t| {
            write_in_place(&path, t);
            proxy.signal("HUP");
        });
        drop(_stop);
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|panic| {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                    Err(format!("client thread panicked: {why:?}"))
                })
            })
            .collect()
    });
    let failures: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    let total: usize = outcomes.iter().map(|o| *o.as_ref().unwrap()).sum();
    assert!(total >= 7 * 200, "{total} requests");
    eprintln!("{total} requests through {THREADS} threads, none failed");
    let log = proxy.stderr();
    assert!(!log.contains("config rejected"), "{log}");
}

/// [`one_pool`] with `reshard_warmup = "0s"`: a changed ring is a cold event, and a removed server
/// is closed at once (no reshard window keeps the previous ring; see tests/reshard.rs for it).
fn cold_pool(backends: &[&Memcached]) -> Builder {
    Memroute::builder().admin().pool_with(
        "main",
        backends,
        "hash = \"md5\"\ntimeout = \"2s\"\nreshard_warmup = \"0s\"",
    )
}

#[test]
fn adding_a_fourth_server_moves_only_the_keys_ketama_gives_it() {
    const KEYS: usize = 2_000;
    let served = serving(4, 3, cold_pool);
    let (proxy, all) = (&served.proxy, served.all());
    let admin = proxy.admin();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("user:{i}")).collect();
    let v1: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("{k}=1"))).collect();
    let mut c = Client::connect(proxy.port);
    set_all(&mut c, &v1);
    let before: Vec<usize> = holders_of(&all, &v1)
        .into_iter()
        .zip(&keys)
        .map(|(h, k)| match h.as_slice() {
            [one] => *one,
            other => panic!("{k} on backends {other:?}"),
        })
        .collect();

    let four = served.text(4);
    proxy.replace_config(&four);
    wait_for_config(admin, &four);

    // Through memroute: a key is still there exactly when it did not move.
    let mut still_found = vec![false; KEYS];
    for (chunk, batch) in keys.chunks(100).enumerate() {
        c.send(format!("get {}\r\n", batch.join(" ")).as_bytes());
        loop {
            let line = String::from_utf8(c.read_line()).unwrap();
            if line == "END\r\n" {
                break;
            }
            let key = line.split(' ').nth(1).expect("VALUE key").to_string();
            let i: usize = key.strip_prefix("user:").unwrap().parse().unwrap();
            assert!(i / 100 == chunk, "{key} answered in the wrong batch");
            c.read_line();
            still_found[i] = true;
        }
    }
    // Where each key goes now: write a new value and find it.
    let v2: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("{k}=2"))).collect();
    set_all(&mut c, &v2);
    let after = holders_of(&all, &v2);
    let addresses: Vec<String> = all.iter().map(|b| b.addr()).collect();
    let mut moved = 0;
    for (i, key) in keys.iter().enumerate() {
        let [now] = after[i][..] else {
            panic!("{key} on backends {:?}", after[i]);
        };
        assert!(
            now == before[i] || now == 3,
            "{key} moved from backend {} to {now}, not to the new server",
            before[i]
        );
        assert_eq!(
            still_found[i],
            now == before[i],
            "{key}: found through memroute exactly when it stayed"
        );
        // Exactly the keys whose owner changed, by ketama over the four servers.
        assert_eq!(now, md5_owner(&addresses, key), "{key}");
        moved += usize::from(now == 3);
    }
    let fraction = moved as f64 / KEYS as f64;
    assert!(
        (0.15..=0.35).contains(&fraction),
        "{moved} of {KEYS} keys moved ({fraction:.3})"
    );
}

#[test]
fn starting_a_migration_by_reload_finds_old_keys_and_copies_them_up() {
    let (old, new) = (Memcached::start(), Memcached::start());
    let config = |tiers: &[&str]| {
        Memroute::builder()
            .admin()
            .pool("old", [&old])
            .pool("new", [&new])
            .route("", tiers)
    };
    let proxy = config(&["old"]).start();
    let admin = proxy.admin();
    let mut c = Client::connect(proxy.port);
    c.set("counter:home", b"41");
    c.set("page:about", b"<html>about</html>");
    // Only in old.
    let mut direct_new = Client::connect(new.port);
    direct_new.roundtrip(b"get counter:home page:about\r\n", b"END\r\n");

    let migrating = proxy.config_for(&config(&["new", "old"]));
    proxy.replace_config(&migrating);
    wait_for_config(admin, &migrating);

    // Still found, now through the fallback tier…
    assert_eq!(
        get(&mut c, "page:about").as_deref(),
        Some(&b"<html>about</html>"[..])
    );
    // …and copied up into new in the background.
    poll("page:about to be copied into new", || {
        get(&mut direct_new, "page:about").filter(|v| v == b"<html>about</html>")
    });
    // A counter that exists only in old keeps counting.
    c.roundtrip(b"incr counter:home 1\r\n", b"42\r\n");
    assert_eq!(
        get(&mut direct_new, "counter:home").as_deref(),
        Some(&b"42"[..])
    );
    // A write after the reload goes to new; the old copy is deleted (lower_on_write = delete).
    c.set("page:about", b"v2");
    assert_eq!(
        get(&mut direct_new, "page:about").as_deref(),
        Some(&b"v2"[..])
    );
    let mut direct_old = Client::connect(old.port);
    poll("the old copy to be deleted", || {
        get(&mut direct_old, "page:about").is_none().then_some(())
    });
}

#[test]
fn a_broken_file_keeps_the_old_routes_and_a_fixed_one_is_picked_up() {
    let served = serving(3, 2, one_pool);
    let (proxy, all) = (&served.proxy, served.all());
    let admin = proxy.admin();
    let good = served.text(2);
    wait_for_config(admin, &good);
    let mut c = Client::connect(proxy.port);
    c.set("before", b"1");
    let failures = || proxy.sample("memroute_config_reloads_total", &[("result", "failure")]);
    let initial_failures = failures().unwrap_or(0.0);

    // Three servers (so applying it would show), but two mistakes: a misspelt key and a
    // duplicate route. Positions: `timout` at 10:1, the second prefix at 17:10.
    let broken = served
        .text(3)
        .replace("timeout = \"2s\"", "timout = \"2s\"")
        + "\n[[routes]]\nprefix = \"\"\ntiers = [\"main\"]\n";
    assert_eq!(broken.lines().nth(9), Some("timout = \"2s\""));
    assert_eq!(broken.lines().nth(16), Some("prefix = \"\""));
    proxy.replace_config(&broken);
    let file = proxy.config_path.display().to_string();
    let rejected = poll("the rejection to be logged", || {
        let log = proxy.stderr();
        log.contains("config rejected;").then_some(log)
    });
    assert!(
        rejected.contains(&format!("{file}:10:1: unknown key `timout`")),
        "{rejected}"
    );
    assert!(
        rejected.contains(&format!("{file}:17:10: duplicate route prefix")),
        "{rejected}"
    );
    poll("the failure to be counted", || {
        (failures() == Some(initial_failures + 1.0)).then_some(())
    });
    assert_eq!(
        proxy.sample("memroute_config_last_reload_successful", &[]),
        Some(0.0)
    );
    // The old config keeps serving, with its routes.
    assert_eq!(running_hash(admin), memroute::config::reload::digest(&good));
    assert_eq!(get(&mut c, "before").as_deref(), Some(&b"1"[..]));
    let spread = assert_routed_by(proxy, &all, 2, "after-broken", 60);
    assert_eq!(spread[2], 0);

    // A file cut short mid-write is just as harmless.
    let cut = &good[..good.find("[[routes]]").unwrap() + 5];
    proxy.replace_config(cut);
    poll("the second failure to be counted", || {
        (failures() == Some(initial_failures + 2.0)).then_some(())
    });
    assert_eq!(get(&mut c, "before").as_deref(), Some(&b"1"[..]));

    // Fixed: picked up, routes by it, and the gauge says so.
    let fixed = served.text(3);
    proxy.replace_config(&fixed);
    wait_for_config(admin, &fixed);
    let spread = assert_routed_by(proxy, &all, 3, "fixed", 60);
    assert!(spread[2] > 0);
    assert_eq!(
        proxy.sample("memroute_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(failures(), Some(initial_failures + 2.0));
    assert!(
        proxy
            .sample("memroute_config_reloads_total", &[("result", "success")])
            .unwrap()
            >= 1.0
    );
}

/// [`one_pool`] over `backends` on `proxy`'s ports, told apart by its `timeout` of `n` seconds.
fn version(proxy: &Memroute, backends: &[&Memcached], n: u32) -> String {
    proxy
        .config_for(&one_pool(backends))
        .replace("timeout = \"2s\"", &format!("timeout = \"{n}s\""))
}

#[test]
fn edits_through_a_symlink_into_another_directory_are_picked_up() {
    // A deploy tool's layout: memroute.toml -> /elsewhere/current/memroute.toml,
    // current -> releases/N. Both an edit of the file and a swap of `current` change what
    // memroute reads, though neither touches memroute's own directory.
    let backend = Memcached::start();
    let proxy = one_pool(&[&backend]).start();
    let admin = proxy.admin();
    let v = |n| version(&proxy, &[&backend], n);
    let elsewhere = scratch_dir("deploy");
    let release = |n: u32| elsewhere.join(format!("releases/{n}"));
    fs::create_dir_all(release(1)).unwrap();
    fs::write(release(1).join("memroute.toml"), v(3)).unwrap();
    symlink("releases/1", elsewhere.join("current")).unwrap();
    let link = proxy.config_path.with_extension("link");
    symlink(elsewhere.join("current/memroute.toml"), &link).unwrap();
    fs::rename(&link, &proxy.config_path).unwrap();
    wait_for_config(admin, &v(3));

    // The file, edited in place where it lives.
    write_in_place(&release(1).join("memroute.toml"), &v(4));
    wait_for_config(admin, &v(4));
    // A new release: `current` swapped atomically.
    fs::create_dir_all(release(2)).unwrap();
    fs::write(release(2).join("memroute.toml"), v(5)).unwrap();
    symlink("releases/2", elsewhere.join("current.tmp")).unwrap();
    fs::rename(elsewhere.join("current.tmp"), elsewhere.join("current")).unwrap();
    wait_for_config(admin, &v(5));
    // The watch follows the new target…
    write_in_place(&release(2).join("memroute.toml"), &v(6));
    wait_for_config(admin, &v(6));
    // …and the old release no longer matters.
    write_in_place(&release(1).join("memroute.toml"), &v(7));
    let six = memroute::config::reload::digest(&v(6));
    let reloaded = poll_for(Duration::from_millis(1000), || {
        (running_hash(admin) != six).then_some(())
    });
    assert_eq!(reloaded, None, "the old release is no longer watched");
    let _ = fs::remove_dir_all(&elsewhere);
}

#[test]
fn reverting_a_rejected_file_to_the_running_one_clears_the_failure() {
    let backend = Memcached::start();
    let proxy = one_pool(&[&backend]).start();
    let admin = proxy.admin();
    let good = version(&proxy, &[&backend], 2);
    wait_for_config(admin, &good);
    let ok = || proxy.sample("memroute_config_last_reload_successful", &[]);
    assert_eq!(ok(), Some(1.0));

    proxy.replace_config(&good.replace("hash", "hsah"));
    poll("the broken file to be rejected", || {
        (ok() == Some(0.0)).then_some(())
    });
    // The operator reverts the file: what is on disk is again exactly what runs.
    let reverted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    proxy.replace_config(&good);
    poll("the failure to clear after the revert", || {
        (ok() == Some(1.0)).then_some(())
    });
    let success = proxy
        .sample("memroute_config_last_reload_success_timestamp_seconds", &[])
        .unwrap();
    assert!(
        success >= reverted_at,
        "the last good reload is the revert ({success} < {reverted_at}), so a \
         failed-since-last-success alert stops"
    );
    assert_eq!(running_hash(admin), memroute::config::reload::digest(&good));
}

#[test]
fn pipelined_set_then_get_stays_in_order_across_reloads_that_rebuild_servers() {
    // A changed `timeout` gives every server new backend connections. A client that pipelines
    // `set k` and `get k` must still read its own write, as on one memcached connection.
    let served = serving(2, 2, one_pool);
    let (proxy, all) = (&served.proxy, served.all());
    let admin = proxy.admin();
    let port = proxy.port;
    let stop = AtomicBool::new(false);
    let stale: Vec<String> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || {
                    let mut c = Client::connect(port);
                    let mut stale = Vec::new();
                    let deadline = Instant::now() + LOAD_DEADLINE;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                        let mut req = Vec::new();
                        let mut want = Vec::new();
                        for i in 0..100 {
                            let key = format!("pipe{t}:{}", i % 5);
                            n += 1;
                            let v = format!("v{n}");
                            req.extend(
                                format!("set {key} 0 0 {}\r\n{v}\r\nget {key}\r\n", v.len())
                                    .bytes(),
                            );
                            want.push((key, v));
                        }
                        c.send(&req);
                        for (key, v) in want {
                            c.expect(b"STORED\r\n");
                            let reply = [c.read_line(), c.read_line(), c.read_line()].concat();
                            let mut hit = common::value_reply(&key, 0, v.as_bytes());
                            hit.extend_from_slice(b"END\r\n");
                            if reply != hit {
                                let got = String::from_utf8_lossy(&reply).into_owned();
                                stale.push(format!("{key}: want {v}, got {got:?}"));
                            }
                        }
                    }
                    stale
                })
            })
            .collect();
        let _stop = StopOnDrop(&stop);
        for i in 0..20 {
            let text = version(proxy, &all, 3 + i % 2);
            proxy.replace_config(&text);
            wait_for_config(admin, &text);
        }
        drop(_stop);
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("client thread"))
            .collect()
    });
    assert!(stale.is_empty(), "stale reads: {stale:#?}");
}

/// `STAT name` of a memcached, asked on a new connection (which counts in the connection stats).
fn stat(backend: &Memcached, name: &str) -> u64 {
    Client::connect(backend.port).stat(name)
}

#[test]
fn a_reload_keeps_connections_to_kept_servers_and_closes_removed_ones() {
    let served = serving(3, 3, cold_pool);
    let (proxy, all) = (&served.proxy, served.all());
    let admin = proxy.admin();
    // Traffic to every server, so memroute has connected to each.
    let mut c = Client::connect(proxy.port);
    let spread = assert_routed_by(proxy, &all, 3, "warm-up", 60);
    assert!(spread.iter().all(|&n| n > 0), "{spread:?}");
    let accepted = |b: &Memcached| stat(b, "total_connections");
    let before: Vec<u64> = all.iter().map(|b| accepted(b)).collect();

    let two = served.text(2);
    proxy.replace_config(&two);
    wait_for_config(admin, &two);
    // The removed server: memroute's connections to it close (only ours is left).
    poll("the removed server's connections to close", || {
        (stat(all[2], "curr_connections") == 1).then_some(())
    });
    // The kept servers: served on the same connections, none opened since (each `stat` call
    // is one accepted connection).
    assert_routed_by(proxy, &all, 2, "after-reload", 60);
    c.set("still", b"here");
    for (i, b) in all[..2].iter().enumerate() {
        assert_eq!(
            accepted(b),
            before[i] + 2,
            "backend {i}: no new connection from memroute"
        );
    }
}

#[test]
fn sighup_with_an_unchanged_file_says_so() {
    let backend = Memcached::start();
    let proxy = one_pool(&[&backend]).start();
    let before = proxy.sample("memroute_config_reloads_total", &[("result", "success")]);
    proxy.signal("HUP");
    poll("memroute to log the SIGHUP", || {
        proxy
            .stderr()
            .contains("SIGHUP: config unchanged, nothing to reload")
            .then_some(())
    });
    // Nothing was reloaded.
    let after = proxy.sample("memroute_config_reloads_total", &[("result", "success")]);
    assert_eq!(before, after);
}

#[test]
fn a_server_removed_and_added_back_while_a_request_holds_it_keeps_its_series() {
    let (a, b) = (Memcached::start(), Memcached::start());
    // A long timeout: a request to a paused `b` stays in flight across two reloads.
    let long = |m: &Memcached| {
        Memroute::builder().admin().pool_with(
            "main",
            [m],
            "hash = \"md5\"\ntimeout = \"20s\"\nreshard_warmup = \"0s\"",
        )
    };
    let proxy = long(&b).start();
    let admin = proxy.admin();
    let with_b = proxy.config_for(&long(&b));
    let with_a = with_b.replace(&b.addr(), &a.addr());
    let series = [("server", b.addr())];
    let series: Vec<(&str, &str)> = series.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let requests = || proxy.sample("memroute_backend_requests_total", &series);

    b.pause();
    let mut held = Client::connect(proxy.port);
    held.send(b"get held\r\n");
    poll("the held get to reach b's connection", || {
        (requests() == Some(1.0)).then_some(())
    });
    proxy.replace_config(&with_a);
    wait_for_config(admin, &with_a);
    assert_eq!(requests(), None, "b's series go when b leaves the config");
    proxy.replace_config(&with_b);
    wait_for_config(admin, &with_b);
    b.resume();
    held.expect(b"END\r\n");

    let mut c = Client::connect(proxy.port);
    c.roundtrip(b"get fresh\r\n", b"END\r\n");
    assert_eq!(
        requests(),
        Some(1.0),
        "b is back in the config: its series must exist and count the new request"
    );
}
